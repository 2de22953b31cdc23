"""The load-shedding middleware on a small Starlette app (the real processes, with a
stopped redis-server, are in tests/api/test_shedding.py)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import orjson
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.shedding import LoadShedding

DEADLINE = 0.2


def build(release: threading.Event, max_in_flight: int = 4):
    def blocking(request):  # a sync route: Starlette runs it in its thread pool
        release.wait(30)
        return JSONResponse({"late": True})

    async def quick(request):
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/blocking", blocking, methods=["GET", "POST"]),
                            Route("/quick", quick), Route("/healthz", blocking)])
    return LoadShedding(app, max_in_flight, DEADLINE, retry_after_seconds=3)


def request(app, path: str, method: str = "GET", query: bytes = b""
            ) -> tuple[asyncio.Task, list[dict]]:
    """The request under way, and the messages sent for it so far."""
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "query_string": query, "headers": [], "root_path": "", "scheme": "http",
             "server": ("test", 80), "client": ("test", 1), "http_version": "1.1",
             "app": app.app}
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    return asyncio.create_task(app(scope, receive, send)), sent


def answer(sent: list[dict]) -> tuple[int, dict, dict] | None:
    """Status, headers and JSON body once the whole answer is sent, else None."""
    if not sent or sent[-1]["type"] != "http.response.body":
        return None
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), orjson.loads(body)


async def answered(sent: list[dict], timeout: float = 10.0) -> tuple[int, dict, dict]:
    for _ in range(int(timeout / 0.01)):
        if answer(sent) is not None:
            return answer(sent)
        await asyncio.sleep(0.01)
    raise AssertionError("no answer")


async def call(app, path: str, method: str = "GET") -> tuple[int, dict, dict]:
    task, sent = request(app, path, method)
    await task
    return answer(sent)


def test_a_read_past_its_deadline_is_answered_503_and_its_late_answer_dropped():
    async def scenario():
        release = threading.Event()
        app = build(release)
        handler, sent = request(app, "/blocking")
        status, headers, body = await answered(sent)
        # The handler's thread is still blocked, yet the answer is out ...
        assert not release.is_set()
        assert status == 503 and headers[b"retry-after"] == b"3"
        assert "request_deadline_seconds" in body["detail"]
        # ... and the handler was cancelled: its place is free (the thread is bounded by
        # its pool, and runs on).
        await handler
        assert app.in_flight == 0
        release.set()
        await asyncio.sleep(0.1)
        assert len(sent) == 2  # its late answer, if any, was dropped

    asyncio.run(scenario())


def test_work_still_queued_in_a_pool_at_the_deadline_is_dropped():
    async def scenario():
        release, ran = threading.Event(), []
        pool = ThreadPoolExecutor(1)

        def rank(name: str) -> str:
            ran.append(name)
            release.wait(30)
            return name

        async def ranked(request):
            name = request.query_params["name"]
            loop = asyncio.get_running_loop()
            return JSONResponse({"name": await loop.run_in_executor(pool, rank, name)})

        app = LoadShedding(Starlette(routes=[Route("/ranked", ranked)]), 4, DEADLINE, 3)
        first, first_sent = request(app, "/ranked", query=b"name=first")
        await asyncio.sleep(0.05)
        second, second_sent = request(app, "/ranked", query=b"name=second")
        assert (await answered(first_sent))[0] == 503
        assert (await answered(second_sent))[0] == 503
        release.set()
        await asyncio.gather(first, second)
        pool.shutdown(wait=True)
        assert ran == ["first"]  # the second waited behind it, and was never served late

    asyncio.run(scenario())


def test_the_bound_refuses_at_once_and_counts_abandoned_handlers_until_they_end():
    async def scenario():
        release = threading.Event()
        app = build(release, max_in_flight=2)
        held = [asyncio.create_task(call(app, "/blocking", "POST")) for _ in range(2)]
        while app.in_flight < 2:
            await asyncio.sleep(0.01)
        status, headers, body = await call(app, "/quick")
        assert status == 503 and headers[b"retry-after"] == b"3"
        assert "max_requests_in_flight" in body["detail"]
        # Operations routes are never shed.
        release.set()
        assert (await call(app, "/healthz"))[0] == 200
        # Writes are not cut by the deadline: they end with their handler.
        assert [(await task)[0] for task in held] == [200, 200]
        assert app.in_flight == 0
        assert (await call(app, "/quick"))[0] == 200

    asyncio.run(scenario())
