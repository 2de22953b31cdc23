"""Every role stops within its stated bound of SIGTERM, whatever its connections are doing:
the worker, the API and the simulator are stopped while Redis or the broker is hung
(SIGSTOP) or gone. Kafka and Redis are this module's own, so they can be broken."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
import redis

from streamrec.local.services import LocalKafka, LocalRedis, free_port
from streamrec.shutdown import ROLE_STOP_SECONDS
from streamrec.storage.state_store import RedisStore
from tests.api.conftest import wait_for

# A role's bound, plus what a loaded two-core machine adds to noticing the exit.
ALLOWED_SECONDS = ROLE_STOP_SECONDS + 3


@pytest.fixture(scope="module")
def own_services(tmp_path_factory):
    base = tmp_path_factory.mktemp("stopping")
    redis_server = LocalRedis(base / "redis").start()
    kafka = LocalKafka(base / "kafka").start()
    yield {"redis": redis_server, "kafka": kafka, "dir": base}
    for service in (kafka, redis_server):
        if service.process is not None and service.process.poll() is None:
            os.killpg(service.process.pid, signal.SIGCONT)
        service.stop()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _start_roles(services, log_dir) -> tuple[dict[str, subprocess.Popen], RedisStore]:
    run = f"stop{uuid.uuid4().hex[:6]}"
    port = free_port()
    env = dict(os.environ, STREAMREC_REDIS_URL=services["redis"].url,
               STREAMREC_KAFKA_BOOTSTRAP=services["kafka"].bootstrap,
               STREAMREC_REDIS_PREFIX=run, STREAMREC_WORKER_ID=run,
               STREAMREC_EVENTS_TOPIC=f"{run}.events", STREAMREC_DEAD_LETTER_TOPIC=f"{run}.dlq",
               STREAMREC_ITEMS_TOPIC=f"{run}.items", STREAMREC_USERS_TOPIC=f"{run}.users",
               STREAMREC_IMPRESSIONS_TOPIC=f"{run}.impressions",
               STREAMREC_METRICS_TOPIC=f"{run}.metrics", STREAMREC_API_PORT=str(port),
               STREAMREC_DATA_DIR=str(log_dir / run))
    cli = [sys.executable, "-m", "streamrec.cli"]
    argv = {"worker": [*cli, "worker"], "api": [*cli, "api"],
            "simulate": [*cli, "simulate", "--rate", "200", "--items", "500",
                         "--loop-api", f"http://127.0.0.1:{port}", "--loop-rate", "5"]}
    roles = {}
    for name, command in argv.items():
        with open(log_dir / f"{run}-{name}.log", "wb") as log:
            roles[name] = subprocess.Popen(command, env=env, stdout=log,
                                           stderr=subprocess.STDOUT)
    store = RedisStore(redis.Redis.from_url(services["redis"].url), run)
    try:
        assert wait_for(lambda: store.events_applied() > 100, timeout=90, every=0.5), \
            f"the worker applies nothing; see {log_dir}"
        assert wait_for(lambda: _healthy(f"http://127.0.0.1:{port}/healthz"), timeout=30)
    except BaseException:
        for process in roles.values():
            process.kill()
        raise
    return roles, store


def _break(services, how: str, mend: bool = False) -> None:
    """Make Redis or Kafka hung (SIGSTOP) or gone (stopped); with ``mend``, undo it."""
    what, state = how.split("-")
    service = services[what]
    if state == "hung":
        os.killpg(service.process.pid, signal.SIGCONT if mend else signal.SIGSTOP)
    elif mend:
        service.start()
    else:
        service.stop()


# Hung first (they mend at once), then gone (a restart each).
@pytest.mark.parametrize("how", ["redis-hung", "kafka-hung", "kafka-gone", "redis-gone"])
def test_every_role_stops_within_its_bound_of_sigterm(own_services, how):
    roles, store = _start_roles(own_services, own_services["dir"])
    try:
        _break(own_services, how)
        time.sleep(4)  # the roles meet the outage: requests and fetches hang or fail
        started = time.monotonic()
        for process in roles.values():
            process.send_signal(signal.SIGTERM)
        took: dict[str, float] = {}
        while len(took) < len(roles) and time.monotonic() - started < 60:
            for name, process in roles.items():
                if name not in took and process.poll() is not None:
                    took[name] = time.monotonic() - started
            time.sleep(0.05)
        late = {name: round(took.get(name, 60.0), 1) for name in roles
                if took.get(name, 60.0) > ALLOWED_SECONDS}
        assert not late, f"{how}: stopped after (s) {late}; all: {took}"
    finally:
        for process in roles.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        _break(own_services, how, mend=True)
