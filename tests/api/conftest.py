"""The HTTP surface against the session's real Kafka, Redis and worker."""

from __future__ import annotations

import contextlib
import functools
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from streamrec.local.services import free_port
from streamrec.settings import Settings
from streamrec.storage import keys
from streamrec.storage.state_store import RedisStore


def wait_for(predicate, timeout: float = 30.0, every: float = 0.02):
    """Poll ``predicate`` until it returns something truthy; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(every)


def popularity(services, settings: Settings, items: list[str]) -> dict[str, float]:
    """The stored popularity of each of ``items`` that has one. Read from Redis, not from
    ``GET /popular``: other tests' items share the list, and its top 500 can leave out an
    item that is older than theirs."""
    store = _store(services["redis_url"], settings.redis_prefix)
    found = store.client.zmscore(store.key(keys.POPULAR), items)
    return {item: score for item, score in zip(items, found, strict=True) if score is not None}


@functools.cache
def _store(url: str, prefix: str) -> RedisStore:
    """One store per Redis and prefix for the session: a test polls :func:`popularity`
    every 20 ms, and each poll opened (and closed) a connection of its own."""
    return RedisStore.from_url(url, prefix)


@pytest.fixture(scope="session")
def api_settings(services) -> Settings:
    return Settings(kafka_bootstrap=services["bootstrap"], redis_url=services["redis_url"],
                    max_events_per_request=50)


@pytest.fixture(scope="session")
def client(api_settings, worker):
    with TestClient(create_app(api_settings)) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, timeout=60)
        # Wait until the worker consumes, so tests measure the pipeline, not its start-up.
        warm = f"warm-{uuid.uuid4().hex[:8]}"
        client.post("/events", json={"user_id": warm, "item_id": warm, "event_type": "view"})
        # .get: on a loaded machine a read may be shed (503, no items); ask again.
        assert wait_for(lambda: any(
            i["item_id"] == warm
            for i in client.get("/popular", params={"k": 500}).json().get("items", [])),
            timeout=60), \
            "the worker applies nothing: see worker.log in the services directory"
        yield client


@pytest.fixture
def run() -> str:
    """A fresh id prefix: the session's Kafka and Redis are shared by every test."""
    return uuid.uuid4().hex[:8]


@contextlib.contextmanager
def api_process(services, worker_env, name: str = "api", **settings: str):
    """A real ``streamrec api`` (uvicorn, as deployed) on a free port, with ``settings`` as
    ``STREAMREC_*`` variables. Yields ``(url, process, log path)``."""
    port = free_port()
    env = dict(worker_env, STREAMREC_API_PORT=str(port),
               **{f"STREAMREC_{key.upper()}": value for key, value in settings.items()})
    log_path = services["dir"] / f"{name}-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "streamrec.cli", "api"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                    return response.status == 200
            except OSError:
                return False

        try:
            assert wait_for(ready, timeout=60, every=0.1), f"the API did not start: {log_path}"
            yield url, process, log_path
        finally:
            process.terminate()
            process.wait(20)
