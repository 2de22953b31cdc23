"""Hostile and careless clients against a real ``streamrec api`` process (uvicorn with
httptools, as deployed): stream clients that vanish mid-stream, huge or endless request
heads, slow bodies, connection floods. None of them may freeze, slow down or bloat the
process for everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import urllib.request
from urllib.parse import urlsplit

import orjson

from tests.api.conftest import api_process


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return orjson.loads(response.read())


async def _stream_events(url: str, count: int, timeout: float) -> list[dict]:
    """The first ``count`` snapshots of a fresh /metrics/stream client."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(b"GET /metrics/stream HTTP/1.1\r\nHost: test\r\n\r\n")
        snapshots = []
        async with asyncio.timeout(timeout):
            while len(snapshots) < count:
                line = await reader.readline()
                if not line:
                    break
                if line.startswith(b"data: "):
                    snapshots.append(orjson.loads(line[len(b"data: "):]))
        return snapshots
    finally:
        writer.close()


async def _vanishing_stream_clients(url: str, clients: int, seed: int) -> int:
    """``clients`` stream clients that each leave at a random moment (before the answer,
    mid-event, between events), half politely, half by resetting the connection."""
    parts = urlsplit(url)
    rng = random.Random(seed)
    received = 0

    async def one(number: int) -> None:
        nonlocal received
        await asyncio.sleep(rng.uniform(0, 1.0))
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(b"GET /metrics/stream HTTP/1.1\r\nHost: test\r\n\r\n")
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(rng.uniform(0, 3.0)):
                while chunk := await reader.read(rng.choice((1, 64, 4096))):
                    received += len(chunk)
        if number % 2:
            writer.transport.abort()  # gone without a goodbye
        else:
            writer.close()

    await asyncio.gather(*(one(n) for n in range(clients)))
    return received


def test_stream_clients_leaving_at_random_never_freeze_the_metrics(services, worker_env):
    with api_process(services, worker_env, "api-stream-churn",
                     max_stream_clients="200") as (url, _, log_path):
        for round_number in range(3):
            assert asyncio.run(_vanishing_stream_clients(url, 100, seed=round_number)) > 0
        first = _get_json(f"{url}/metrics/snapshot")["time"]
        time.sleep(2.5)
        second = _get_json(f"{url}/metrics/snapshot")["time"]
        assert second > first  # the publisher goes on
        assert abs(time.time() - second) < 3
        snapshots = asyncio.run(_stream_events(url, 3, timeout=10))
        assert len(snapshots) == 3  # a new client gets a stream, not one event and a hang
        assert snapshots[0]["time"] < snapshots[-1]["time"]
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
            assert b"streamrec_system" in response.read()
    log = log_path.read_text()
    assert "Traceback" not in log and "Lock is not acquired" not in log, log[-3000:]
