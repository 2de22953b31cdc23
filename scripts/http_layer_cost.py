"""What the API's HTTP layer costs per request, without sockets or a load generator: the
app of ``create_app()`` with its lifespan, called through ASGI one request after another
against a running stack (the STREAMREC_* variables name its Redis, Kafka and prefix, as
for any role). Not a test; run it from each checkout being compared, alternating.

    .venv/bin/python scripts/http_layer_cost.py --routes healthz,popular,hybrid
    .venv/bin/python scripts/http_layer_cost.py --calls       # event-loop calls per request
    PYTHONPATH=/tmp/base .venv/bin/python scripts/http_layer_cost.py   # the code before

Prints, per route (``healthz``, or a model name for ``GET /recommendations?model=``), the
CPU and wall time per request of the whole process (serving threads included), or with
``--calls`` the Python function calls per request on the event loop (cProfile: it sees
only the thread it runs on), which does not move with the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import random
import time


async def measure(routes: list[str], requests: int, users: int, calls: bool) -> dict:
    from api.main import create_app

    app = create_app()
    rng = random.Random(7)

    async def call(path: str, query: str) -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
                 "query_string": query.encode(), "root_path": "",
                 "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 1),
                 "server": ("127.0.0.1", 80), "state": {}}
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        await app(scope, receive, send)
        if sent[0]["status"] != 200:
            raise RuntimeError(f"{path}?{query}: {sent[0]['status']} {sent[-1].get('body')}")

    def target(route: str) -> tuple[str, str]:
        if route == "healthz":
            return "/healthz", ""
        return "/recommendations", f"user_id=user-{rng.randrange(users)}&k=10&model={route}"

    figures: dict = {}
    async with app.router.lifespan_context(app):
        await asyncio.sleep(2)  # the refreshers' first reads
        for route in routes:
            for _ in range(min(200, requests)):  # warm up
                await call(*target(route))
            if calls:
                profile = cProfile.Profile()
                profile.enable()
                for _ in range(requests):
                    await call(*target(route))
                profile.disable()
                figures[route] = {"calls_per_request":
                                  round(pstats.Stats(profile).total_calls / requests, 1)}
                continue
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(requests):
                await call(*target(route))
            figures[route] = {
                "cpu_ms": round(1000 * (time.process_time() - cpu) / requests, 3),
                "wall_ms": round(1000 * (time.perf_counter() - wall) / requests, 3)}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routes", default="healthz,popular,hybrid")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--users", type=int, default=5000, help="user-0 .. user-N-1")
    parser.add_argument("--calls", action="store_true",
                        help="count event-loop function calls instead of timing")
    options = parser.parse_args()
    print(json.dumps(asyncio.run(measure(options.routes.split(","), options.requests,
                                         options.users, options.calls))))


if __name__ == "__main__":
    main()
