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


def _run(paths: list[str], timeout: float = 5.0) -> open_loop.Load:
    async def main() -> open_loop.Load:
        server = await asyncio.start_server(_answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await open_loop.run(f"http://127.0.0.1:{port}", lambda n: paths[n],
                                       rate=len(paths) / 0.1, seconds=0.1, timeout=timeout,
                                       connections=4)

    return asyncio.run(main())


def test_answers_are_timed_and_failures_counted_by_kind():
    result = _run(["/ok"] * 20 + ["/fail", "/degraded"])
    assert len(result.latencies) == 20
    assert all(0 <= seconds < 1 for seconds in result.latencies)
    assert result.errors == {"HTTP 500": 1, "degraded answer": 1}


def test_a_request_unanswered_within_the_timeout_is_an_error_and_the_rest_go_on():
    result = _run(["/slow", "/ok", "/ok", "/ok"], timeout=0.2)
    assert result.errors == {open_loop.expired(0.2): 1}
    assert len(result.latencies) == 3
