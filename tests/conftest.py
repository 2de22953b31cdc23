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
