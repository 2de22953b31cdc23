"""The body limit on plain ASGI messages: a declared Content-Length over the limit is
refused before the app runs, a streamed body as soon as its bytes pass the limit."""

from __future__ import annotations

import asyncio

import orjson
from fastapi import FastAPI, Request

from api.limits import BodyLimit

LIMIT = 100


def _app() -> tuple[BodyLimit, list[bytes]]:
    app = FastAPI()
    bodies: list[bytes] = []

    @app.post("/echo")
    async def echo(request: Request) -> dict:
        bodies.append(await request.body())
        return {"length": len(bodies[-1])}

    return BodyLimit(app, LIMIT), bodies


def _call(app, chunks: list[bytes], headers: list[tuple[bytes, bytes]]):
    """Send ``chunks`` as one request; returns (status, body, chunks the app pulled)."""
    pending = list(chunks)
    pulled = 0
    sent: list[dict] = []

    async def receive():
        nonlocal pulled
        if not pending:
            return {"type": "http.disconnect"}
        pulled += 1
        return {"type": "http.request", "body": pending.pop(0), "more_body": bool(pending)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/echo", "raw_path": b"/echo",
             "query_string": b"", "headers": headers, "http_version": "1.1",
             "scheme": "http", "server": ("testserver", 80), "client": ("test", 1),
             "root_path": ""}
    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], orjson.loads(body), pulled


def test_a_declared_length_over_the_limit_is_refused_before_the_app_reads_anything():
    app, bodies = _app()
    status, body, pulled = _call(app, [b"x" * (LIMIT + 1)],
                                 [(b"content-length", str(LIMIT + 1).encode())])
    assert status == 413 and body["detail"].startswith("body:") and str(LIMIT) in body["detail"]
    assert pulled == 0 and bodies == []


def test_a_streamed_body_is_cut_off_once_it_passes_the_limit():
    app, bodies = _app()
    status, body, pulled = _call(app, [b"x" * 40] * 10, [])  # 400 bytes, no length declared
    assert status == 413 and body["detail"].startswith("body:")
    assert pulled == 3 and bodies == []  # 120 bytes read: the other seven chunks never were


def test_a_body_at_the_limit_goes_through():
    app, bodies = _app()
    status, body, _ = _call(app, [b"x" * 60, b"x" * 40], [])
    assert status == 200 and body == {"length": LIMIT} and bodies == [b"x" * LIMIT]
