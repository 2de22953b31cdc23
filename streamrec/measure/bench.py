"""``streamrec bench``: measure the real pipeline on this machine and print the figures.

Every stage runs as it does in ``make demo``: a real Kafka broker and redis-server (local
processes unless ``STREAMREC_KAFKA_BOOTSTRAP``/``STREAMREC_REDIS_URL`` are set), the worker
and the API as separate processes. Each run uses its own topics, consumer group and Redis
prefix, so runs never see each other's state.

- ingest: a backlog of simulated events is produced first, then one worker is started;
  events/s is measured from its first applied batch to its last (startup excluded), or
  from the end of ``--warm-up`` events (an older state, where an event costs more);
- freshness: with the worker caught up, a new user's event is produced and
  ``GET /recommendations`` is asked until it reflects the event, probes on a fixed schedule;
- serving: wrk drives ``GET /recommendations`` over random users for a fixed duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from streamrec import kafka, shutdown
from streamrec.local.supervisor import Supervisor
from streamrec.measure import cpu
from streamrec.measure.load import Load, produce_events
from streamrec.percentiles import percentiles
from streamrec.settings import Settings
from streamrec.sim.simulator import Simulation
from streamrec.storage import keys
from streamrec.storage.state_store import RedisStore
from streamrec.wiring import Wiring


@dataclass
class Stack:
    """Kafka, Redis and the per-run names every role of one benchmark run shares; its roles
    run under the supervisor every local stack uses."""

    bootstrap: str
    redis_url: str
    run_dir: Path
    supervisor: Supervisor
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    cluster: bool = False  # redis_url names a node of a Redis Cluster

    @property
    def prefix(self) -> str:
        return f"bench-{self.run_id}"

    @property
    def roles(self) -> dict[str, subprocess.Popen]:
        return self.supervisor.roles

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, **_settings_env(self), **extra}

    def settings(self) -> Settings:
        """The run's settings, as its roles read them (the rest from the environment)."""
        return Settings(**{name.removeprefix("STREAMREC_").lower(): value
                           for name, value in _settings_env(self).items()})

    def spawn(self, name: str, argv: list[str], **extra: str) -> subprocess.Popen:
        return self.supervisor.spawn(name, argv, self.env(**extra))

    def store(self) -> RedisStore:
        return Wiring.connect(self.settings()).store()

    def stop_roles(self) -> None:
        self.supervisor.stop_roles()


def _settings_env(current: Stack) -> dict[str, str]:
    """The per-run names, as the STREAMREC_* variables of the run's roles."""
    return {
        "STREAMREC_KAFKA_BOOTSTRAP": current.bootstrap,
        "STREAMREC_REDIS_URL": current.redis_url,
        "STREAMREC_REDIS_PREFIX": current.prefix,
        "STREAMREC_WORKER_ID": current.prefix,
        "STREAMREC_EVENTS_TOPIC": f"{current.prefix}.events",
        "STREAMREC_DEAD_LETTER_TOPIC": f"{current.prefix}.events.dlq",
        "STREAMREC_ITEMS_TOPIC": f"{current.prefix}.items",
        "STREAMREC_USERS_TOPIC": f"{current.prefix}.users",
        "STREAMREC_REDIS_CLUSTER": "true" if current.cluster else "false",
    }


@contextlib.contextmanager
def stack(run_dir: Path | None = None, cluster: bool = False) -> Iterator[Stack]:
    """Local Kafka and Redis (with ``cluster``, a three-node Redis Cluster) for the run
    unless the environment names running ones."""
    from streamrec.local.services import LocalKafka, LocalRedis, LocalRedisCluster

    base = Path(tempfile.mkdtemp(prefix="streamrec-bench-")) if run_dir is None else run_dir
    base.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(base)
    previous = _stop_on_signals(supervisor, base if run_dir is None else None)
    try:
        redis_url = os.environ.get("STREAMREC_REDIS_URL")
        if redis_url is None:
            server = LocalRedisCluster(base / "redis") if cluster else LocalRedis(base / "redis")
            supervisor.services.append(server)  # before it starts: a failed start stops it
            redis_url = server.start().url
        bootstrap = os.environ.get("STREAMREC_KAFKA_BOOTSTRAP")
        if bootstrap is None:
            kafka = LocalKafka(base / "kafka")
            supervisor.services.append(kafka)
            bootstrap = kafka.start().bootstrap
        yield Stack(bootstrap, redis_url, base, supervisor, cluster=cluster)
    finally:
        supervisor.stop()
        if run_dir is None:
            shutil.rmtree(base, ignore_errors=True)
        for number, handler in previous.items():
            signal.signal(number, handler)


