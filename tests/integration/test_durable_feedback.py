"""Feedback that arrives before its impression waits in Redis, written with its batch: a
worker killed with SIGKILL while two clicks wait loses neither. After the restart one is
credited once when its impression arrives, the other counts as ``no_impression`` once when
its grace ends."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import orjson
import pytest
import redis
from aiokafka import AIOKafkaProducer

from streamrec.kafka import ensure_topics
from streamrec.settings import Settings
from streamrec.storage import keys
from streamrec.storage.feedback_store import RedisFeedback
from streamrec.storage.state_store import RedisStore
from tests.integration.test_crash_recovery import _names, _spawn
from tests.integration.test_idempotent_ingest import _wait

pytestmark = pytest.mark.integration

GRACE = 8.0


async def _send(bootstrap: str, topic: str, messages: list[dict]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for message in messages:
            await producer.send_and_wait(topic, orjson.dumps(message),
                                         key=message["user_id"].encode())
    finally:
        await producer.stop()


def test_feedback_waiting_for_its_impression_survives_a_kill(services, worker_env, tmp_path):
    names = _names(f"fb{uuid.uuid4().hex[:6]}")
    asyncio.run(ensure_topics(Settings(kafka_bootstrap=services["bootstrap"], **names)))
    env = dict(worker_env, STREAMREC_SESSION_TIMEOUT_SECONDS="6",
               STREAMREC_ATTRIBUTION_GRACE_SECONDS=str(GRACE),
               **{f"STREAMREC_{k.upper()}": v for k, v in names.items()})
    client = redis.Redis.from_url(services["redis_url"])
    store = RedisStore(client, names["redis_prefix"])
    feedback = RedisFeedback(client, names["redis_prefix"])
    feedback.put_placement({"name": "home", "variants": [{"name": "A"}]}, "test", time.time())
    shown_at = time.time() - 5
    clicks = [{"event_id": f"c{n}", "user_id": "ann", "item_id": "tea", "event_type": "click",
               "recommendation_id": rid} for n, rid in enumerate(["r1", "r2"])]
    waiting = keys.key(names["redis_prefix"], keys.FEEDBACK_WAITING)
    with open(tmp_path / "worker.log", "wb") as log:
        victim = _spawn(env, log)
        asyncio.run(_send(services["bootstrap"], names["events_topic"], clicks))
        _wait(lambda: store.events_applied() >= 2, victim)
        assert client.zcard(waiting) == 2  # written with the batch: nothing in memory only
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        # r1's impression arrives while no worker runs; r2's never does.
        asyncio.run(_send(services["bootstrap"], names["impressions_topic"], [{
            "recommendation_id": "r1", "user_id": "ann", "placement": "home", "variant": "A",
            "model": "hybrid", "items": ["tea"], "timestamp": shown_at}]))
        survivor = _spawn(env, log)
        try:
            _wait(lambda: feedback.outcomes().get("no_impression") == 1
                  and feedback.outcomes().get("credited") == 1, survivor, timeout=120)
            time.sleep(2)  # anything settled twice would show now
        finally:
            survivor.terminate()
            survivor.wait(30)
    assert feedback.outcomes() == {"credited": 1, "no_impression": 1}
    assert feedback.variant_counters("home")["A"]["click"] == 1
    assert client.zcard(waiting) == 0
    client.close()
