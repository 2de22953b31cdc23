"""Open-loop GET load lean enough to share two cores with the API it measures.

Every request leaves at its scheduled time and its latency counts from then, so queueing
shows. httpx cost the generator more CPU per request than the API spent answering it,
so at a few hundred requests/s the generator, not the API, set the figures. This speaks
HTTP/1.1 over kept-alive asyncio streams and reads only the status line, Content-Length
and the body's ``degraded``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson


@dataclass
class OpenLoopResult:
    latencies: list[float] = field(default_factory=list)  # seconds, of the answered
    errors: Counter[str] = field(default_factory=Counter)


def expired(timeout: float) -> str:
    return f"request: no answer within {timeout:g} s"


async def run(base: str, path: Callable[[int], str], rate: float, seconds: float,
              timeout: float = 5.0, connections: int = 64) -> OpenLoopResult:
    """GET ``path(n)`` for n = 0, 1, ... at ``rate`` per second for ``seconds``, over
    ``connections`` kept-alive connections to ``base``. A request still unanswered
    ``timeout`` after its scheduled time is an error, wherever it waited."""
    url = urlsplit(base)
    result = OpenLoopResult()
    backlog: asyncio.Queue[tuple[bytes, float] | None] = asyncio.Queue()
    senders = [asyncio.create_task(_send(url.hostname or "127.0.0.1", url.port or 80, backlog,
                                         timeout, result))
               for _ in range(connections)]
    started = time.monotonic()
    for sent in range(int(seconds * rate)):
        due = started + sent / rate
        ahead = due - time.monotonic()
        if ahead > 0:
            await asyncio.sleep(ahead)
        backlog.put_nowait((path(sent).encode(), due))
    for _ in senders:
        backlog.put_nowait(None)
    await asyncio.gather(*senders)
    return result


async def _send(host: str, port: int, backlog: asyncio.Queue[tuple[bytes, float] | None],
                timeout: float, result: OpenLoopResult) -> None:
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    head = b" HTTP/1.1\r\nHost: " + f"{host}:{port}".encode() + b"\r\n\r\n"
    while (job := await backlog.get()) is not None:
        path, due = job
        left = due + timeout - time.monotonic()
        if left <= 0:
            result.errors[expired(timeout)] += 1
            continue
        try:
            async with asyncio.timeout(left):
                if streams is None:
                    streams = await asyncio.open_connection(host, port)
                reader, writer = streams
                writer.write(b"GET " + path + head)
                status, body = await _response(reader)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as error:
            # The connection's state is unknown now: start a new one.
            if streams is not None:
                streams[1].close()
                streams = None
            kind = expired(timeout) if isinstance(error, TimeoutError) else (
                f"request: {type(error).__name__}")
            result.errors[kind] += 1
            continue
        latency = time.monotonic() - due
        if status != 200:
            result.errors[f"HTTP {status}"] += 1
        elif latency > timeout:
            result.errors[expired(timeout)] += 1
        elif orjson.loads(body).get("degraded"):
            result.errors["degraded answer"] += 1
        else:
            result.latencies.append(latency)
    if streams is not None:
        streams[1].close()


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
