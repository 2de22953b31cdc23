"""Kafka restarts under the API: POST /events answers 503 with Retry-After while the broker
is away (never 202 for an event it did not hand over) and 202 again once it is back,
without restarting the API."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.main import create_app
from streamrec.local.services import LocalKafka
from streamrec.settings import Settings
from tests.api.conftest import wait_for


def test_post_events_recovers_after_a_broker_restart(services, tmp_path):
    kafka = LocalKafka(tmp_path / "kafka").start()
    try:
        settings = Settings(kafka_bootstrap=kafka.bootstrap, redis_url=services["redis_url"],
                            produce_timeout_seconds=2.0)
        event = {"user_id": "ann", "item_id": "tea", "event_type": "view"}
        with TestClient(create_app(settings)) as client:
            assert wait_for(lambda: client.post("/events", json=event).status_code == 202,
                            timeout=60)
            kafka.stop()
            response = client.post("/events", json=event)
            assert response.status_code == 503
            assert response.headers["retry-after"] == str(settings.retry_after_seconds)
            kafka.start()
            assert wait_for(lambda: client.post("/events", json=event).status_code == 202,
                            timeout=90, every=0.5)
    finally:
        kafka.stop()
