"""The HTTP surface against the session's real Kafka, Redis and worker."""

from __future__ import annotations

import time
import uuid

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from streamrec.settings import Settings


def wait_for(predicate, timeout: float = 30.0, every: float = 0.02):
    """Poll ``predicate`` until it returns something truthy; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(every)


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
        assert wait_for(lambda: any(
            i["item_id"] == warm
            for i in client.get("/popular", params={"k": 500}).json()["items"]), timeout=60), \
            "the worker applies nothing: see worker.log in the services directory"
        yield client


@pytest.fixture
def run() -> str:
    """A fresh id prefix: the session's Kafka and Redis are shared by every test."""
    return uuid.uuid4().hex[:8]