def _stop_on_signals(supervisor: Supervisor, temporary: Path | None
                     ) -> dict[int, Any]:
    """SIGTERM or SIGINT (Ctrl-C) at any stage stops every process the run started (roles,
    then the Kafka and Redis it started) and exits with 128 + the signal, removing the
    ``temporary`` run directory. The stop happens in the handler itself: an exception
    raised there can wait for good in a stage's event loop (an aiokafka producer still
    flushing to a broker it measures), and the run's services would outlive it. Returns
    the handlers it replaced (none outside the main thread, where handlers cannot be set).
    """
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(number: int, frame: FrameType | None) -> None:
        for each in (signal.SIGTERM, signal.SIGINT):
            signal.signal(each, signal.SIG_IGN)  # a second signal must not cut the stop
        shutdown.exit_within(shutdown.UP_STOP_SECONDS)  # the stop below is bounded too
        sys.stderr.write(f"bench: {signal.Signals(number).name}; stopping what it started\n")
        supervisor.stop()
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
        os._exit(128 + number)

    return {number: signal.signal(number, stop) for number in (signal.SIGTERM, signal.SIGINT)}


def cover_catalog(simulation: Simulation, start: float) -> list[dict]:
    """One view of every item by a random user, so every item has factors."""
    users = simulation.users
    return [{"user_id": simulation.user_id((n * 7919) % users), "item_id": item,
             "event_type": "view", "timestamp": start + n * 1e-3}
            for n, item in enumerate(simulation.catalog.item_ids)]


async def produce_backlog(current: Stack, simulation: Simulation, count: int,
                          cover: bool = False) -> float:
    """Produce the catalog and ``count`` events (after one view of every item when
    ``cover``); returns the producer's events/s."""
    from streamrec.kafka import ensure_topics

    settings = current.settings()
    await ensure_topics(settings)
    producer = kafka.producer(settings, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    try:
        for item in simulation.catalog.items():
            await producer.send(settings.items_topic, orjson.dumps(item),
                                key=item["item_id"].encode())
        started = time.perf_counter()
        now = time.time()
        covering = cover_catalog(simulation, now - count * 0.02) if cover else []
        for event in [*covering, *simulation.events(count - len(covering),
                                                    start=now - count * 0.01)]:
            await producer.send(settings.events_topic, orjson.dumps(event),
                                key=event["user_id"].encode())
        await producer.flush()
        return count / (time.perf_counter() - started)
    finally:
        await producer.stop()


@dataclass
class IngestResult:
    events: int  # the timed events
    produce_per_second: float
    apply_per_second: float
    startup_seconds: float  # from starting the workers to the first timed event applied
    warm_up: int = 0  # events applied before the timed ones (not timed)
    # CPU per timed event and share of a core, per process (cpu.per_event): where the events
    # spend the machine. Only the processes /proc shows; local services only.
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)


# The rows of IngestResult.cpu: the learning process is the worker's processes but its main.
WORKER_MAIN, LEARNING = "worker main process", "learning process"


def _cpu_roles(current: Stack, workers: list[subprocess.Popen]) -> dict[str, list[int]]:
    from streamrec.local.services import LocalKafka, LocalRedis, LocalRedisCluster

    roles = {WORKER_MAIN: [worker.pid for worker in workers],
             "worker": [worker.pid for worker in workers]}
    for service in current.supervisor.services:
        if isinstance(service, LocalRedis | LocalRedisCluster):
            roles["redis-server"] = [process.pid for process in service.processes]
        elif isinstance(service, LocalKafka):
            roles["kafka"] = [process.pid for process in service.processes]
    return roles


def _cpu_use(before: dict[str, float], after: dict[str, float], events: int,
             seconds: float) -> dict[str, dict[str, float]]:
    """cpu.per_event with the learning process apart from the worker's main process."""
    def apart(taken: dict[str, float]) -> dict[str, float]:
        rows = {role: value for role, value in taken.items() if role != "worker"}
        if "worker" in taken:
            rows[LEARNING] = taken["worker"] - taken.get(WORKER_MAIN, 0.0)
        return rows

    return cpu.per_event(apart(before), apart(after), events, seconds)


