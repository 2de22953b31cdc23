"""Redis goes away under the worker: it stops applying, retries with backoff, and once
Redis is back applies everything exactly once, without a restart."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid

import redis

from streamrec.local.services import LocalRedis
from streamrec.storage.state_store import RedisStore
from tests.api.conftest import wait_for
from tests.factories import produce_views


def test_worker_waits_out_a_redis_outage_and_applies_everything_once(services, worker_env,
                                                                     tmp_path):
    run = f"outage{uuid.uuid4().hex[:6]}"
    own = LocalRedis(tmp_path / "redis").start()
    topic = f"{run}.events"
    env = dict(worker_env, STREAMREC_REDIS_URL=own.url, STREAMREC_REDIS_PREFIX=run,
               STREAMREC_WORKER_ID=run, STREAMREC_EVENTS_TOPIC=topic,
               STREAMREC_DEAD_LETTER_TOPIC=f"{run}.dlq", STREAMREC_ITEMS_TOPIC=f"{run}.items",
               STREAMREC_USERS_TOPIC=f"{run}.users",
               STREAMREC_IMPRESSIONS_TOPIC=f"{run}.impressions",
               STREAMREC_METRICS_TOPIC=f"{run}.metrics")
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "streamrec.cli", "worker"], env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            store = RedisStore(redis.Redis.from_url(own.url), run)
            asyncio.run(produce_views(services["bootstrap"], topic, run, 0, 1000))
            assert wait_for(lambda: store.events_applied() == 1000, timeout=60)

            own.stop()
            asyncio.run(produce_views(services["bootstrap"], topic, run, 1000, 1000))
            time.sleep(3)  # the worker meets the outage and backs off
            assert worker.poll() is None, "the worker died with Redis"
            own.start()
            assert wait_for(lambda: store.events_applied() == 2000, timeout=60)
            time.sleep(2)
            assert store.events_applied() == 2000  # nothing counted twice
            assert worker.poll() is None
        finally:
            worker.terminate()
            worker.wait(30)
            own.stop()
    assert b"Redis unavailable" in (tmp_path / "worker.log").read_bytes()
