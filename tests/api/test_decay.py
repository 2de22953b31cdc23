"""Decayed state served today by the real worker and API with a one-day half-life: before
landmarks, scores this far (23 months of half-lives) past the fixed 2025-01-01 epoch
overflowed in the cosine, every similarity was 0.0 and lists came back in id order."""

from __future__ import annotations

import math
import time

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from streamrec.settings import Settings
from streamrec.storage.state_store import RedisStore
from tests.api.conftest import wait_for
from tests.conftest import own_worker
from tests.factories import event


def test_similar_items_score_above_zero_today_with_a_one_day_half_life(services, worker_env,
                                                                       run):
    with own_worker(services, worker_env, decay_half_life_seconds="86400") as names:
        settings = Settings(kafka_bootstrap=services["bootstrap"],
                            redis_url=services["redis_url"], **names)
        assert settings.decay_half_life_seconds == 86400
        x, a, b, c = (f"{run}-{name}" for name in "xabc")
        # Three users touch x then c, two of them b, one a: the cosines with x are
        # 3 / sqrt(3 * 3), 2 / sqrt(3 * 2) and 1 / sqrt(3 * 1): c, b, a (not id order).
        touches = {"u1": [x, c, b, a], "u2": [x, c, b], "u3": [x, c]}
        sent = [event(f"{run}-{user}", item) for user, items in touches.items()
                for item in items]  # no timestamp: the API stamps them now
        with TestClient(create_app(settings)) as api:
            assert wait_for(lambda: api.get("/readyz").status_code == 200, timeout=60)
            assert api.post("/events", json=sent).status_code == 202
            store = RedisStore.from_url(settings.redis_url, settings.redis_prefix)
            assert wait_for(lambda: store.events_applied() >= len(sent), timeout=90), \
                "the worker applied nothing: see its log in the services directory"
            similar = api.get(f"/items/{x}/similar", params={"k": 5}).json()["items"]
            popular = api.get("/popular", params={"k": 5}).json()["items"]
            store.client.close()
    # Today is more than 512 half-lives past the old epoch: the product of two sums of the
    # old representation (2**512 each) was past the largest double.
    assert (time.time() - 1_735_689_600) / 86400 > 512
    assert [item["item_id"] for item in similar] == [c, b, a]
    for item, expected in zip(similar, [1.0, 2 / math.sqrt(6), 1 / math.sqrt(3)],
                              strict=True):
        assert item["score"] == pytest.approx(expected, rel=1e-3)
    assert {item["item_id"] for item in popular[:2]} == {x, c}
    assert popular[0]["score"] == pytest.approx(3.0, rel=1e-3)
