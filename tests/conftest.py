"""Session fixtures: a real Kafka broker and a real redis-server as local processes, plus a
real worker process. (The testcontainers path for machines with Docker is not written yet.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from streamrec.local.services import LocalKafka, LocalRedis


@pytest.fixture(scope="session")
def services(tmp_path_factory):
    base = tmp_path_factory.mktemp("services")
    redis_server = LocalRedis(base / "redis").start()
    kafka = LocalKafka(base / "kafka").start()
    yield {"redis_url": redis_server.url, "bootstrap": kafka.bootstrap, "dir": base}
    kafka.stop()
    redis_server.stop()


@pytest.fixture(scope="session")
def worker_env(services):
    return dict(os.environ, STREAMREC_REDIS_URL=services["redis_url"],
                STREAMREC_KAFKA_BOOTSTRAP=services["bootstrap"])


@pytest.fixture(scope="session")
def worker(services, worker_env):
    with open(services["dir"] / "worker.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "streamrec.cli", "worker"],
                                   env=worker_env, stdout=log, stderr=subprocess.STDOUT)
        yield process
        process.terminate()
        process.wait(30)


@pytest.fixture
def isolated_worker(services, worker_env):
    """A worker of its own: its own topics, consumer group and Redis prefix, for tests
    whose assertions need state no other test touches. Yields its settings overrides."""
    import uuid

    run = f"iso{uuid.uuid4().hex[:8]}"
    names = {"redis_prefix": run, "worker_id": run, "events_topic": f"{run}.events",
             "dead_letter_topic": f"{run}.events.dlq", "items_topic": f"{run}.items",
             "users_topic": f"{run}.users", "impressions_topic": f"{run}.impressions",
             "metrics_topic": f"{run}.metrics"}
    env = dict(worker_env, **{f"STREAMREC_{k.upper()}": v for k, v in names.items()})
    with open(services["dir"] / f"worker-{run}.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "streamrec.cli", "worker"],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
        yield names
        process.terminate()
        process.wait(30)
