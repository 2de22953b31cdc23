"""Malformed messages of every kind, on every topic the worker reads, go to the dead-letter
topic with their original bytes and a reason, and the worker goes on: a valid event sent
after all of them is applied. The worker is one of its own, so every count is exact."""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamrec.storage.state_store import RedisStore
from tests.api.conftest import wait_for
from tests.factories import event


def _json(document) -> bytes:
    return orjson.dumps(document)


def _messages(run: str) -> list[tuple[str, str, bytes | None, bytes | None, str]]:
    """(case, topic kind, key, value, what the reason must mention)."""
    user = f"{run}-ann"
    key = user.encode()
    huge = _json(event(user, context={"note": "x" * 900_000}))
    return [
        ("tombstone", "events", key, None, "empty message"),
        ("empty bytes", "events", key, b"", "Invalid JSON"),
        ("invalid UTF-8", "events", key,
         b'{"user_id": "\xff\xfe", "item_id": "tea", "event_type": "view"}', "Invalid JSON"),
        ("JSON array", "events", key, _json([event(user)]), "object"),
        ("JSON number", "events", key, b"42", "object"),
        ("JSON string", "events", key, b'"view"', "object"),
        ("truncated JSON", "events", key, _json(event(user))[:-7], "Invalid JSON"),
        ("key not the user_id", "events", b"someone-else", _json(event(user)), "key"),
        ("unknown event type", "events", key, _json(event(user, kind="teleport")), "event_type"),
        ("huge", "events", key, huge, "context"),
        ("NaN literal", "events", key, _json(event(user))[:-1] + b', "value": NaN}', "value"),
        ("missing field", "events", key, _json({"user_id": user, "item_id": "tea"}),
         "event_type"),
        ("control character in an id", "events", key, _json(event(user, item="tea\x00")),
         "item_id"),
        ("item garbage", "items", b"tea", b"\x00\x01garbage", "Invalid JSON"),
        ("item unknown field", "items", b"tea", _json({"item_id": "tea", "colour": "green"}),
         "colour"),
        ("item tombstone keyed by no item_id", "items", b"tea\x00", None, "key: item_id"),
        ("user not an object", "users", b"ann", b"[]", "object"),
        ("impression garbage", "impressions", key, b"\xff not json", "impression"),
        ("impression missing fields", "impressions", key, _json({"user_id": user}),
         "impression"),
    ]


async def _produce(bootstrap: str, messages) -> list[str]:
    """Send each (topic, key, value); returns each record's ``topic/partition/offset``."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                max_request_size=2_000_000)
    await producer.start()
    try:
        sent = []
        for topic, key, value in messages:
            meta = await producer.send_and_wait(topic, value, key=key)
            sent.append(f"{meta.topic}/{meta.partition}/{meta.offset}")
        return sent
    finally:
        await producer.stop()


async def _dead_letters(bootstrap: str, topic: str, count: int) -> dict[str, tuple]:
    """The first ``count`` dead letters by their source: (key, value, reason)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", fetch_max_bytes=4_000_000,
                                max_partition_fetch_bytes=2_000_000)
    await consumer.start()
    found: dict[str, tuple] = {}
    try:
        deadline = time.monotonic() + 60
        while len(found) < count and time.monotonic() < deadline:
            for rows in (await consumer.getmany(timeout_ms=1000)).values():
                for row in rows:
                    headers = {name: value.decode() for name, value in row.headers}
                    found[headers["streamrec-source"]] = (
                        row.key, row.value, headers["streamrec-reason"])
    finally:
        await consumer.stop()
    return found


def test_every_kind_of_malformed_message_is_dead_lettered_and_the_worker_goes_on(
        services, isolated_worker):
    run = uuid.uuid4().hex[:8]
    cases = _messages(run)
    topics = {kind: isolated_worker[f"{kind}_topic"]
              for kind in ("events", "items", "users", "impressions")}
    sources = asyncio.run(_produce(services["bootstrap"], [
        (topics[kind], key, value) for _, kind, key, value, _ in cases]))
    valid = event(f"{run}-bob", f"{run}-tea")
    asyncio.run(_produce(services["bootstrap"], [
        (topics["events"], valid["user_id"].encode(), _json(valid))]))

    store = RedisStore(redis.Redis.from_url(services["redis_url"]),
                       isolated_worker["redis_prefix"])
    deadline = time.monotonic() + 60
    while store.events_applied() < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store.events_applied() == 1  # the valid event, and nothing malformed
    assert [item for item, _ in store.history(f"{run}-bob", 10)] == [f"{run}-tea"]
    assert store.history(f"{run}-ann", 10) == []
    assert store.get_item("tea") is None

    dead = asyncio.run(_dead_letters(services["bootstrap"],
                                     isolated_worker["dead_letter_topic"], len(cases)))
    assert set(dead) == set(sources)
    for (case, _, key, value, mention), source in zip(cases, sources, strict=True):
        dead_key, dead_value, reason = dead[source]
        assert (dead_key, dead_value) == (key, value), case  # the original bytes
        assert mention in reason, (case, reason)


def test_outside_data_cannot_forge_lines_in_the_worker_log_or_the_reason(
        services, isolated_worker):
    """A context key holding a newline, a fake log line and ANSI escapes reaches the log
    and the dead letter's reason (which quotes the key) as one escaped line."""
    run = uuid.uuid4().hex[:8]
    forged = "[2026-01-01 00:00:00,000] [1] [CRITICAL] [^Worker]: FORGED"
    key = f"x\n{forged}\x1b[2K\x1b[31m\r"
    user = f"{run}-eve"
    sources = asyncio.run(_produce(services["bootstrap"], [
        (isolated_worker["events_topic"], user.encode(),
         _json(event(user, context={key: "v"})))]))
    dead = asyncio.run(_dead_letters(services["bootstrap"],
                                     isolated_worker["dead_letter_topic"], 1))
    reason = dead[sources[0]][2]
    assert forged in reason and "\\n" in reason and "\\x1b[31m" in reason
    assert not any(character in reason for character in "\n\r\x1b")

    log = services["dir"] / f"worker-{isolated_worker['worker_id']}.log"
    assert wait_for(lambda: forged in log.read_text(errors="replace"), timeout=30)
    text = log.read_text(errors="replace")
    assert "\x1b" not in text
    assert not any(line.startswith(forged) for line in text.splitlines())
    (logged,) = [line for line in text.splitlines() if forged in line]
    assert "dead-lettered" in logged and "\\x1b[2K" in logged
