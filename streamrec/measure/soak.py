"""``streamrec soak``: hold a steady load on a real stack for a fixed time and watch errors,
latency and memory.

The stack is the one ``streamrec bench`` builds (Kafka and Redis started locally unless the
environment names running ones on this machine, one worker, one API process, topics and a
Redis prefix of the run's own), seeded with a backlog of simulated events. Then, for
``duration`` seconds:

- simulated events are produced into Kafka at ``event_rate`` per second (acks=all);
- ``GET /recommendations`` is sent at ``request_rate`` per second over the simulated users,
  open loop: each request leaves at its scheduled time whether or not earlier ones have
  answered, and its latency counts from that time, so a stall shows as latency instead of
  hiding as fewer requests;
- every ``interval`` seconds one row reports the events acknowledged and applied, the
  requests answered, the errors, p50/p99 latency, and the memory of the worker, the API and
  redis-server (VmRSS from ``/proc``; for Redis also ``INFO memory`` used_memory).

The verdict: no errors at all (non-2xx, degraded answers, exceptions, events not applied by
the end), and flat memory for the worker and the API: the mean of the last quarter of the
samples may exceed the mean of the second quarter (the first is warm-up) by at most
``growth_percent`` of it or ``growth_mib``, whichever is larger. Redis holds the state,
which grows with new users, item pairs and impressions kept for the attribution window; its
memory is shown, not judged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlparse

import orjson
import redis

from streamrec.measure import bench
from streamrec.measure import load as load_generator
from streamrec.measure.load import Load, produce_events
from streamrec.percentiles import percentiles, summarise
from streamrec.sim.simulator import Simulation

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
JUDGED = ("worker", "api")
log = logging.getLogger(__name__)
MEMORY_COLUMNS = ("worker", "api", "redis", "redis_used")


@dataclass(frozen=True)
class SoakConfig:
    duration: float = 300.0
    event_rate: float = 500.0
    request_rate: float = 100.0
    interval: float = 10.0
    users: int = 10_000
    items: int = 5_000
    categories: int = 50
    warmup_events: int = 5_000
    growth_percent: float = 10.0
    growth_mib: float = 20.0
    request_timeout: float = 10.0
    drain_seconds: float = 60.0  # how long the worker may take to apply the last events
    seed: int = 7

    def check(self) -> None:
        if min(self.duration, self.event_rate, self.request_rate, self.interval) <= 0:
            raise ValueError("duration, rates and interval must be positive")
        if self.duration < 4 * self.interval:
            raise ValueError("the memory verdict needs at least 4 rows: "
                             "duration >= 4 x interval")


@dataclass
class Row:
    elapsed: float
    events: int
    applied: int
    requests: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    memory_mib: dict[str, float | None]
    load: float  # the machine's 1-minute load average: others' work shows here


@dataclass
class Trend:
    """Memory of one role: first and last sample, and the warm (second) and last quarter."""

    role: str
    first: float
    last: float
    warm: float
    final: float
    limit: float
    judged: bool

    @property
    def growth(self) -> float:
        return self.final - self.warm

    @property
    def flat(self) -> bool:
        return self.growth <= self.limit


@dataclass
class SoakReport:
    config: SoakConfig
    rows: list[Row]
    errors: Counter[str]
    events_sent: int
    events_applied: int
    requests: int
    latency_ms: dict[str, float]
    trends: list[Trend] = field(default_factory=list)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def passed(self) -> bool:
        return self.error_count == 0 and all(t.flat for t in self.trends if t.judged)


def rss_mib(pid: int | None) -> float | None:
    """Resident memory of a process on this machine (VmRSS), None if it is gone."""
    if pid is None:
        return None
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def trend(role: str, samples: list[float | None], config: SoakConfig) -> Trend | None:
    """Compare the second quarter of the samples with the last (the first is warm-up)."""
    values = [value for value in samples if value is not None]
    quarter = len(values) // 4
    if quarter == 0:
        return None
    warm = statistics.fmean(values[quarter:2 * quarter])
    final = statistics.fmean(values[-quarter:])
    limit = max(warm * config.growth_percent / 100, config.growth_mib)
    return Trend(role, values[0], values[-1], warm, final, limit, role in JUDGED)


def require_local(bootstrap: str | None, redis_url: str | None) -> None:
    """A soak is load: never point it at anything but this machine."""
    hosts = [address.strip().rsplit(":", 1)[0].strip("[]")
             for address in (bootstrap or "127.0.0.1").split(",")]
    hosts.append(urlparse(redis_url or "redis://127.0.0.1").hostname or "")
    foreign = sorted(set(hosts) - LOOPBACK)
    if foreign:
        raise ValueError(f"soak runs against 127.0.0.1 only, not {', '.join(foreign)}")


class Watch:
    """Reads the memory of the roles and of redis-server, and the worker's progress."""

    def __init__(self, current: bench.Stack) -> None:
        self.roles = dict(current.roles)
        self.store = current.store()
        self.client: redis.Redis = self.store.client
        self.redis_pid = self.client.info("server").get("process_id")

    def memory(self) -> dict[str, float | None]:
        memory = {name: rss_mib(process.pid if process.poll() is None else None)
                  for name, process in self.roles.items()}
        memory["redis"] = rss_mib(self.redis_pid)
        memory["redis_used"] = self.client.info("memory")["used_memory"] / 2**20
        return memory

    def exited(self) -> list[str]:
        return [f"{name} exited with {process.returncode}"
                for name, process in self.roles.items() if process.poll() is not None]

    def applied(self) -> int:
        return self.store.events_applied()


