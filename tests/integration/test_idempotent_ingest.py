"""An ``event_id`` is applied once: repeated within a batch, across batches, across
partitions and across a SIGKILL of the worker, through real Kafka, a real worker and real
Redis; ``streamrec import`` of the same file again changes nothing. Repeats are counted and
never dead-lettered."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid

import orjson
import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamrec.kafka import ensure_topics
from streamrec.settings import Settings
from streamrec.storage.ops_stats import OpsStats
from streamrec.storage.state_store import RedisStore
from tests.integration.test_crash_recovery import _names, _spawn

pytestmark = pytest.mark.integration


def _event(event_id: str, user: str, item: str, at: float) -> dict:
    return {"event_id": event_id, "user_id": user, "item_id": item, "event_type": "view",
            "timestamp": at}


async def _produce(bootstrap: str, topic: str, sends: list[tuple[int, dict]]) -> None:
    """Each event to the partition given with it, all in one go (one batch for the worker
    when it is already waiting)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=50)
    await producer.start()
    try:
        pending = [await producer.send(topic, orjson.dumps(event),
                                       key=event["user_id"].encode(), partition=partition)
                   for partition, event in sends]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def _count_records(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        found = await consumer.getmany(timeout_ms=3000)
        return sum(map(len, found.values()))
    finally:
        await consumer.stop()


def _wait(check, process, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert process.poll() is None, "the worker died"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.fixture
def run(services, worker_env):
    """A run of its own: topics, consumer group and Redis prefix; yields its names, the
    worker's environment and a store on its prefix."""
    names = _names(f"once{uuid.uuid4().hex[:6]}")
    asyncio.run(ensure_topics(Settings(kafka_bootstrap=services["bootstrap"], **names)))
    env = dict(worker_env, STREAMREC_SESSION_TIMEOUT_SECONDS="6",
               **{f"STREAMREC_{k.upper()}": v for k, v in names.items()})
    client = redis.Redis.from_url(services["redis_url"])
    yield names, env, RedisStore(client, names["redis_prefix"])
    client.close()


def test_an_event_id_is_applied_once_across_batches_partitions_and_a_kill(
        services, run, tmp_path):
    names, env, store = run
    topic, bootstrap = names["events_topic"], services["bootstrap"]
    at = time.time() - 60
    with open(tmp_path / "worker.log", "wb") as log:
        worker = _spawn(env, log)
        # Within one batch: e1 three times; "cup" is the control (its one event, once).
        asyncio.run(_produce(bootstrap, topic, [
            (0, _event("e1", "ann", "tea", at)), (0, _event("e1", "ann", "tea", at)),
            (0, _event("e1", "ann", "tea", at)), (0, _event("e2", "ann", "cup", at))]))
        _wait(lambda: store.events_applied() + store.duplicates_skipped() >= 4, worker)
        # Across batches and partitions: e1 again on partition 0, then on 2 and 3.
        for partition in (0, 2, 3):
            asyncio.run(_produce(bootstrap, topic, [(partition,
                                                     _event("e1", "ann", "tea", at))]))
        _wait(lambda: store.duplicates_skipped() >= 5, worker)
        # Across a SIGKILL: e3 applied, the worker killed, e3 again on another partition.
        asyncio.run(_produce(bootstrap, topic, [(1, _event("e3", "bob", "pot", at))]))
        _wait(lambda: store.events_applied() >= 3, worker)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        asyncio.run(_produce(bootstrap, topic, [(2, _event("e3", "bob", "pot", at)),
                                                (1, _event("e4", "bob", "jam", at))]))
        survivor = _spawn(env, log)
        try:
            _wait(lambda: store.events_applied() >= 4 and store.duplicates_skipped() >= 6,
                  survivor)
            time.sleep(2)  # anything applied twice would show now
        finally:
            survivor.terminate()
            survivor.wait(30)

    assert store.events_applied() == 4  # e1, e2, e3, e4
    assert store.duplicates_skipped() == 6  # e1 five times again, e3 once
    assert OpsStats(store.client, names["redis_prefix"]).duplicates() == 6
    popular = dict(store.popular(10).scores)
    # Each item's one event, at the same time, scores the same: nothing counted twice.
    assert popular["tea"] == pytest.approx(popular["cup"], rel=1e-9)
    assert popular["pot"] == pytest.approx(popular["jam"], rel=1e-9)
    assert popular["tea"] == pytest.approx(popular["pot"], rel=1e-9)
    assert asyncio.run(_count_records(bootstrap, names["dead_letter_topic"])) == 0


def streamrec(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamrec.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_importing_the_same_file_again_changes_nothing(services, run, tmp_path):
    names, env, store = run
    events = tmp_path / "events.csv"
    # No event_id: the import derives one from each row; the same view twice is two.
    events.write_text("user_id,item_id,event_type,timestamp\n"
                      "ann,tea,view,1750000000\n"
                      "ann,tea,view,1750000000\n"
                      "bob,cup,view,\n")
    with open(tmp_path / "worker.log", "wb") as log:
        worker = _spawn(env, log)
        try:
            assert streamrec(env, "import", str(events)).returncode == 0
            _wait(lambda: store.events_applied() >= 3, worker)
            popular = dict(store.popular(10).scores)
            assert streamrec(env, "import", str(events)).returncode == 0
            _wait(lambda: store.duplicates_skipped() >= 3, worker)
            time.sleep(1)
        finally:
            worker.terminate()
            worker.wait(30)
    assert store.events_applied() == 3 and store.duplicates_skipped() == 3
    assert dict(store.popular(10).scores) == popular
