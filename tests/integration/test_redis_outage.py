"""Redis goes away under the API: lists still come back (marked degraded) from what the
process last read, and normal answers resume by themselves when Redis returns."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from api.main import create_app
from recommender.store import StateUpdate
from streamrec.local.services import LocalRedis
from streamrec.settings import Settings
from streamrec.storage.state_store import RedisStore
from tests.api.conftest import wait_for


def test_api_serves_degraded_lists_while_redis_is_down(services, tmp_path):
    own = LocalRedis(tmp_path / "redis").start()
    try:
        store = RedisStore.from_url(own.url)
        store.apply(StateUpdate(history_length=10, max_neighbours=10,
                                popularity={"tea": 3.0, "cup": 2.0},
                                reference=time.time(), half_life=86400.0))
        settings = Settings(kafka_bootstrap=services["bootstrap"], redis_url=own.url)
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            def fresh_list() -> list[str]:
                response = client.get("/recommendations", params={"user_id": "ann"})
                return [item["item_id"] for item in response.json()["items"]]

            assert wait_for(lambda: fresh_list() == ["tea", "cup"])
            time.sleep(1.5)  # the last-known list is refreshed every second
            own.stop()
            response = client.get("/recommendations", params={"user_id": "ann"})
            assert response.status_code == 200
            body = response.json()
            assert body["degraded"] is True and body["model"] == "popular"
            assert [item["item_id"] for item in body["items"]] == ["tea", "cup"]
            assert client.get("/popular").json()["degraded"] is True
            assert client.get("/popular", params={"category": "x"}).status_code == 503
            assert client.get("/readyz").status_code == 503

            own.start()
            assert wait_for(lambda: client.get("/recommendations", params={
                "user_id": "ann"}).json()["degraded"] is False, timeout=30)
    finally:
        own.stop()
