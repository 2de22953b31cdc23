"""Session fixtures: a real Kafka broker (KRaft) and a real Redis, plus a real worker.

Where a Docker engine answers, they run in containers (testcontainers); where none does
(testcontainers raises ``docker.errors.DockerException`` when it builds its client), they
run as local processes provisioned by ``streamrec.local.services``: the Kafka jars from
Maven Central and Debian's redis-server. ``STREAMREC_TEST_SERVICES=local`` forces the
local processes, ``=docker`` forbids the fallback.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid

import pytest

from streamrec.local.services import LocalKafka, LocalRedis, LocalRedisCluster

KAFKA_IMAGE = "confluentinc/cp-kafka:7.7.1"  # Kafka 3.7, KRaft (testcontainers' module)
REDIS_IMAGE = "redis:7.4"


def _containers():
    """Started Kafka and Redis containers, or None when no Docker engine answers."""
    from docker.errors import DockerException

    try:
        from testcontainers.community.kafka import KafkaContainer
        from testcontainers.community.redis import RedisContainer

        kafka = KafkaContainer(KAFKA_IMAGE).with_kraft()
        redis_container = RedisContainer(REDIS_IMAGE)
    except DockerException:
        return None
    kafka.start()
    redis_container.start()
    return kafka, redis_container


@pytest.fixture(scope="session")
def services(tmp_path_factory):
    base = tmp_path_factory.mktemp("services")
    mode = os.environ.get("STREAMREC_TEST_SERVICES", "auto")
    containers = None if mode == "local" else _containers()
    if containers is None and mode == "docker":
        pytest.fail("STREAMREC_TEST_SERVICES=docker but no Docker engine answers")
    if containers is not None:
        kafka, redis_container = containers
        host = redis_container.get_container_host_ip()
        port = redis_container.get_exposed_port(6379)
        yield {"redis_url": f"redis://{host}:{port}/0",
               "bootstrap": kafka.get_bootstrap_server(), "dir": base}
        kafka.stop()
        redis_container.stop()
        return
    redis_server = LocalRedis(base / "redis").start()
    kafka = LocalKafka(base / "kafka").start()
    yield {"redis_url": redis_server.url, "bootstrap": kafka.bootstrap, "dir": base}
    kafka.stop()
    redis_server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A three-node Redis Cluster of local redis-server processes (cluster mode), Docker or
    not: its URL names one node, the client finds the others."""
    cluster = LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster.url
    cluster.stop()


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


@contextlib.contextmanager
def own_worker(services, worker_env, **settings: str):
    """Start a worker of its own: its own topics, consumer group and Redis prefix, plus
    any other ``settings``. Yields its settings overrides."""
    run = f"iso{uuid.uuid4().hex[:8]}"
    names = {"redis_prefix": run, "worker_id": run, "events_topic": f"{run}.events",
             "dead_letter_topic": f"{run}.events.dlq", "items_topic": f"{run}.items",
             "users_topic": f"{run}.users", "impressions_topic": f"{run}.impressions",
             "metrics_topic": f"{run}.metrics", **settings}
    env = dict(worker_env, **{f"STREAMREC_{k.upper()}": v for k, v in names.items()})
    with open(services["dir"] / f"worker-{run}.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "streamrec.cli", "worker"],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield names
        finally:
            process.terminate()
            process.wait(30)


@pytest.fixture
def isolated_worker(services, worker_env):
    """A worker of its own, for tests whose assertions need state no other test touches."""
    with own_worker(services, worker_env) as names:
        yield names
