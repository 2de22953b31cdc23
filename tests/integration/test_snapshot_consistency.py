"""A snapshot is one point in time: saved while a real worker applies a stream of events,
then restored, it holds exactly the events its offsets claim (real Kafka and Redis)."""

from __future__ import annotations

import asyncio
import threading

import orjson
import redis
from aiokafka import AIOKafkaProducer

from streamrec.storage.snapshots import restore_snapshot, save_snapshot
from streamrec.storage.state_store import RedisStore
from tests.api.conftest import wait_for
from tests.factories import event

USERS = 3000  # enough keys that a copy takes a while, so the worker writes during it


async def _stream(bootstrap: str, topic: str, run: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for n in range(count):
            user = f"{run}-u{n % USERS}"
            await producer.send(topic, orjson.dumps(event(user, f"{run}-i{n % 400}")),
                                key=user.encode())
            if n % 500 == 0:
                await asyncio.sleep(0.05)  # a steady stream over the saves, not one burst
        await producer.flush()
    finally:
        await producer.stop()


def test_a_snapshot_saved_under_load_holds_what_its_offsets_claim(isolated_worker, services,
                                                                   tmp_path):
    names = isolated_worker
    run, topic = names["redis_prefix"], names["events_topic"]
    client = redis.Redis.from_url(services["redis_url"])
    store = RedisStore(client, run)
    asyncio.run(_stream(services["bootstrap"], topic, run, 6000))
    assert wait_for(lambda: store.events_applied() == 6000, timeout=90)

    streaming = threading.Thread(target=asyncio.run, args=(
        _stream(services["bootstrap"], topic, run, 30000),))
    streaming.start()
    try:
        wait_for(lambda: store.events_applied() > 7000, timeout=60)
        saved = []
        for number in range(3):  # each while the worker applies (the stream runs on)
            path = tmp_path / f"{number}.snapshot"
            before = store.events_applied()
            header = save_snapshot(client, run, path)
            saved.append((path, header))
            assert wait_for(lambda b=before: store.events_applied() > b, timeout=30)
    finally:
        streaming.join()

    for number, (path, header) in enumerate(saved):
        claimed = sum(offset + 1 for offset in header["offsets"].values())  # a fresh topic
        restore_snapshot(client, path, f"{run}.copy{number}")
        copy = RedisStore(client, f"{run}.copy{number}", catalog_prefix=run)
        assert copy.events_applied() == claimed, (number, header["offsets"])
        assert 6000 < claimed < 36000
    assert not client.exists(f"{run}:pause")  # the worker is not held after a save
    assert wait_for(lambda: store.events_applied() == 36000, timeout=90)
