"""How much one app flooding the API raises another app's p99, and what an idle app costs.

Runs on real processes: a local Kafka and redis-server (``streamrec.local.services``, or
the ones ``STREAMREC_KAFKA_BOOTSTRAP``/``STREAMREC_REDIS_URL`` name) and ``streamrec api``
as deployed. Two apps are made over HTTP: ``calm`` is read at a steady open-loop rate
(``GET /apps/calm/recommendations``) while ``noisy``

1. sends nothing (the baseline p99),
2. floods ``GET /apps/noisy/popular`` and ``POST /apps/noisy/events`` far above its
   quotas (``requests_per_second``, ``events_per_second``): most of it is answered 429,

and the script prints both p99s of ``calm`` and their ratio. Then it makes ``--idle-apps``
more apps, serves one request of each (so each has a serving context with its
refreshers) and prints the Redis commands per second they add while nobody uses them.

    .venv/bin/python scripts/app_isolation.py --seconds 20 --rate 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamrec.measure import load  # noqa: E402
from streamrec.measure.bench import stack, start_api  # noqa: E402
from streamrec.percentiles import percentiles  # noqa: E402

PLATFORM_KEY = "isolation-platform-key-0001"


def call(base: str, method: str, path: str, body: object = None) -> dict:
    request = urllib.request.Request(
        base + path, method=method, data=None if body is None else orjson.dumps(body),
        headers={"X-API-Key": PLATFORM_KEY, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return orjson.loads(response.read())


async def flood_posts(base: str, path: str, body: bytes, key: str, seconds: float,
                      rate: float, connections: int) -> dict[int, int]:
    """POST ``body`` to ``path`` ``rate`` times a second over ``connections`` kept-alive
    connections (each waits for its answer); returns the answers by status."""
    host, port = base.removeprefix("http://").split(":")
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nX-API-Key: {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + seconds

    async def one(start: float) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        due, every = start, connections / rate
        try:
            while time.monotonic() < deadline:
                due += every
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(head + body)
                status_line = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in status_line.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                await reader.readexactly(length)
                status = int(status_line.split(b" ", 2)[1])
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    now = time.monotonic()
    await asyncio.gather(*(one(now + n / rate) for n in range(connections)))
    return statuses


async def measure(base: str, calm_key: str, rate: float, seconds: float,
                  noisy: tuple[str, str, str] | None = None, flood_rate: float = 0.0,
                  batches_rate: float = 0.0, connections: int = 32
                  ) -> tuple[load.Load, dict[str, dict]]:
    """calm's requests, measured here, while (with ``noisy``) a process of its own floods:
    the generators must not share an event loop, or the flood's would delay calm's."""
    flooding, answers = None, multiprocessing.Queue()
    if noisy is not None:
        flooding = multiprocessing.Process(target=flood, args=(
            answers, base, noisy, seconds, flood_rate, batches_rate, connections))
        flooding.start()
    result = await load.run(base, lambda n: f"/apps/calm/recommendations?user_id=u{n % 1000}",
                            rate, seconds, headers={"X-API-Key": calm_key})
    if flooding is None:
        return result, {}
    floods = answers.get(timeout=seconds + 60)
    flooding.join()
    return result, floods


def flood(answers, base: str, noisy: tuple[str, str, str], seconds: float, flood_rate: float,
          batches_rate: float, connections: int) -> None:
    name, read_key, write_key = noisy
    event = orjson.dumps([{"user_id": f"n{n}", "item_id": f"i{n % 50}", "event_type": "view"}
                          for n in range(10)])

    async def both():
        return await asyncio.gather(
            flood_posts(base, f"/apps/{name}/events", event, write_key, seconds,
                        batches_rate, connections),
            flood_reads(base, name, read_key, seconds, flood_rate, connections))

    writes, reads = asyncio.run(both())
    answers.put({"events": writes, "reads": reads})


async def flood_reads(base: str, name: str, key: str, seconds: float, rate: float,
                      connections: int) -> dict:
    flood = load.Load()
    await load.run(base, lambda n: f"/apps/{name}/popular", rate, seconds,
                   headers={"X-API-Key": key}, connections=connections, load=flood,
                   timeout=2.0)
    answered = {200: flood.requests_total}
    for kind, count in flood.all_errors.items():
        answered[kind] = count
    return answered


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process ``pid`` and its children so far (Linux)."""
    total = 0.0
    for each in [pid, *_children(pid)]:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [int(child) for child in found] + [
            grandchild for child in found for grandchild in _children(int(child))]
    return []


def commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


def commands_per_second(client: redis.Redis, seconds: float) -> float:
    before, started = commands(client), time.monotonic()
    time.sleep(seconds)
    return (commands(client) - before - 1) / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=50.0,
                        help="calm's requests per second (open loop)")
    parser.add_argument("--floods", default="1,3,10",
                        help="noisy's floods, as multiples of its quotas: GET /popular at "
                             "that many times requests_per_second, POST /events (10 events "
                             "each) at that many times events_per_second")
    parser.add_argument("--connections", type=int, default=32,
                        help="noisy's connections per flood (reads, events)")
    parser.add_argument("--requests-quota", type=float, default=50.0)
    parser.add_argument("--events-quota", type=float, default=100.0)
    parser.add_argument("--idle-apps", type=int, default=20)
    args = parser.parse_args()
    with stack() as current:
        base = start_api(current, STREAMREC_API_KEYS=json.dumps({PLATFORM_KEY: "platform"}))
        calm = call(base, "POST", "/admin/apps", {"name": "calm"})["api_keys"]
        noisy = call(base, "POST", "/admin/apps", {"name": "noisy", "settings": {
            "requests_per_second": args.requests_quota,
            "events_per_second": args.events_quota}})["api_keys"]
        asyncio.run(measure(base, calm["read"], args.rate, 3.0))  # warm up
        api = current.roles["api"].pid
        spent = cpu_seconds(api)
        quiet, _ = asyncio.run(measure(base, calm["read"], args.rate, args.seconds))
        quiet_cpu, spent = cpu_seconds(api) - spent, cpu_seconds(api)
        quiet_p99 = percentiles(quiet.all_latencies, (99,))["p99"] * 1000
        print(f"calm at {args.rate:g}/s for {args.seconds:g} s, one API process; noisy's "
              f"quotas {args.requests_quota:g} requests/s, {args.events_quota:g} events/s")
        print(f"  calm alone: p99 {quiet_p99:.2f} ms ({quiet.requests_total} answered, "
              f"errors {dict(quiet.all_errors)}); the API's CPU "
              f"{100 * quiet_cpu / args.seconds:.0f}% of a core")
        for times in (float(m) for m in args.floods.split(",")):
            reads, batches = times * args.requests_quota, times * args.events_quota / 10
            loud, floods = asyncio.run(measure(
                base, calm["read"], args.rate, args.seconds,
                ("noisy", noisy["read"], noisy["write"]), reads, batches, args.connections))
            loud_p99 = percentiles(loud.all_latencies, (99,))["p99"] * 1000
            loud_cpu, spent = cpu_seconds(api) - spent, cpu_seconds(api)
            noisy_requests = sum(count for status, count in [*floods["reads"].items(),
                                                             *floods["events"].items()]
                                 if status in (200, 202, 429, "HTTP 429"))
            per_request = (loud_cpu - quiet_cpu) / max(1, noisy_requests) * 1e6
            print(f"  noisy at {times:g}x its quotas ({reads:g} GET/s, {batches:g} POST "
                  f"/events/s): calm p99 {loud_p99:.2f} ms, {loud_p99 / quiet_p99:.2f}x alone "
                  f"({loud.requests_total} answered, errors {dict(loud.all_errors)}); "
                  f"noisy's reads {floods['reads']}, event batches {floods['events']}; the "
                  f"API's CPU {100 * loud_cpu / args.seconds:.0f}% of a core, "
                  f"{per_request:.0f} us per answered noisy request")

        client = redis.Redis.from_url(current.redis_url)
        time.sleep(2.0)
        before = commands_per_second(client, 10.0)
        for n in range(args.idle_apps):
            made = call(base, "POST", "/admin/apps", {"name": f"idle-{n}"})["api_keys"]
            request = urllib.request.Request(base + f"/apps/idle-{n}/popular",
                                             headers={"X-API-Key": made["read"]})
            with urllib.request.urlopen(request, timeout=10):
                pass
        time.sleep(2.0)
        after = commands_per_second(client, 10.0)
        print(f"Redis commands/s with calm and noisy served: {before:.1f}; after "
              f"{args.idle_apps} more apps were served once and left idle: {after:.1f}; "
              f"per idle app (with its context open): {(after - before) / args.idle_apps:.2f}")


if __name__ == "__main__":
    main()
