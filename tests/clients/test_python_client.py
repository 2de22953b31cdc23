"""``streamrec_client`` (clients/python) against the real API, worker, Kafka and Redis."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import textwrap
import time
import uuid

import httpx
import pytest
from streamrec_client import (
    AsyncClient,
    Client,
    ItemList,
    Recommendations,
    Retry,
    StreamrecError,
)

from streamrec.local.services import free_port
from tests.api.conftest import wait_for
from tests.clients.conftest import MAX_EVENTS_PER_REQUEST, RETRY_AFTER, listed


def test_events_arrive_and_a_typed_list_comes_back(api_url):
    run = uuid.uuid4().hex[:8]
    items = [f"{run}-item-{n}" for n in range(4)]
    # More events than the server takes per request: the client sends them in halves.
    with Client(api_url, batch_size=3 * MAX_EVENTS_PER_REQUEST) as client:
        ids = [client.track(f"{run}-user-{user}", item, "view")
               for user in range(3) for item in items]
        assert len(set(ids)) == len(ids) == 12  # every event has its own event_id
    # Leaving the block sent them all.
    assert wait_for(lambda: all(listed(api_url, item) for item in items), timeout=30)
    with Client(api_url) as client:
        rec = client.recommendations(f"{run}-user-0", k=5)
        assert isinstance(rec, Recommendations) and rec.recommendation_id and rec.items
        assert rec.user_id == f"{run}-user-0" and rec.variant and rec.model
        assert not set(rec.item_ids) & set(items)  # never what the user already touched
        popular = client.popular(k=500)
        assert isinstance(popular, ItemList) and set(items) <= {i.item_id for i in popular.items}
        similar = client.similar(items[0], k=3)
        assert set(similar.items[0].__dataclass_fields__) == {"item_id", "score"}
        assert {item.item_id for item in similar.items} <= set(items[1:])
        click_id = client.click(rec, rec.items[0].item_id)
        client.flush()
        assert client.buffered == 0 and client.refused == [] and len(click_id) == 32


def test_events_are_sent_by_time_without_a_flush(api_url):
    item = f"timed-{uuid.uuid4().hex[:8]}"
    with Client(api_url, batch_size=100, flush_interval=0.2) as client:
        client.track("timed-user", item, "view")
        assert wait_for(lambda: client.buffered == 0, timeout=10)
        assert wait_for(lambda: listed(api_url, item), timeout=30)


def test_what_is_buffered_is_sent_at_interpreter_exit(api_url):
    item = f"atexit-{uuid.uuid4().hex[:8]}"
    script = textwrap.dedent(f"""
        from streamrec_client import Client
        client = Client({api_url!r}, flush_interval=3600)
        client.track("atexit-user", {item!r}, "view")
        # no close(): the interpreter ends here
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert wait_for(lambda: listed(api_url, item), timeout=30)


def test_an_invalid_event_is_refused_alone_and_named(api_url):
    run = uuid.uuid4().hex[:8]
    good = [f"{run}-good-{n}" for n in range(3)]
    client = Client(api_url, batch_size=10, flush_interval=3600)
    for item in good[:2]:
        client.track(f"{run}-user", item, "view")
    with pytest.raises(ValueError, match="value: must be a finite number"):
        client.track(f"{run}-user", f"{run}-bad", "view", value=float("nan"))
    bad = client.track(f"{run}-user", f"{run}-bad", "teleport")  # no such event type
    client.track(f"{run}-user", good[2], "view")
    with pytest.raises(StreamrecError) as refused:
        client.close()
    assert refused.value.status == 422 and "event_type" in str(refused.value)
    assert [event["event_id"] for event, _ in client.refused] == [bad]
    assert wait_for(lambda: all(listed(api_url, item) for item in good), timeout=30)


def test_the_async_client_sends_and_reads(api_url):
    run = uuid.uuid4().hex[:8]

    async def scenario() -> Recommendations:
        async with AsyncClient(api_url, batch_size=7) as client:
            for n in range(7):  # a full batch: sent at once by the background task
                client.track(f"{run}-user", f"{run}-item-{n}", "view")
            await asyncio.sleep(0)
            rec = await client.recommendations(f"{run}-other", k=3)
            client.click(rec, rec.items[0].item_id)
        return rec

    rec = asyncio.run(scenario())
    assert rec.recommendation_id and len(rec.items) == 3
    assert wait_for(lambda: all(listed(api_url, f"{run}-item-{n}") for n in range(7)),
                    timeout=30)


class Recording(httpx.HTTPTransport):
    """A real HTTP transport that notes when each request left and what came back."""

    def __init__(self) -> None:
        super().__init__()
        self.exchanges: list[tuple[float, float, int, str | None]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sent = time.monotonic()
        response = super().handle_request(request)
        self.exchanges.append((sent, time.monotonic(), response.status_code,
                               response.headers.get("Retry-After")))
        return response


def test_a_503_is_retried_after_what_retry_after_asks(hung_api):
    url, hang_for = hung_api
    transport = Recording()
    # A backoff far below Retry-After: any wait of a second is the server's.
    client = Client(url, retry=Retry(max_attempts=10, base=0.01), transport=transport)
    holding = hang_for(2.5)
    rec = client.recommendations("retried-user", k=3)
    holding.join()
    client.close()
    assert rec.recommendation_id
    statuses = [status for _, _, status, _ in transport.exchanges]
    assert statuses[0] == 503 and statuses[-1] == 200 and client.retries >= 1, statuses
    for (_, answered, status, after), (sent, *_) in itertools.pairwise(transport.exchanges):
        assert status == 503 and after == str(RETRY_AFTER)
        assert sent - answered >= RETRY_AFTER


def test_connection_errors_are_retried_then_reported():
    client = Client(f"http://127.0.0.1:{free_port()}", retry=Retry(max_attempts=3, base=0.01))
    with pytest.raises(StreamrecError, match="gave up after 3 attempts") as error:
        client.popular()
    assert error.value.status is None and client.retries == 2
    client.close()
