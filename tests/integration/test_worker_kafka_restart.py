"""Kafka restarts under the worker: the same worker process finds the broker again, keeps
(or regains) its partitions and carries on from its committed offsets, nothing lost and
nothing applied twice; its producer (dead letters) reconnects as well."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid

import orjson
import redis
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from streamrec.local.services import LocalKafka
from streamrec.storage.state_store import RedisStore
from tests.api.conftest import wait_for
from tests.factories import produce_views

EVENTS = 500
# Longer than the group's session timeout (10 s): the broker restarts with a group whose
# member has not been heard from for that long.
OUTAGE_SECONDS = 15
PARTITIONS = 4


async def _first_dead_letter(bootstrap: str, topic: str) -> bytes | None:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for rows in (await consumer.getmany(timeout_ms=1000)).values():
                return rows[0].value
        return None
    finally:
        await consumer.stop()


async def _lag(bootstrap: str, group: str, topic: str) -> int | None:
    """Records of ``topic`` the group has not committed yet (None before it committed on
    every partition)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        committed = {tp: meta for tp, meta in
                     (await admin.list_consumer_group_offsets(group)).items()
                     if tp.topic == topic}
        if len(committed) < PARTITIONS:
            return None
        ends = await consumer.end_offsets(list(committed))
        return sum(ends[tp] - meta.offset for tp, meta in committed.items())
    finally:
        await consumer.stop()
        await admin.close()


def test_worker_rejoins_after_a_broker_restart_and_applies_everything_once(
        services, worker_env, tmp_path):
    run = f"krestart{uuid.uuid4().hex[:6]}"
    kafka = LocalKafka(tmp_path / "kafka").start()
    topic, dead_letters = f"{run}.events", f"{run}.dlq"
    env = dict(worker_env, STREAMREC_KAFKA_BOOTSTRAP=kafka.bootstrap,
               STREAMREC_REDIS_PREFIX=run, STREAMREC_WORKER_ID=run,
               STREAMREC_EVENTS_TOPIC=topic, STREAMREC_DEAD_LETTER_TOPIC=dead_letters,
               STREAMREC_ITEMS_TOPIC=f"{run}.items", STREAMREC_USERS_TOPIC=f"{run}.users",
               STREAMREC_IMPRESSIONS_TOPIC=f"{run}.impressions",
               STREAMREC_METRICS_TOPIC=f"{run}.metrics",
               STREAMREC_TOPIC_PARTITIONS=str(PARTITIONS))
    store = RedisStore(redis.Redis.from_url(services["redis_url"]), run)
    log_path = tmp_path / "worker.log"
    malformed = orjson.dumps({"user_id": run, "item_id": "x", "event_type": "teleport"})
    with open(log_path, "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "streamrec.cli", "worker"], env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            asyncio.run(produce_views(kafka.bootstrap, topic, run, 0, EVENTS))
            assert wait_for(lambda: store.events_applied() == EVENTS, timeout=90), \
                f"applied {store.events_applied()} of {EVENTS} before the restart"

            kafka.stop()
            time.sleep(OUTAGE_SECONDS)
            assert worker.poll() is None, f"the worker died with Kafka; see {log_path}"
            kafka.start()
            asyncio.run(produce_views(kafka.bootstrap, topic, run, EVENTS, EVENTS,
                                     extra=[malformed]))
            assert wait_for(lambda: store.events_applied() == 2 * EVENTS, timeout=120,
                            every=0.5), \
                f"applied {store.events_applied()} of {2 * EVENTS} after the restart"
            assert asyncio.run(_first_dead_letter(kafka.bootstrap, dead_letters)) == malformed
            # Its commits reach the broker again: a later restart would not replay the lot.
            assert wait_for(lambda: asyncio.run(_lag(kafka.bootstrap, run, topic)) == 0,
                            timeout=30, every=1.0)
            assert store.events_applied() == 2 * EVENTS  # nothing applied twice
            assert worker.poll() is None, "the worker restarted: it must recover in-process"
        finally:
            worker.terminate()
            worker.wait(30)
            kafka.stop()