async def rows(load: Load, config: SoakConfig, watch: Watch, done: asyncio.Event,
               echo: Callable[[str], None]) -> list[Row]:
    """One row per interval; the last one once the load has ended and drained."""
    taken: list[Row] = []
    started = time.monotonic()
    applied = await asyncio.to_thread(watch.applied)
    count = round(config.duration / config.interval)
    echo(header())
    for number in range(1, count + 1):
        await asyncio.sleep(max(0.0, started + number * config.interval - time.monotonic()))
        if number == count:
            await done.wait()
        events, requests, latencies, errors = load.take()
        for problem in await asyncio.to_thread(watch.exited):
            if not load.all_errors[problem]:  # counted once, when first seen
                load.all_errors[problem] += 1
                errors[problem] += 1
        now_applied = await asyncio.to_thread(watch.applied)
        latency = percentiles(latencies) if latencies else {}
        row = Row(time.monotonic() - started, events, now_applied - applied, requests,
                  sum(errors.values()),
                  1000 * latency["p50"] if latency else None,
                  1000 * latency["p99"] if latency else None,
                  await asyncio.to_thread(watch.memory), os.getloadavg()[0])
        applied = now_applied
        taken.append(row)
        echo(format_row(row))
        if errors:
            echo("         errors: " + ", ".join(f"{kind} x{n}" for kind, n in errors.items()))
    return taken


async def drive(config: SoakConfig, current: bench.Stack, base: str, api_key: str,
                simulation: Simulation, echo: Callable[[str], None]) -> SoakReport:
    load = Load()
    watch = Watch(current)
    applied_before = await asyncio.to_thread(watch.applied)
    done = asyncio.Event()
    rng = random.Random(config.seed)

    def path(_: int) -> str:
        user = simulation.user_id(rng.randrange(simulation.users))
        return f"/recommendations?user_id={quote(user)}&k=10"

    reporting = asyncio.create_task(rows(load, config, watch, done, echo))
    try:
        await asyncio.gather(
            produce_events(load, current.bootstrap, f"{current.prefix}.events",
                           simulation.events(), config.event_rate, config.duration),
            load_generator.run(base, path, config.request_rate, config.duration,
                               config.request_timeout,
                               headers={"X-API-Key": api_key}, load=load))
    except BaseException:
        reporting.cancel()
        raise
    done.set()
    taken = await reporting
    applied = await _wait_applied(watch, applied_before + load.events_total,
                                  config.drain_seconds) - applied_before
    if applied < load.events_total:
        load.all_errors["worker: events not applied by the end"] += load.events_total - applied
    report = SoakReport(config, taken, load.all_errors, load.events_total, applied,
                        load.requests_total, _latency_ms(load.all_latencies))
    for role in MEMORY_COLUMNS:
        found = trend(role, [row.memory_mib.get(role) for row in taken], config)
        if found is not None:
            report.trends.append(found)
    return report


