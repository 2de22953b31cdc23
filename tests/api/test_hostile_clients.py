"""Hostile and careless clients against a real ``streamrec api`` process (uvicorn with
httptools, as deployed): stream clients that vanish mid-stream, huge or endless request
heads, slow bodies, connection floods. None of them may freeze, slow down or bloat the
process for everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
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


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _healthz_seconds(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(f"{url}/healthz", timeout=30) as response:
        assert response.status == 200
    return time.perf_counter() - started


async def _exchange(url: str, head: bytes, body_parts=(), pause: float = 0.0,
                    timeout: float = 20.0) -> tuple[bytes, float]:
    """Send ``head`` (then each of ``body_parts`` ``pause`` seconds apart) and read until
    the server closes; returns what it answered and after how many seconds it closed."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    started = time.perf_counter()
    answer = b""

    async def read() -> None:  # meanwhile: a server that closes may reset what is unread
        nonlocal answer
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                answer += chunk

    reading = asyncio.create_task(read())
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(head)
            for part in body_parts:
                await asyncio.sleep(pause)
                if reading.done():
                    break
                writer.write(part)
                await writer.drain()
        async with asyncio.timeout(timeout):
            await reading
        return answer, time.perf_counter() - started
    finally:
        reading.cancel()
        writer.transport.abort()


async def _huge_heads(url: str, connections: int, mebibytes: int) -> list[bytes]:
    """``connections`` clients each streaming a ``mebibytes`` header, as fast as the
    server reads; returns each one's answer."""
    head = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: "
    parts = [b"a" * 1_048_576] * mebibytes + [b"\r\n\r\n"]
    answers = await asyncio.gather(*(_exchange(url, head, parts) for _ in range(connections)))
    return [answer for answer, _ in answers]


def _status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


def test_oversized_heads_are_refused_quickly_without_memory_or_latency_cost(services,
                                                                            worker_env):
    with api_process(services, worker_env, "api-huge-heads") as (url, process, log_path):
        # One 8 MB header on an open route and on a keyed one: refused, not answered 200.
        for path in (b"/healthz", b"/recommendations?user_id=ann"):
            head = b"GET " + path + b" HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 8_000_000
            answer, seconds = asyncio.run(_exchange(url, head + b"\r\n\r\n"))
            assert _status(answer) == 431, answer[:300]
            assert b"header" in answer
            print(f"8 MB header on {path.decode()}: 431 after {seconds:.3f} s")
        # Too many headers, each small.
        many = b"".join(b"X-H%d: v\r\n" % n for n in range(300))
        answer, _ = asyncio.run(_exchange(url, b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + many
                                          + b"\r\n"))
        assert _status(answer) == 431 and b"headers" in answer

        before = _rss_mib(process.pid)
        attack = asyncio.new_event_loop()
        answers: list[bytes] = []
        thread = threading.Thread(target=lambda: answers.extend(
            attack.run_until_complete(_huge_heads(url, 10, 50))))
        thread.start()
        latencies = []
        while thread.is_alive() and len(latencies) < 50:
            latencies.append(_healthz_seconds(url))
            time.sleep(0.05)
        thread.join(120)
        attack.close()
        after = _rss_mib(process.pid)
        print(f"10 x 50 MiB headers: RSS {before:.0f} -> {after:.0f} MiB; /healthz meanwhile "
              f"max {max(latencies):.3f} s over {len(latencies)} calls")
        assert [_status(answer) for answer in answers] == [431] * 10
        assert after - before < 50
        assert max(latencies) < 1.0
    assert "Traceback" not in log_path.read_text()


def test_slow_heads_and_slow_bodies_get_408_and_a_closed_connection(services, worker_env):
    with api_process(services, worker_env, "api-slow", header_timeout_seconds="1",
                     body_timeout_seconds="1") as (url, _, log_path):
        # A head that never ends (slowloris): 408 once the deadline passes.
        answer, seconds = asyncio.run(_exchange(
            url, b"GET /healthz HTTP/1.1\r\nHost: t\r\n", [b"X-A: 1\r\n"] * 5, pause=0.4))
        assert _status(answer) == 408 and 0.9 < seconds < 10, (answer, seconds)
        # A connection that never says anything is closed.
        answer, seconds = asyncio.run(_exchange(url, b""))
        assert answer == b"" and seconds < 10
        # A body announced and sent too slowly, keyed route or not.
        head = (b"POST /events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Content-Length: 400\r\n\r\n")
        answer, seconds = asyncio.run(_exchange(url, head, [b"[" + b" " * 9] * 8, pause=0.3))
        assert _status(answer) == 408 and 0.9 < seconds < 10, (answer, seconds)
        assert b"body" in answer
        assert _healthz_seconds(url) < 1.0
    assert "Traceback" not in log_path.read_text()


def test_connections_over_the_limit_get_503_and_the_server_recovers(services, worker_env):
    with api_process(services, worker_env, "api-connections", max_connections="20",
                     header_timeout_seconds="3") as (url, _, log_path):
        async def flood() -> bytes:
            parts = urlsplit(url)
            idle = [await asyncio.open_connection(parts.hostname, parts.port)
                    for _ in range(20)]
            try:
                await asyncio.sleep(0.3)
                answer, _ = await _exchange(url, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
                                            timeout=5)
                return answer
            finally:
                for _, writer in idle:
                    writer.transport.abort()

        answer = asyncio.run(flood())
        assert _status(answer) == 503 and b"connections" in answer
        time.sleep(0.3)
        assert _healthz_seconds(url) < 1.0  # the idle ones gone, it answers again
    assert "Traceback" not in log_path.read_text()
