"""Online MF through the real stream: a user's factor vector is written to Redis by the
worker, and their ``mf`` list moves toward what they just touched."""

from __future__ import annotations

import asyncio
import time
import uuid

import numpy as np
import redis

from recommender.engine import Engine
from streamrec.settings import Settings
from streamrec.storage.state_store import RedisStore
from tests.factories import produce_events


def _clustered_events(run: str, rounds: int, seed: int = 1) -> list[dict]:
    """Forty users, each touching only the items of their own cluster (a or b)."""
    rng = np.random.default_rng(seed)
    events, now = [], time.time() - 3600
    for _ in range(rounds):
        for user in range(40):
            cluster = "ab"[user % 2]
            item = f"{run}-{cluster}{int(rng.integers(20))}"
            now += 0.01
            events.append({"user_id": f"{run}-u{user}", "item_id": item,
                           "event_type": "view", "timestamp": now})
    return events


def _wait_applied(store: RedisStore, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while store.events_applied() < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.events_applied() >= count


def test_mf_state_moves_toward_what_a_user_just_touched(services, isolated_worker):
    run = uuid.uuid4().hex[:8]
    topic = isolated_worker["events_topic"]
    store = RedisStore(redis.Redis.from_url(services["redis_url"]),
                       isolated_worker["redis_prefix"])
    background = _clustered_events(run, rounds=150)
    asyncio.run(produce_events(services["bootstrap"], topic, background))
    _wait_applied(store, len(background))
    engine = Engine(store, Settings().engine_config())

    vector = store.user_factors([f"{run}-u0"])[f"{run}-u0"]
    assert vector.dtype == np.float32 and vector[-1] == 1.0
    items = store.item_factors([f"{run}-a0", f"{run}-b0"])
    assert set(items) == {f"{run}-a0", f"{run}-b0"}

    # A newcomer views five items of cluster b; their mf list must turn to cluster b.
    newcomer = f"{run}-new"
    touched = [f"{run}-b{i}" for i in range(5)]
    events = [{"user_id": newcomer, "item_id": item, "event_type": "click",
               "timestamp": time.time()} for item in touched]
    sent = time.monotonic()
    asyncio.run(produce_events(services["bootstrap"], topic, events))
    deadline = sent + 30
    share = 0.0
    while time.monotonic() < deadline:
        engine.refresh()
        result = engine.recommend(newcomer, 10, now=time.time(), model="mf")
        ranked = [item for item, _ in result.items]
        # The five clicks may be applied over more than one batch: judge the list once
        # the history holds them all (before that, a touched item not yet applied may
        # rightly be recommended).
        if result.model == "mf" and set(touched) <= {
                item for item, _ in engine.user_history(newcomer)}:
            share = sum(item.startswith(f"{run}-b") for item in ranked) / len(ranked)
            if share >= 0.8:
                break
        time.sleep(0.02)
    elapsed = time.monotonic() - sent
    print(f"mf list turned to the touched cluster {elapsed * 1000:.0f} ms after producing")
    assert result.model == "mf"
    assert not set(touched) & {item for item, _ in result.items}, "seen items come back"
    assert share >= 0.8, result.items
