"""Load shedding: a bound on requests in flight and a deadline per read, per API process.

An overloaded process, or one whose Redis hangs, answers **503** with ``Retry-After`` at
once instead of letting requests queue until clients give up:

- a request arriving while ``max_requests_in_flight`` are being handled is refused before
  anything else runs (reason ``in_flight``);
- a read (``GET``, ``HEAD``) not answered within ``request_deadline_seconds`` is answered
  503 then (reason ``deadline``), and its handler cancelled: its work still queued in a
  thread pool is dropped, and whatever it sends later goes nowhere. A thread already
  waiting on Redis cannot be interrupted and runs on, bounded by its pool
  (``serving_threads`` for ``GET /recommendations``). Writes are not cut short: ``POST /events``
  waits for Kafka within ``produce_timeout_seconds``, and answering before Kafka does
  would invite a retry of events Kafka may still take.

The 503 of a deadline is sent by a timer, beside the handler, before it cancels it: the
answer never waits on how a handler takes its cancellation (a shielded wait defers it).
A timer costs a few microseconds a request; running each handler in a task of its own to
wait on it cost far more.

Operations routes (``/healthz``, ``/readyz``, ``/metrics...``) are never shed: they must
answer while the process is saturated or Redis is away, and bound their own work.
"""

from __future__ import annotations

import asyncio

import orjson

OPERATIONS = ("/healthz", "/readyz", "/metrics")
READS = frozenset({"GET", "HEAD"})
SHED = ("or shed: max_requests_in_flight requests in flight, or a read not answered within "
        "request_deadline_seconds; retry after Retry-After")
# For the OpenAPI spec of every route that may be shed (a middleware cannot declare answers).
SHED_RESPONSES: dict[int | str, dict] = {503: {"description": "Shed: " + SHED.removeprefix(
    "or shed: ")}}


class LoadShedding:
    """Pure ASGI middleware; ``scope["app"].state.metrics`` (when set) counts the 503s."""

    def __init__(self, app, max_in_flight: int, deadline_seconds: float,
                 retry_after_seconds: int) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.deadline = deadline_seconds
        self.retry_after = str(retry_after_seconds).encode()
        self.in_flight = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(OPERATIONS):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            await self._refuse(scope, send, "in_flight",
                               f"overloaded: {self.max_in_flight} requests in flight "
                               "(max_requests_in_flight); retry later")
            return
        self.in_flight += 1
        if scope["method"] not in READS:
            try:
                await self.app(scope, receive, send)
            finally:
                self.in_flight -= 1
            return
        await self._within_deadline(scope, receive, send)

    async def _within_deadline(self, scope, receive, send) -> None:
        loop = asyncio.get_running_loop()
        request = asyncio.current_task()
        assert request is not None
        started = False
        refusal: asyncio.Task | None = None

        async def guarded_send(message) -> None:
            nonlocal started
            if refusal is not None:  # answered 503 already: the late answer goes nowhere
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        def expire() -> None:
            nonlocal refusal
            if started:  # half an answer out cannot become a 503: let it finish
                return
            refusal = loop.create_task(self._refuse(
                scope, send, "deadline", f"deadline: no answer within {self.deadline:g} s "
                "(request_deadline_seconds); retry later"))
            # Work still queued in a thread pool is dropped (under overload, the queue is
            # what would otherwise be served, late, to nobody); a thread under way runs on.
            request.cancel()

        timer = loop.call_later(self.deadline, expire)
        try:
            await self.app(scope, receive, guarded_send)
        except asyncio.CancelledError:
            if refusal is None:  # the server's, not ours
                raise
        except Exception:
            if refusal is None:
                raise
            # Answered already: an abandoned handler's failure (Redis timing out at last)
            # is not news to anyone.
        finally:
            timer.cancel()
            self.in_flight -= 1
        if refusal is not None:
            # Ours to withdraw, whether it was delivered or a shielded wait swallowed it.
            while request.cancelling():
                request.uncancel()
            await refusal  # the 503 is out before the server sees the handler end

    async def _refuse(self, scope, send, reason: str, detail: str) -> None:
        hub = getattr(scope["app"].state, "metrics", None)
        if hub is not None:
            hub.shed(reason)
        body = orjson.dumps({"detail": detail})
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", self.retry_after)]})
        await send({"type": "http.response.body", "body": body})