def ingest(current: Stack, simulation: Simulation, count: int, timeout: float = 900.0,
           cover: bool = False, workers: int = 1, warm_up: int = 0) -> IngestResult:
    """Produce a backlog, then start ``workers`` workers in one consumer group and time
    them through it. With ``warm_up``, the backlog starts with that many more events,
    applied before the clock starts: an event costs more as the state ages (fuller
    histories pair each event with more recent items), so a backlog learned from an
    empty state times a young state only."""
    total = warm_up + count
    produced_rate = asyncio.run(produce_backlog(current, simulation, total, cover))
    store = current.store()
    launched = time.perf_counter()
    started = [
        current.spawn(f"worker-{n}" if workers > 1 else "worker",
                      ["worker", "--log-level", "warning"],
                      STREAMREC_DATA_DIR=str(current.run_dir / f"worker-{current.run_id}-{n}"))
        for n in range(workers)
    ]
    roles = _cpu_roles(current, started)
    first_seen = first_count = None
    used_before: dict[str, float] = {}
    deadline = launched + timeout
    while time.perf_counter() < deadline:
        for worker in started:
            if worker.poll() is not None:
                raise RuntimeError(f"a worker exited with {worker.returncode}; "
                                   f"see the worker logs in {current.run_dir}")
        applied = store.events_applied()
        now = time.perf_counter()
        if applied and applied >= warm_up and first_seen is None:
            first_seen, first_count = now, applied
            used_before = cpu.snapshot(roles, alone=(WORKER_MAIN,))
        if applied >= total:
            break
        time.sleep(0.02)
    else:
        raise RuntimeError(f"worker applied {store.events_applied()} of {total} events within "
                           f"{timeout:.0f} s; see {current.run_dir / 'worker.log'}")
    finished = time.perf_counter()
    used_after = cpu.snapshot(roles, alone=(WORKER_MAIN,))
    assert first_seen is not None and first_count is not None
    rate = (total - first_count) / max(finished - first_seen, 1e-9)
    return IngestResult(count, produced_rate, rate, first_seen - launched, warm_up,
                        _cpu_use(used_before, used_after, total - first_count,
                                 finished - first_seen))


def ingest_ceiling(current: Stack, count: int, warm_up: int = 0,
                   timeout: float = 900.0) -> dict[str, float]:
    """Events/s of a do-nothing agent on the worker's App and batching, over the backlog
    and catalog the worker applied (a consumer group of its own, from the start of the
    topics): the framework's ceiling on this machine, timed like the worker, after the
    same ``warm_up`` events untimed (the worker took the catalog during those too). Its
    report: ``events_per_second`` and ``cpu_us_per_event`` (streams.ceiling)."""
    report = current.run_dir / f"ceiling-{current.run_id}.json"
    agent = current.spawn("ingest-ceiling", ["ingest-ceiling", "--events", str(count),
                                             "--skip", str(warm_up), "--report", str(report)],
                          STREAMREC_DATA_DIR=str(current.run_dir / f"ceiling-{current.run_id}"))
    deadline = time.monotonic() + timeout
    while not report.exists():
        if agent.poll() is not None and not report.exists():
            raise RuntimeError(f"the do-nothing agent exited with {agent.returncode}; see "
                               f"{current.run_dir}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the do-nothing agent took fewer than {warm_up + count} "
                               f"events within {timeout:.0f} s; see {current.run_dir}")
        time.sleep(0.05)
    agent.wait(30)
    return orjson.loads(report.read_bytes())


def start_api(current: Stack, processes: int = 1, **extra: str) -> str:
    """Start the API (``processes`` uvicorn workers; ``extra``: more environment) and wait
    until it is ready."""
    from streamrec.local.services import free_port

    port = free_port()
    current.spawn("api", ["api", "--workers", str(processes)], STREAMREC_API_PORT=str(port),
                  **extra)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                if response.status == 200:
                    return base
        time.sleep(0.2)
    raise RuntimeError(f"the API did not become ready; see {current.run_dir / 'api.log'}")