async def _wait_applied(watch: Watch, target: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        applied = await asyncio.to_thread(watch.applied)
        if applied >= target or time.monotonic() > deadline:
            return applied
        await asyncio.sleep(0.5)


def _latency_ms(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    return {name: 1000 * value for name, value in summarise(seconds).items()}


def run(config: SoakConfig, echo: Callable[[str], None], run_dir: Path | None = None
        ) -> SoakReport:
    """Build the stack, seed it, hold the load, and report (``echo`` gets every line)."""
    config.check()
    require_local(os.environ.get("STREAMREC_KAFKA_BOOTSTRAP"),
                  os.environ.get("STREAMREC_REDIS_URL"))
    simulation = Simulation(users=config.users, items=config.items,
                            categories=config.categories, seed=config.seed)
    with bench.stack(run_dir) as current:
        echo(f"soak: seeding {config.warmup_events:,} events and starting one worker ...")
        bench.ingest(current, simulation, config.warmup_events)
        # The API runs with a key, as in production: the check is part of every request.
        api_key = secrets.token_urlsafe(24)
        base = bench.start_api(current, STREAMREC_API_KEYS=orjson.dumps({api_key: "read"})
                               .decode())
        echo(f"soak: {config.duration:.0f} s, {config.event_rate:g} events/s into Kafka, "
             f"{config.request_rate:g} GET /recommendations/s (open loop) over "
             f"{config.users:,} users; logs in {current.run_dir}")
        return asyncio.run(drive(config, current, base, api_key, simulation, echo))


def header() -> str:
    return (f"{'elapsed s':>9} {'events':>7} {'applied':>7} {'requests':>8} {'errors':>6} "
            f"{'p50 ms':>7} {'p99 ms':>7} {'worker MiB':>10} {'API MiB':>8} "
            f"{'redis MiB':>9} {'used MiB':>8} {'load':>5}")


def format_row(row: Row) -> str:
    def number(value: float | None, width: int) -> str:
        return f"{'-':>{width}}" if value is None else f"{value:>{width}.1f}"

    memory = row.memory_mib
    return (f"{row.elapsed:>9.1f} {row.events:>7} {row.applied:>7} {row.requests:>8} "
            f"{row.errors:>6} {number(row.p50_ms, 7)} {number(row.p99_ms, 7)} "
            f"{number(memory.get('worker'), 10)} {number(memory.get('api'), 8)} "
            f"{number(memory.get('redis'), 9)} {number(memory.get('redis_used'), 8)} "
            f"{row.load:>5.1f}")


def summary(report: SoakReport) -> list[str]:
    latency = report.latency_ms
    config = report.config
    loads = [row.load for row in report.rows]
    lines = [
        f"events: {report.events_sent:,} acknowledged by Kafka, {report.events_applied:,} "
        f"applied by the worker",
        f"requests: {report.requests:,} answered"
        + (f"; latency ms p50 {latency['p50']:.1f}, p99 {latency['p99']:.1f}, "
           f"max {latency['max']:.1f}" if latency else ""),
        *([f"machine load (1-minute average) min {min(loads):.1f}, mean "
           f"{statistics.fmean(loads):.1f}, max {max(loads):.1f} on {os.cpu_count()} CPUs"]
          if loads else []),
        f"errors: {report.error_count}"
        + "".join(f"\n  {kind}: {n}" for kind, n in report.errors.most_common()),
        f"memory, MiB (first, last; mean of the 2nd quarter -> of the last; flat: growth "
        f"<= max({config.growth_percent:g}%, {config.growth_mib:g} MiB)):",
    ]
    names = {"worker": "worker RSS", "api": "API RSS", "redis": "redis RSS",
             "redis_used": "redis used_memory"}
    for t in report.trends:
        verdict = ("flat" if t.flat else "GROWING") if t.judged else "state, not judged"
        lines.append(f"  {names[t.role]:<18} {t.first:7.1f}, {t.last:7.1f}; {t.warm:7.1f} -> "
                     f"{t.final:7.1f} ({t.growth:+.1f}, limit {t.limit:.1f}): {verdict}")
    reasons = [f"{report.error_count} errors"] if report.error_count else []
    reasons += [f"{names[t.role]} grows" for t in report.trends if t.judged and not t.flat]
    lines.append("verdict: PASS" if report.passed else "verdict: FAIL (" + "; ".join(reasons)
                 + ")")
    return lines


def as_json(report: SoakReport) -> bytes:
    return orjson.dumps({
        "config": vars(report.config), "rows": [vars(row) for row in report.rows],
        "errors": dict(report.errors), "events_sent": report.events_sent,
        "events_applied": report.events_applied, "requests": report.requests,
        "latency_ms": report.latency_ms,
        "memory_mib": {t.role: {**vars(t), "growth": t.growth, "flat": t.flat}
                       for t in report.trends},
        "passed": report.passed,
    }, option=orjson.OPT_INDENT_2)

