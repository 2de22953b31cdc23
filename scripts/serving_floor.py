"""The floor under issue 17's serving ratio: how fast one API process answers routes that do
less and less, each against ``/healthz`` on the same process in the same run. Not a test.

Starts an API process as ``streamrec api`` does (uvicorn, ``api.server``'s protocol, the
app of ``create_app()`` with its middleware), plus three routes that exist only here:

- ``/floor/memory``: a ready 10-item list from the process's memory, serialised by orjson
  (what a route costs that reads no state at all);
- ``/floor/redis-async``: the same list read from one Redis key with ``redis.asyncio``
  on the event loop (the least a route costs that serves fresh state from Redis);
- ``/floor/redis-thread``: the same GET with the blocking client in the serving threads,
  as ``GET /recommendations`` reads Redis.

Then wrk drives each route and ``GET /recommendations?model=M`` (random users, as the
bench's script does) for ``--seconds``, ``--rounds`` times in turn, and prints each
route's requests/s and its share of ``/healthz``'s in the same round; ``--open-loop``
then drives each route at fixed rates with the bench's open-loop generator and prints
p50 and p99; ``--processes 2`` serves from two API processes. The STREAMREC_*
variables name Redis, Kafka and the prefix as for any role; the state is what is there
(``scripts/serving_reads.py fill`` makes the bench's)::

    .venv/bin/python scripts/serving_reads.py fill redis://127.0.0.1:46379/0 \\
        --events 200000 --items 100000 --users 20000
    STREAMREC_REDIS_URL=redis://127.0.0.1:46379/0 STREAMREC_REDIS_PREFIX=reads \\
        .venv/bin/python scripts/serving_floor.py --users 20000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# At module level: the routes' annotations are strings (PEP 563) that FastAPI resolves in
# this module's namespace.
from fastapi import Request
from fastapi.responses import Response

FLOOR = ["memory", "redis-async", "redis-thread"]


def floor_key(settings) -> str:
    """The one key the floor's routes read, under the deployment's prefix (removed at
    the end of the run)."""
    from streamrec.storage import keys

    return keys.key(settings.redis_prefix, "floor-list")


def factory():
    """The API's app with the floor's routes (the child process's uvicorn factory)."""
    import orjson
    import redis
    import redis.asyncio as aioredis

    from api.main import create_app
    from streamrec.settings import get_settings

    settings = get_settings()
    url, key = settings.redis_url, floor_key(settings)
    body = orjson.dumps({
        "recommendation_id": "0" * 32, "user_id": "user-0", "placement": "default",
        "variant": "popular", "model": "popular",
        "items": [{"item_id": f"item-{n}", "score": 1.0 / (n + 1)} for n in range(10)]})
    blocking, on_loop = redis.Redis.from_url(url), aioredis.Redis.from_url(url)
    blocking.set(key, body)
    app = create_app()

    @app.get("/floor/memory")
    async def memory(user_id: str) -> Response:
        return Response(body, media_type="application/json")

    @app.get("/floor/redis-async")
    async def redis_async(user_id: str) -> Response:
        return Response(await on_loop.get(key), media_type="application/json")

    @app.get("/floor/redis-thread")
    async def redis_thread(request: Request, user_id: str) -> Response:
        found = await asyncio.get_running_loop().run_in_executor(
            request.app.state.serving_threads, blocking.get, key)
        return Response(found, media_type="application/json")

    return app


def serve(port: int, processes: int) -> None:
    import uvicorn

    # uvicorn's worker processes import the factory by name: from this folder.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, str(Path(__file__).parent))
    uvicorn.run("serving_floor:factory", factory=True, host="127.0.0.1", port=port,
                workers=processes, log_level="warning", access_log=False,
                http="api.server:BoundedHttpToolsProtocol")


SCRIPT = """math.randomseed(7)
request = function()
  return wrk.format("GET", "%(path)s?user_id=user-" .. math.random(0, %(last)d) .. "%(query)s")
end
"""


def wrk(base: str, script: Path, seconds: int, connections: int) -> float:
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), base],
        capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output:
        raise RuntimeError(f"{script.name}: errors\n{output}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))


def open_loop(base: str, path: str, query: str, rate: float, seconds: float,
              users: int) -> str:
    """The bench's open-loop generator (:mod:`streamrec.measure.load`) on one route."""
    import random

    import uvloop

    from streamrec.measure import load
    from streamrec.percentiles import percentiles

    rng = random.Random(7)
    result = uvloop.run(load.run(
        base, lambda _: f"{path}?user_id=user-{rng.randrange(users)}{query}", rate, seconds))
    found = percentiles(result.latencies, (50, 99)) if result.latencies else {}
    return (f"{len(result.latencies)} answered, errors {dict(result.errors) or 'none'}, "
            + ", ".join(f"{name} {1000 * value:.1f} ms" for name, value in found.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=18123)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--models", default="popular,hybrid")
    parser.add_argument("--processes", type=int, default=1, help="API processes")
    parser.add_argument("--open-loop", default="",
                        help="also drive each route open loop at these requests/s "
                             "(comma-separated), as the bench's open-loop stage does")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.processes)
        return
    base = f"http://127.0.0.1:{args.port}"
    from streamrec.kafka import ensure_topics
    from streamrec.settings import get_settings

    settings = get_settings()
    try:  # as `streamrec api` does first, and as there best effort
        asyncio.run(asyncio.wait_for(ensure_topics(settings, "API"), 30))
    except Exception as error:  # noqa: BLE001 - no broker: the impressions wait in the buffer
        print(f"the topics were not checked ({error!r})", file=sys.stderr)
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(args.port),
                               "--processes", str(args.processes)], env=os.environ.copy())
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.2)
        time.sleep(2)  # the refreshers' first reads
        routes = {"healthz": ("/healthz", "")}
        routes.update({name: (f"/floor/{name}", "") for name in FLOOR})
        routes.update({model: ("/recommendations", f"&k=10&model={model}")
                       for model in args.models.split(",") if model})
        folder = Path(tempfile.mkdtemp(prefix="serving-floor-"))
        scripts = {}
        for name, (path, query) in routes.items():
            scripts[name] = folder / f"{name}.lua"
            scripts[name].write_text(SCRIPT % {"path": path, "last": args.users - 1,
                                               "query": query})
        rates: dict[str, list[float]] = {name: [] for name in routes}
        for round_ in range(args.rounds):
            for name in routes:
                rates[name].append(wrk(base, scripts[name], args.seconds, args.connections))
            print(f"round {round_ + 1}: " + ", ".join(
                f"{name} {rates[name][-1]:,.0f}" for name in routes), flush=True)
        print("\n| route | req/s, each round | share of /healthz's, each round |")
        print("|---|---:|---:|")
        for name in routes:
            shares = [rate / ceiling
                      for rate, ceiling in zip(rates[name], rates["healthz"], strict=True)]
            print(f"| {name} | {', '.join(f'{r:,.0f}' for r in rates[name])} | "
                  f"{', '.join(f'{100 * s:.0f}%' for s in shares)} "
                  f"(median {100 * statistics.median(shares):.0f}%) |")
        for rate in [float(r) for r in args.open_loop.split(",") if r]:
            for name, (path, query) in routes.items():
                print(f"open loop {rate:g} req/s, {name}: "
                      f"{open_loop(base, path, query, rate, args.seconds, args.users)}",
                      flush=True)
    finally:
        server.terminate()
        server.wait(30)
        import redis

        redis.Redis.from_url(settings.redis_url).delete(floor_key(settings))


if __name__ == "__main__":
    main()