class Poller:
    """GETs over one kept-alive connection (a probe's polls must not cost the API a TCP
    handshake each: on two cores that load would slow the worker it measures)."""

    def __init__(self, base: str) -> None:
        parts = urllib.parse.urlsplit(base)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.connection: http.client.HTTPConnection | None = None
        self.requests = 0

    def get(self, path: str) -> dict | None:
        """The JSON answer, or None when the API shed the request (503: it is loaded; ask
        again)."""
        self.requests += 1
        for attempt in (1, 2):  # a connection the server closed meanwhile is opened again
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=5)
            try:
                self.connection.request("GET", path)
                response = self.connection.getresponse()
                body = response.read()
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt == 2:
                    raise
                continue
            if response.status == 503:
                return None
            if response.status != 200:
                raise RuntimeError(f"GET {path}: HTTP {response.status}: {body[:200]!r}")
            return orjson.loads(body)
        return None

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


CHECK_SECONDS = 0.005  # how often the outstanding probes' users are looked up in Redis
PROBE_INTERVAL_SECONDS = 0.25  # a probe starts every this many seconds, however long the last
GIVE_UP_SECONDS = 30.0  # a freshness probe not visible by then starts no more probes


@dataclass
class FreshnessResult:
    # One row per probe, by start: (seconds from the first probe's start to this one's,
    # its latency in seconds), so a tail can be matched with what ran then (Redis's log).
    timeline: list[tuple[float, float]]
    background_rate: float  # simulated events/s Kafka acknowledged meanwhile
    shed: int  # GETs the API shed (503, counted as not visible yet)
    polls: int  # GETs of /recommendations
    unseen: int  # probes not visible after GIVE_UP_SECONDS (then no more started)
    produced: int  # events the run put on the topic: the background's and the probes'
    started: int  # probes started
    began_at: float  # the first probe's start, epoch seconds (0.0: none started)

    @property
    def seconds(self) -> list[float]:
        """One latency per probe."""
        return [took for _, took in self.timeline]


def freshness(current: Stack, base: str, anchor_items: list[str], probes: int,
              simulation: Simulation | None = None, background_rate: float = 0.0,
              interval: float = PROBE_INTERVAL_SECONDS) -> FreshnessResult:
    """Seconds from producing a new user's first event to a personalised list for them in
    ``GET /recommendations``, while ``background_rate`` simulated events per second flow
    into the same topic (open loop).

    A probe starts every ``interval`` seconds, whether or not the ones before are visible
    yet, so the stage lasts ``probes * interval`` seconds plus the last probe's wait, and
    the events it adds to the state do not depend on the latency it measures (probes one
    after the other made a slow worker's stage longer, and its state older, the slower it
    was). Every ``CHECK_SECONDS`` one pipelined Redis read asks which of the outstanding
    probes' users have a history (the API reads the same state on every request, and a
    user with a history is served their model's list, not ``popular``); each of them is
    then asked of the API, and its sample ends at a personalised answer. So the API gets
    about one GET per probe, not a poll every few ms per probe.

    A probe still not visible after ``GIVE_UP_SECONDS`` means the worker fell behind the
    background rate: it counts as that long (a lower bound) and no more probes start,
    since every later probe would wait longer still; those outstanding are awaited."""
    topic = f"{current.prefix}.events"
    shed, unseen, produced = [0], [0], [0]
    began_at = [0.0]
    deliveries: list[asyncio.Future] = []  # one per probe started
    poller = Poller(base)
    store = current.store()

    def with_history(users: list[str]) -> list[str]:
        return [user for user, rows in store.histories(users, 1).items() if rows]

    def starting() -> bool:
        return len(deliveries) < probes and not unseen[0]

    async def probe_all() -> list[tuple[float, float]]:
        producer = kafka.producer(current.settings())
        await producer.start()
        timeline: list[tuple[float, float]] = []  # (start in the stage, latency) per probe
        outstanding: dict[str, float] = {}  # user -> perf_counter when produced
        began, began_at[0] = time.perf_counter(), time.time()

        def seen(user: str) -> None:
            produced_at = outstanding.pop(user)
            timeline.append((produced_at - began, time.perf_counter() - produced_at))

        try:
            while starting() or outstanding:
                probe = len(deliveries)
                if starting() and time.perf_counter() >= began + probe * interval:
                    user = f"fresh-{current.run_id}-{probe}"
                    item = anchor_items[probe % len(anchor_items)]
                    event = {"user_id": user, "item_id": item, "event_type": "view",
                             "timestamp": time.time()}
                    outstanding[user] = time.perf_counter()
                    deliveries.append(await producer.send(
                        topic, orjson.dumps(event), key=user.encode()))
                if outstanding:
                    for user in await asyncio.to_thread(with_history, list(outstanding)):
                        result = await asyncio.to_thread(
                            poller.get, f"/recommendations?user_id={user}&k=10")
                        if result is None:
                            shed[0] += 1
                        elif result["model"] != "popular":
                            seen(user)
                    for user, produced_at in list(outstanding.items()):
                        if time.perf_counter() - produced_at > GIVE_UP_SECONDS:
                            unseen[0] += 1
                            seen(user)
                await asyncio.sleep(CHECK_SECONDS)
            for delivery in deliveries:  # raises if a probe's event was not delivered
                await delivery
            produced[0] += len(deliveries)
        finally:
            await producer.stop()
            poller.close()
        return sorted(timeline)

    async def run() -> tuple[list[tuple[float, float]], float]:
        if background_rate <= 0 or simulation is None:
            return await probe_all(), 0.0
        load = Load()
        # A minute's events made before the clock starts, the simulator goes on after it:
        # the bench's producer shares the two cores with the worker it measures.
        events = simulation.events()
        ahead = list(itertools.islice(events, int(60 * background_rate)))
        background = asyncio.create_task(produce_events(
            load, current.bootstrap, topic, itertools.chain(ahead, events), background_rate,
            seconds=3600.0))
        await asyncio.sleep(3.0)  # let the background rate settle before probing
        started, acknowledged = time.perf_counter(), load.events_total
        try:
            timeline = await probe_all()
        finally:
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await background
        produced[0] += load.events_total
        rate = (load.events_total - acknowledged) / (time.perf_counter() - started)
        if load.all_errors:
            raise RuntimeError(f"background producer failed: {dict(load.all_errors)}")
        return timeline, rate

    timeline, rate = asyncio.run(run())
    return FreshnessResult(timeline, rate, shed[0], poller.requests, unseen[0], produced[0],
                           len(deliveries), began_at[0])


