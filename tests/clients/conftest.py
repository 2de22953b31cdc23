"""The clients against a real ``streamrec api`` process and worker on the session's Kafka
and Redis (and, for retries, an API whose own Redis the test hangs)."""

from __future__ import annotations

import threading
import uuid

import httpx
import pytest

from tests.api.conftest import api_process, wait_for
from tests.api.test_shedding import hung, own_redis  # noqa: F401 - a fixture, used below
from tests.conftest import own_worker

# Small, so a client batch of a dozen must be split to be taken.
MAX_EVENTS_PER_REQUEST = 5
RETRY_AFTER = 1


def listed(url: str, item_id: str) -> bool:
    body = httpx.get(f"{url}/popular", params={"k": 500}).json()
    # .get: on a loaded machine a read may be shed (503, no items); the caller asks again.
    return any(item["item_id"] == item_id for item in body.get("items", []))


@pytest.fixture(scope="session")
def api_url(services, worker_env):
    """An API and a worker with topics and a Redis prefix of their own: /popular holds only
    what these tests sent."""
    with own_worker(services, worker_env) as names, api_process(
            services, worker_env, name="api-clients",
            max_events_per_request=str(MAX_EVENTS_PER_REQUEST), **names) as (url, _, _):
        assert wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, timeout=60)
        warm = f"warm-{uuid.uuid4().hex[:8]}"
        httpx.post(f"{url}/events", json={"user_id": warm, "item_id": warm,
                                          "event_type": "view"})
        assert wait_for(lambda: listed(url, warm), timeout=60), "the worker applies nothing"
        yield url


@pytest.fixture(scope="module")
def hung_api(services, worker_env, own_redis):  # noqa: F811 - the imported fixture
    """An API on a Redis of its own, and a way to hang that Redis for some seconds: reads
    are then answered 503 with ``Retry-After: 1`` at their 0.5 s deadline."""
    with api_process(services, worker_env, name="api-clients-hung", redis_url=own_redis.url,
                     request_deadline_seconds="0.5",
                     retry_after_seconds=str(RETRY_AFTER)) as (url, _, _):
        assert wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, timeout=60)

        def hang_for(seconds: float) -> threading.Thread:
            started = threading.Event()

            def hold() -> None:
                with hung(own_redis):
                    started.set()
                    threading.Event().wait(seconds)

            thread = threading.Thread(target=hold, daemon=True)
            thread.start()
            started.wait()
            return thread

        yield url, hang_for
