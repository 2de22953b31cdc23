"""Events through a raw Kafka producer reach Redis through the real worker; malformed
messages land in the dead-letter topic with a reason while valid ones are applied."""

from __future__ import annotations

import asyncio
import time

import orjson
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from recommender.engine import Engine
from streamrec.settings import Settings
from streamrec.storage.state_store import RedisStore


async def _produce(bootstrap: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait("events", value, key=key)
    finally:
        await producer.stop()


async def _dead_letters(bootstrap: str, expected: set[bytes]) -> list:
    """The dead-letter records whose values are in ``expected`` (other tests add more)."""
    consumer = AIOKafkaConsumer("events.dlq", bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    records = []
    try:
        deadline = time.monotonic() + 60
        while len(records) < len(expected) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            for rows in batch.values():
                records.extend(row for row in rows if row.value in expected)
    finally:
        await consumer.stop()
    return records


def _event(user: str, item: str, kind: str = "view") -> tuple[bytes, bytes]:
    return user.encode(), orjson.dumps({"user_id": user, "item_id": item, "event_type": kind})


def test_events_reach_recommendations_and_bad_messages_reach_the_dlq(services, worker):
    store = RedisStore(redis.Redis.from_url(services["redis_url"]))
    before = store.events_applied()  # the session's Redis is shared with other tests
    valid = [_event("alice", "tea"), _event("alice", "cup"), _event("bob", "tea")]
    malformed = [(b"x", b"not json"), (b"carol", b'{"user_id": "carol", "item_id": "tea"}'),
                 (b"dan", b'{"user_id": "dan", "item_id": "tea", "event_type": "teleport"}')]
    asyncio.run(_produce(services["bootstrap"], [valid[0], malformed[0], valid[1],
                                                 malformed[1], malformed[2], valid[2]]))
    deadline = time.monotonic() + 60
    while store.events_applied() < before + 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert store.events_applied() == before + 3
    engine = Engine(store, Settings().engine_config())
    result = engine.recommend("bob", 5, now=time.time())
    assert result.model == "cooccurrence"
    assert [item for item, _ in result.items][0] == "cup"
    assert [item for item, _ in engine.similar("tea", 5)] == ["cup"]

    dead = asyncio.run(_dead_letters(services["bootstrap"], {value for _, value in malformed}))
    assert sorted(record.value for record in dead) == sorted(value for _, value in malformed)
    reasons = [dict(record.headers)["streamrec-reason"].decode() for record in dead]
    assert any("Invalid JSON" in reason for reason in reasons)
    assert any("event_type" in reason for reason in reasons)