def drain(current: Stack, expected: int, timeout: float = 300.0) -> tuple[float, bool]:
    """Wait until the worker has applied ``expected`` events in all (a freshness run that
    fell behind leaves a backlog, which would otherwise share the cores with the serving
    runs); returns the seconds waited and whether it got there within ``timeout``."""
    store, started = current.store(), time.perf_counter()
    while store.events_applied() < expected:
        if time.perf_counter() - started > timeout:
            return time.perf_counter() - started, False
        time.sleep(0.1)
    return time.perf_counter() - started, True


def settle(base: str, quiet_ms: float = 50.0, timeout: float = 60.0) -> None:
    """Wait until the API answers ``/healthz`` within ``quiet_ms`` three times running: an
    overloaded rate leaves requests queued in the API after its generator gave up on them,
    and the next rate would otherwise inherit that queue."""
    deadline, quiet = time.monotonic() + timeout, 0
    while quiet < 3 and time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=5):
                pass
        except OSError:
            time.sleep(0.2)
            continue
        quiet = quiet + 1 if (time.perf_counter() - started) * 1000 <= quiet_ms else 0
        time.sleep(0.1)


@dataclass
class RateResult:
    rate: float
    answered: int
    errors: dict[str, int]
    latency_ms: dict[str, float]
    requests: int = 0  # sent
    refused_ms: dict[str, float] = field(default_factory=dict)  # how long the 503s took


def serve_at_rates(base: str, simulation: Simulation, rates: list[float], seconds: float,
                   model: str | None = None, seed: int = 7) -> list[RateResult]:
    """Open-loop ``GET /recommendations`` at each fixed rate over random users: every
    request leaves at its scheduled time and its latency counts from then, so queueing
    shows (:mod:`streamrec.measure.load`)."""
    import random
    from urllib.parse import quote

    import uvloop

    from streamrec.measure import load as open_loop

    query = "" if model is None else f"&model={quote(model)}"

    def one(rate: float) -> RateResult:
        rng = random.Random(seed)

        def path(_: int) -> str:
            user = simulation.user_id(rng.randrange(simulation.users))
            return f"/recommendations?user_id={quote(user)}&k=10{query}"

        settle(base)
        result = uvloop.run(open_loop.run(base, path, rate, seconds))
        return RateResult(rate, len(result.latencies), dict(result.errors),
                          milliseconds(result.latencies), result.sent,
                          milliseconds(result.refusals))

    def milliseconds(samples: list[float]) -> dict[str, float]:
        return ({name: 1000 * value for name, value in
                 percentiles(samples, (50, 99, 99.9)).items()} if samples else {})

    return [one(rate) for rate in rates]


