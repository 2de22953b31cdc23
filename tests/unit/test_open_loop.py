"""The lean open-loop generator against a tiny in-process HTTP server: it counts answers,
errors and expiries the way the soak's httpx generator did."""

from __future__ import annotations

import asyncio

import orjson

from streamrec.measure import load as open_loop


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            break
        path = request.split(b" ")[1]
        if path == b"/slow":
            await asyncio.sleep(0.5)
        status = b"500 Internal Server Error" if path == b"/fail" else b"200 OK"
        body = orjson.dumps({"items": [], "degraded": path == b"/degraded"})
        writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
                     b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()
    writer.close()


def _run(paths: list[str], timeout: float = 5.0, seconds: float = 0.1,
         connections: int = 4) -> tuple[open_loop.Load, int]:
    """The load's figures and how many connections the server accepted."""
    accepted = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await _answer(reader, writer)

    async def main() -> open_loop.Load:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await open_loop.run(f"http://127.0.0.1:{port}", lambda n: paths[n],
                                       rate=len(paths) / seconds, seconds=seconds,
                                       timeout=timeout, connections=connections)

    load = asyncio.run(main())
    return load, accepted


def test_answers_are_timed_and_failures_counted_by_kind():
    result, _ = _run(["/ok"] * 20 + ["/fail", "/degraded"])
    assert len(result.latencies) == 20 and result.sent == 22
    assert all(0 <= seconds < 1 for seconds in result.latencies)
    assert result.errors == {"HTTP 500": 1, "degraded answer": 1}


def test_a_request_unanswered_within_the_timeout_is_an_error_and_the_rest_go_on():
    result, _ = _run(["/slow", "/ok", "/ok", "/ok"], timeout=0.2)
    assert result.errors == {open_loop.expired(0.2): 1}
    assert len(result.latencies) == 3


def test_requests_do_not_queue_behind_slow_ones_while_connections_are_left():
    # Ten slow answers in flight at once: the requests after them leave on time, on
    # connections of their own, and are answered at once.
    result, accepted = _run(["/slow"] * 10 + ["/ok"] * 10, seconds=0.2, connections=100)
    assert len(result.latencies) == 20
    assert sorted(result.latencies)[9] < 0.25  # the ten /ok ones
    assert accepted >= 11


def test_past_the_bound_a_request_waits_for_a_connection_and_the_wait_counts():
    result, accepted = _run(["/slow", "/ok"], seconds=0.01, connections=1)
    assert accepted == 1
    assert len(result.latencies) == 2
    assert min(result.latencies) >= 0.45  # /ok waited for /slow's connection (0.5 s)


def test_a_light_load_reuses_the_connection_used_last():
    result, accepted = _run(["/ok"] * 20, seconds=0.5, connections=100)
    assert len(result.latencies) == 20
    assert accepted == 1
