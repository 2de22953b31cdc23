"""The one load generator of bench and soak: events into Kafka at a fixed rate, and
open-loop GET requests, counted in a :class:`Load`.

Every request leaves at its scheduled time and its latency counts from then, so queueing
shows. httpx cost the generator more CPU per request than the API spent answering it,
so at a few hundred requests/s the generator, not the API, set the figures. This speaks
HTTP/1.1 over kept-alive asyncio streams and reads only the status line, Content-Length
and the body's ``degraded``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import urlsplit

import orjson

log = logging.getLogger(__name__)

# At most this many open at once to the API (its own bound, max_connections, is 1,000 per
# process): past it a request waits for one, and the wait counts in its latency.
CONNECTIONS = 1000


class Load:
    """What a load did: answered requests' latencies (seconds), errors by kind and events
    Kafka acknowledged, in all and since the last :meth:`take` (a soak's row); and how long
    each 503 took (all along: a shed request is answered too, and should be at once)."""

    def __init__(self) -> None:
        self.events = 0
        self.requests = 0
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.all_latencies: list[float] = []
        self.all_errors: Counter[str] = Counter()
        self.events_total = 0
        self.sent = 0  # requests sent, answered or not
        self.refusals: list[float] = []

    def error(self, kind: str, detail: object = None) -> None:
        if not self.all_errors[kind] and detail is not None:
            log.warning("load: first %s: %r", kind, detail)
        self.errors[kind] += 1
        self.all_errors[kind] += 1

    def delivered(self, future: asyncio.Future) -> None:
        if future.cancelled():
            self.error("produce: cancelled")
        elif future.exception() is not None:
            self.error(f"produce: {type(future.exception()).__name__}", future.exception())
        else:
            self.events += 1
            self.events_total += 1

    def answered(self, seconds: float) -> None:
        self.requests += 1
        self.latencies.append(seconds)
        self.all_latencies.append(seconds)

    @property
    def requests_total(self) -> int:
        """Requests answered in all."""
        return len(self.all_latencies)

    def take(self) -> tuple[int, int, list[float], Counter[str]]:
        """This interval's figures; starts the next interval."""
        taken = self.events, self.requests, self.latencies, self.errors
        self.events, self.requests, self.latencies, self.errors = 0, 0, [], Counter()
        return taken


async def produce_events(load: Load, bootstrap: str, topic: str, events: Iterable[dict],
                         rate: float, seconds: float) -> None:
    """Produce ``rate`` of ``events`` per second for ``seconds`` (acks=all), each stamped
    with the time it is sent: a live stream. (Made ahead of time, the events cost the
    sending no CPU: the simulator's 26 µs per event would be 5% of a core at 2,000/s.)"""
    from streamrec.kafka import producer
    from streamrec.settings import Settings

    sending = producer(Settings(kafka_bootstrap=bootstrap), linger_ms=5)
    await sending.start()
    try:
        started = time.monotonic()
        total = int(seconds * rate)
        for sent, event in enumerate(itertools.islice(events, total)):
            ahead = started + sent / rate - time.monotonic()
            if ahead > 0.005:
                await asyncio.sleep(ahead)
            event["timestamp"] = time.time()  # live stream: the event happens now
            try:
                future = await sending.send(topic, orjson.dumps(event),
                                            key=event["user_id"].encode())
            except Exception as error:  # noqa: BLE001 - every failure is counted by kind
                load.error(f"produce: {type(error).__name__}", error)
                continue
            future.add_done_callback(load.delivered)
        await sending.flush()
    finally:
        await sending.stop()


def expired(timeout: float) -> str:
    return f"request: no answer within {timeout:g} s"


async def run(base: str, path: Callable[[int], str], rate: float, seconds: float,
              timeout: float = 5.0, connections: int = CONNECTIONS,
              headers: Mapping[str, str] | None = None, load: Load | None = None,
              idle_seconds: float = 2.0) -> Load:
    """GET ``path(n)`` for n = 0, 1, ... at ``rate`` per second for ``seconds`` to ``base``
    (with ``headers``), counting into ``load`` (a new one by default).

    Each request leaves at its scheduled time whatever the others are waiting for, as
    requests from many clients do: on the kept-alive connection used last, or on a new
    one when every open connection is waiting for an answer. At most ``connections`` are
    open at once; past that a request waits for one. (A fixed pool of 64 made a saturated
    API look silent: requests queued here for seconds behind the ones the API was still
    answering, while it answered each within its deadline.) A request still unanswered
    ``timeout`` after its scheduled time is an error, wherever it waited. A connection
    idle for ``idle_seconds`` is opened afresh: else a request can meet one the server is
    closing (uvicorn closes idle ones after 5 s), an error that says nothing of the API."""
    url = urlsplit(base)
    result = Load() if load is None else load
    extra = b"".join(f"{name}: {value}\r\n".encode() for name, value in (headers or {}).items())
    pool = _Connections(url.hostname or "127.0.0.1", url.port or 80, connections,
                        idle_seconds)
    head = (b" HTTP/1.1\r\nHost: " + f"{pool.host}:{pool.port}".encode() + b"\r\n" + extra
            + b"\r\n")
    requests: set[asyncio.Task] = set()
    started = time.monotonic()
    try:
        for sent in range(int(seconds * rate)):
            due = started + sent / rate
            ahead = due - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            request = asyncio.create_task(_get(pool, b"GET " + path(sent).encode() + head,
                                               due, timeout, result))
            result.sent += 1
            requests.add(request)
            request.add_done_callback(requests.discard)
        await asyncio.gather(*requests)
    finally:
        for request in requests:
            request.cancel()
        pool.close()
    return result


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class _Connections:
    """Kept-alive connections to one server: the one used last first (so a light load
    reuses few), a new one when none is idle, at most ``limit`` open at once."""

    def __init__(self, host: str, port: int, limit: int, idle_seconds: float) -> None:
        self.host, self.port = host, port
        self.idle_seconds = idle_seconds
        self.slots = asyncio.Semaphore(limit)
        self.idle: list[tuple[Streams, float]] = []  # (streams, last used), last used on top
        self.busy: set[asyncio.StreamWriter] = set()

    async def take(self) -> Streams:
        await self.slots.acquire()
        try:
            while self.idle:
                streams, last_used = self.idle.pop()
                if time.monotonic() - last_used <= self.idle_seconds:
                    self.busy.add(streams[1])
                    return streams
                streams[1].close()  # stale; so is every one below it
            streams = await asyncio.open_connection(self.host, self.port)
        except BaseException:
            self.slots.release()
            raise
        self.busy.add(streams[1])
        return streams

    def give_back(self, streams: Streams, reusable: bool) -> None:
        """``reusable``: the answer was read whole; else the connection's state is
        unknown and it is closed."""
        self.busy.discard(streams[1])
        if reusable:
            self.idle.append((streams, time.monotonic()))
        else:
            streams[1].close()
        self.slots.release()

    def close(self) -> None:
        for streams, _ in self.idle:
            streams[1].close()
        for writer in self.busy:
            writer.close()
        self.idle.clear()
        self.busy.clear()


async def _get(pool: _Connections, request: bytes, due: float, timeout: float,
               result: Load) -> None:
    streams: Streams | None = None
    reusable = False
    try:
        async with asyncio.timeout_at(due + timeout):
            streams = await pool.take()
            reader, writer = streams
            writer.write(request)
            status, body = await _response(reader)
            reusable = True
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as error:
        kind = expired(timeout) if isinstance(error, TimeoutError) else (
            f"request: {type(error).__name__}")
        result.error(kind, error if kind != expired(timeout) else None)
        return
    finally:
        if streams is not None:
            pool.give_back(streams, reusable)
    latency = time.monotonic() - due
    if status == 503:
        result.refusals.append(latency)
    if status != 200:
        result.error(f"HTTP {status}", body[:200])
    elif latency > timeout:
        result.error(expired(timeout))
    elif orjson.loads(body).get("degraded"):
        result.error("degraded answer")
    else:
        result.answered(latency)


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *headers = head[:-4].split(b"\r\n")
    length = None
    for header in headers:
        name, _, value = header.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:  # the API always sends Content-Length; chunked is not spoken here
        raise ValueError("response without Content-Length")
    return int(status_line.split(b" ", 2)[1]), await reader.readexactly(length)