def redis_bytes(current: Stack, sample: int = 500) -> dict[str, float]:
    """Redis bytes per user and per item, from ``MEMORY USAGE`` of a sample of each's keys
    (users: history, event types and factors; items: neighbours, factors and document), plus the
    sorted sets every item has a member in (popularity, counts, change cursor) and the
    landmark hashes (a field per item's neighbour list) shared out.

    ``MEMORY USAGE`` counts a key's value, name, ``robj`` and dict entry (allocator size
    classes included) but not its slot in the keyspace's bucket array: 8 bytes per bucket,
    and the array is a power of two at least as long as the key count, so each key adds
    8 to 16 bytes more. That share is added per key: with it the per-user figure matches
    what ``FLUSHDB`` frees, per user, within 3%."""
    store = current.store()
    client = store.client
    users = []
    for user in store.user_ids():
        users.append(user)
        if len(users) >= sample:
            break
    items = [item for item, _ in store.popular(sample).scores]
    nodes = ([node.redis_connection for node in client.get_primaries()] if current.cluster
             else [client])
    stored = max(1, client.dbsize() // len(nodes))  # each node's keyspace has its own array
    bucket_share = 8 * (1 << (stored - 1).bit_length()) / stored  # bytes per key

    def usage(names: list[str]) -> float:
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.memory_usage(name, samples=0)
        sizes = [size for size in pipe.execute() if size]
        return sum(sizes) + bucket_share * len(sizes)

    user_kinds = (keys.HISTORY, keys.EVENT_TYPES, keys.MF_USER)
    per_user = usage([store.key(kind, user) for user in users
                      for kind in user_kinds]) / max(1, len(users))
    per_item = usage([store.key(kind, item) for item in items
                      for kind in (keys.NEIGHBOURS, keys.MF_ITEM, keys.ITEM)]) / max(1, len(items))
    catalog = client.zcard(store.key(keys.POPULAR)) or 1
    # The landmarks hashes too: the global one is small, each item group's holds a field
    # per item with neighbours.
    shared = usage([store.key(keys.POPULAR), store.key(keys.ITEM_COUNT),
                    store.key(keys.MF_CHANGED), *store.landmark_keys()]) / catalog
    return {"bytes_per_user": per_user, "bytes_per_item": per_item + shared,
            "users_sampled": len(users), "items_sampled": len(items),
            "used_memory": sum(node.info("memory")["used_memory"] for node in nodes)}


WRK_SCRIPT = """
math.randomseed(%(seed)d)
request = function()
  return wrk.format("GET", "/recommendations?user_id=user-" .. math.random(0, %(last)d)
                    .. "&k=10%(model)s")
end
"""


@dataclass
class ServeResult:
    requests_per_second: float
    latency_ms: dict[str, float]
    connections: int
    errors: str


def _milliseconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def serve(current: Stack, base: str, users: int, seconds: int, connections: int,
          model: str | None = None, threads: int = 2) -> ServeResult:
    """Drive ``GET /recommendations`` (``model`` or the default) with wrk (Debian's)."""
    script = current.run_dir / "recommendations.lua"
    query = "" if model is None else f"&model={model}"
    script.write_text(WRK_SCRIPT % {"seed": 7, "last": users - 1, "model": query})
    return _wrk(current, base, f"wrk-{model or 'default'}.txt", seconds, connections,
                threads, ["-s", str(script), base])


def serve_healthz(current: Stack, base: str, seconds: int, connections: int,
                  threads: int = 2) -> ServeResult:
    """Drive ``GET /healthz`` like :func:`serve`: the framework's ceiling on the same API
    process (routing, one handler, a JSON answer, the same middleware)."""
    return _wrk(current, base, "wrk-healthz.txt", seconds, connections, threads,
                [f"{base}/healthz"])


def _wrk(current: Stack, base: str, name: str, seconds: int, connections: int,
         threads: int, target: list[str]) -> ServeResult:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: run `make system` (Debian: apt-get install wrk)")
    settle(base)
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", *target]
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    (current.run_dir / name).write_text(output)
    latency = {
        f"p{match.group(1)}": _milliseconds(match.group(2))
        for match in re.finditer(r"^\s+(50|75|90|99)(?:\.000)?%\s+(\S+)", output, re.M)
    }
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", output)
    return ServeResult(rps, latency, connections, errors.group(0) if errors else "none")
