"""Topic per app or shared topics carrying the app: what each costs the broker and the
worker's consumer at 1, 10 and 100 apps, measured. Not a test; docs/apps.md quotes it.

For each layout and number of apps, a fresh local KRaft broker (``LocalKafka``, as the
tests start it) gets the topics: five per app (events, impressions, items and users
compacted, dead letters; ``topic_partitions`` each, configured as ``streamrec.kafka``
configures ours) or five in all, the app in the record header ``app``. Then, in order:

- setup: creating the topics until the broker serves every partition;
- the broker's resident memory and open file descriptors, idle, a few seconds later;
- join: one aiokafka consumer in a new group subscribing to what the worker reads (events,
  impressions, items, users: by pattern for topic per app) until it holds every partition;
- pickup: a new app's first event, written as soon as its topics exist (none are needed
  when they are shared), until the consumer has it. With a pattern that waits for the
  consumer's next metadata refresh: ``metadata_max_age_ms`` bounds it (``--metadata-max-age``
  here; aiokafka's and Faust's default is 300 s);
- latency: p50/p99 from an event's scheduled send to its arrival, at a modest fixed rate,
  and the p99 of the broker's acknowledgement (the producer's share of it);
- throughput: ``--events`` small JSON events spread evenly over the apps, produced as fast
  as the producer takes them, until the consumer has every one (each app's count checked:
  none lost, none twice); the median of ``--rounds`` runs;
- behind a backlog (2 apps or more): with the consumer paused, ``--backlog`` events of one
  app and then 100 of another are written; from resuming, how long until the second app's
  events have all been applied, and the backlog, by a consumer that takes the partitions
  in turn (as Faust does) and applies ``--apply-rate`` events/s (as one worker does).

    .venv/bin/python scripts/app_topics_cost.py --apps 1,10,100
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import re
import shutil
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from streamrec import apps as app_model
from streamrec.kafka import producer as kafka_producer
from streamrec.kafka import topic_specs
from streamrec.local.services import LocalKafka
from streamrec.percentiles import percentiles
from streamrec.settings import Settings

TOPIC_EXISTS = 36  # Kafka's TOPIC_ALREADY_EXISTS error code
CREATE_CHUNK = 50  # topics per CreateTopics request: one huge request outlasts its timeout
USERS = 10_000
APPLY_STEP = 50  # events between the pauses that stand for applying them


@dataclass(frozen=True)
class Layout:
    """Where an app's records go, and how the worker's consumer finds them."""

    name: str
    per_app: bool

    def settings(self, base: Settings, app: str | None = None) -> Settings:
        """The base settings with the topic names of ``app`` (topic per app) or the shared
        ones."""
        if not self.per_app:
            return base
        names = ("events_topic", "impressions_topic", "items_topic", "users_topic",
                 "dead_letter_topic")
        return base.model_copy(update={
            name: f"app.{app}.{getattr(base, name)}" for name in names})

    def topics(self, base: Settings, apps: list[str]) -> list[NewTopic]:
        """Our topics (as :func:`topic_specs` makes them, without the metrics topic, which
        stays one for the deployment either way) for ``apps``."""
        groups = [None] if not self.per_app else apps
        return [spec for app in groups for spec in topic_specs(self.settings(base, app))
                if spec.name != base.metrics_topic]

    def subscription(self, base: Settings) -> dict:
        """What the worker's consumer subscribes to: the four topics it reads."""
        read = [base.events_topic, base.impressions_topic, base.items_topic,
                base.users_topic]
        if not self.per_app:
            return {"topics": read}
        alternatives = "|".join(re.escape(name) for name in read)
        return {"pattern": rf"^app\.[a-z][a-z0-9-]*\.({alternatives})$"}

    def event(self, base: Settings, app: str) -> tuple[str, list[tuple[str, bytes]] | None]:
        """The topic and headers of an event of ``app``."""
        if self.per_app:
            return self.settings(base, app).events_topic, None
        return base.events_topic, app_model.record_headers(app)

    def app_of(self, record: ConsumerRecord) -> str:
        if self.per_app:
            return record.topic.split(".")[1]
        for name, value in record.headers or ():
            if name == app_model.HEADER:
                return value.decode()
        return app_model.DEFAULT


LAYOUTS = {"topic-per-app": Layout("topic-per-app", True), "shared": Layout("shared", False)}


@dataclass
class Row:
    layout: str
    apps: int
    topics: int = 0
    partitions: int = 0
    setup_s: float = 0.0
    rss_mib: float = 0.0
    fds: int = 0
    baseline_rss_mib: float = 0.0
    baseline_fds: int = 0
    join_s: float = 0.0
    pickup_s: float = 0.0
    events_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    ack_p99_ms: float = 0.0
    behind_backlog_s: float | None = None
    backlog_drain_s: float | None = None


def broker_usage(pid: int) -> tuple[float, int]:
    """Resident memory (MiB) and open file descriptors of a process."""
    with open(f"/proc/{pid}/status") as status:
        rss_kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return rss_kib / 1024, len(os.listdir(f"/proc/{pid}/fd"))


async def create_topics(admin: AIOKafkaAdminClient, specs: list[NewTopic],
                        bootstrap: str) -> None:
    """Create ``specs`` and wait until the broker serves every partition: a leader in the
    metadata is not enough (the broker makes the partitions' logs after it says so, and
    refuses writes until then), so until it answers each partition's end offset."""
    if not specs:
        return
    for start in range(0, len(specs), CREATE_CHUNK):
        response = await admin.create_topics(specs[start:start + CREATE_CHUNK],
                                              timeout_ms=60_000)
        for name, code, *message in response.topic_errors:
            if code not in (0, TOPIC_EXISTS):
                raise RuntimeError(f"creating topic {name} failed: error {code} {message}")
    names = [spec.name for spec in specs]
    while True:
        described = await admin.describe_topics(names)
        if len(described) == len(names) and all(
                not topic["error_code"] and topic["partitions"] and all(
                    partition["leader"] >= 0 for partition in topic["partitions"])
                for topic in described):
            break
        await asyncio.sleep(0.05)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=120_000)
    await probe.start()
    try:
        # Retries (not-leader, unknown partition) until every partition answers.
        await probe.end_offsets([TopicPartition(spec.name, partition) for spec in specs
                                 for partition in range(spec.num_partitions)])
    finally:
        await probe.stop()


async def wait_for_coordinator(admin: AIOKafkaAdminClient, timeout: float = 60) -> None:
    deadline = time.perf_counter() + timeout
    while True:
        try:
            await admin.find_coordinator("warm-up")
            return
        except KafkaError:
            if time.perf_counter() > deadline:
                raise
            await asyncio.sleep(0.1)


class Assigned(ConsumerRebalanceListener):
    """Counts the partitions the consumer holds."""

    def __init__(self) -> None:
        self.partitions: set = set()

    async def on_partitions_revoked(self, revoked) -> None:
        self.partitions -= set(revoked)

    async def on_partitions_assigned(self, assigned) -> None:
        self.partitions |= set(assigned)


async def wait_for(check: Callable[[], bool], what: str, timeout: float) -> float:
    """Seconds until ``check()`` holds; RuntimeError naming ``what`` after ``timeout``."""
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"{what} did not happen within {timeout:.0f} s")
        await asyncio.sleep(0.005)
    return time.perf_counter() - start


class Receiver:
    """Drains the consumer in the background and hands each event to the current
    ``handle``, taking the partitions of a batch in turn, as Faust's scheduler does (so a
    partition's prefetched backlog does not hold back the others'). With ``apply_rate``
    set, it spends as long on each event as a worker applying that many events/s would."""

    def __init__(self, consumer: AIOKafkaConsumer, layout: Layout) -> None:
        self.consumer, self.layout = consumer, layout
        self.handle: Callable[[str, dict, float], None] = lambda app, event, now: None
        self.apply_rate: float | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100)
            applied = 0
            for turn in itertools.zip_longest(*batches.values()):
                for record in turn:
                    if record is None:
                        continue
                    self.handle(self.layout.app_of(record), orjson.loads(record.value),
                                time.perf_counter())
                    applied += 1
                    if self.apply_rate and applied % APPLY_STEP == 0:
                        await asyncio.sleep(APPLY_STEP / self.apply_rate)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def event(seq: int, sent: float) -> bytes:
    return orjson.dumps({"user_id": f"u{seq % USERS}", "item_id": f"i{seq % 997}",
                         "type": "view", "seq": seq, "sent": sent})


async def measure(kafka: LocalKafka, layout: Layout, apps: list[str],
                  args: argparse.Namespace) -> Row:
    base = Settings(kafka_bootstrap=kafka.bootstrap, topic_partitions=args.partitions)
    specs = layout.topics(base, apps)
    row = Row(layout.name, len(apps), topics=len(specs),
              partitions=sum(spec.num_partitions for spec in specs))
    assert kafka.process is not None
    pid = kafka.process.pid
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap, request_timeout_ms=60_000)
    await admin.start()
    # A fresh broker makes its offsets topic when a group first asks for a coordinator:
    # done here, so that the join below measures the join and not that.
    await wait_for_coordinator(admin)
    row.baseline_rss_mib, row.baseline_fds = broker_usage(pid)
    consumer = receiver = None
    producers = []
    try:
        start = time.perf_counter()
        await create_topics(admin, specs, kafka.bootstrap)
        row.setup_s = time.perf_counter() - start
        await asyncio.sleep(args.idle)
        row.rss_mib, row.fds = broker_usage(pid)

        assigned = Assigned()
        subscribed_partitions = 4 * args.partitions * (len(apps) if layout.per_app else 1)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap, group_id=f"cost-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest", metadata_max_age_ms=int(args.metadata_max_age * 1000))
        await consumer.start()
        start = time.perf_counter()
        consumer.subscribe(**layout.subscription(base), listener=assigned)
        receiver = Receiver(consumer, layout)
        await wait_for(lambda: len(assigned.partitions) >= subscribed_partitions,
                       "the consumer's assignment", 120)
        row.join_s = time.perf_counter() - start

        latency_producer = kafka_producer(base, linger_ms=1)  # as the API's
        bulk_producer = kafka_producer(base, linger_ms=20, max_batch_size=256 * 1024)
        producers = [latency_producer, bulk_producer]
        for producer in producers:
            await producer.start()

        row.pickup_s = await pickup(admin, latency_producer, receiver, layout, base, args)
        row.p50_ms, row.p99_ms, row.ack_p99_ms = await latency(
            latency_producer, receiver, layout, base, apps, args)
        # Other processes share the machine's cores: the median of a few runs.
        row.events_per_s = statistics.median([
            await throughput(bulk_producer, receiver, layout, base, apps, args, round_)
            for round_ in range(args.rounds)])
        if len(apps) > 1:
            row.behind_backlog_s, row.backlog_drain_s = await behind_backlog(
                bulk_producer, consumer, receiver, layout, base, apps, args)
    finally:
        if receiver is not None:
            await receiver.stop()
        for producer in producers:
            await producer.stop()
        if consumer is not None:
            await consumer.stop()
        await admin.close()
    return row


async def pickup(admin: AIOKafkaAdminClient, producer, receiver: Receiver, layout: Layout,
                 base: Settings, args: argparse.Namespace) -> float:
    """Seconds from a new app's topics existing (at once when shared) until the consumer
    has the app's first event, written right then."""
    fresh = "fresh"
    await create_topics(admin, layout.topics(base, [fresh]) if layout.per_app else [],
                        base.kafka_bootstrap)
    arrived: list[float] = []
    receiver.handle = lambda app, event, now: arrived.append(now) if app == fresh else None
    start = time.perf_counter()
    topic, headers = layout.event(base, fresh)
    await (await producer.send(topic, event(0, start), key=b"u0", headers=headers))
    await wait_for(lambda: bool(arrived), "the new app's first event reaching the consumer",
                   args.metadata_max_age * 2 + 60)
    return arrived[0] - start


async def latency(producer, receiver: Receiver, layout: Layout, base: Settings,
                  apps: list[str], args: argparse.Namespace) -> tuple[float, float, float]:
    """p50 and p99 (ms) from an event's scheduled send to its arrival, at ``--rate``, and
    the p99 of its acknowledgement by the broker (which tells the producer's share)."""
    seen: list[float] = []
    acknowledged: list[float] = []
    receiver.handle = lambda app, event, now: seen.append(now - event["sent"])
    start = time.perf_counter()
    for seq in range(args.latency_events):
        scheduled = start + seq / args.rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        app = apps[seq % len(apps)]
        topic, headers = layout.event(base, app)
        sent = await producer.send(topic, event(seq, scheduled),
                                   key=f"u{seq % USERS}".encode(), headers=headers)
        sent.add_done_callback(
            lambda _, scheduled=scheduled: acknowledged.append(time.perf_counter() - scheduled))
    await wait_for(lambda: len(seen) >= args.latency_events, "every latency event arriving",
                   300)
    found = percentiles(seen, (50, 99))
    return (found["p50"] * 1000, found["p99"] * 1000,
            percentiles(acknowledged, (99,))["p99"] * 1000)


async def throughput(producer, receiver: Receiver, layout: Layout, base: Settings,
                     apps: list[str], args: argparse.Namespace, round_: int) -> float:
    """Events/s from the first send until the consumer has all ``--events``, each app's
    events counted once."""
    received: Counter[str] = Counter()
    seqs: set[int] = set()

    def count(app: str, event: dict, now: float) -> None:
        received[app] += 1
        seqs.add(event["seq"])

    receiver.handle = count
    sent: Counter[str] = Counter()
    start = time.perf_counter()
    pending = []
    for seq in range(round_ * args.events, (round_ + 1) * args.events):
        app = apps[seq % len(apps)]
        topic, headers = layout.event(base, app)
        pending.append(await producer.send(topic, event(seq, 0.0),
                                           key=f"u{seq % USERS}".encode(), headers=headers))
        sent[app] += 1
        if len(pending) >= 10_000:  # keep the acknowledgements from piling up unread
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)
    await wait_for(lambda: sum(received.values()) >= args.events, "every event arriving", 300)
    seconds = time.perf_counter() - start
    await asyncio.sleep(0.5)  # a duplicate would arrive now
    if received != sent or len(seqs) != args.events or sum(received.values()) != args.events:
        raise RuntimeError(f"events lost or doubled: sent {sum(sent.values())}, received "
                           f"{sum(received.values())} ({len(seqs)} distinct)")
    return args.events / seconds


async def behind_backlog(producer, consumer: AIOKafkaConsumer, receiver: Receiver,
                         layout: Layout, base: Settings, apps: list[str],
                         args: argparse.Namespace) -> tuple[float, float]:
    """How long a quiet app's events wait behind another app's backlog: ``--backlog``
    events of the first app and a few of the second are written while the consumer is
    paused (as when a worker restarts, or one app imports its history); returns the
    seconds from resuming until the quiet app's events, and the backlog's, have all
    arrived."""
    loud, quiet, few = apps[0], apps[1], 100
    arrived: Counter[str] = Counter()
    last: dict[str, float] = {}

    def count(app: str, event: dict, now: float) -> None:
        arrived[app] += 1
        last[app] = now

    receiver.handle = count
    receiver.apply_rate = args.apply_rate
    held = consumer.assignment()
    consumer.pause(*held)
    await asyncio.sleep(0.3)  # a fetch under way when pausing may still deliver
    pending = []
    for seq in range(args.backlog + few):
        app = loud if seq < args.backlog else quiet
        topic, headers = layout.event(base, app)
        pending.append(await producer.send(topic, event(seq, 0.0),
                                           key=f"u{seq % USERS}".encode(), headers=headers))
    await asyncio.gather(*pending)
    start = time.perf_counter()
    consumer.resume(*held)
    await wait_for(lambda: arrived[loud] >= args.backlog and arrived[quiet] >= few,
                   "the backlog and the quiet app's events arriving", 300)
    receiver.apply_rate = None
    return last[quiet] - start, last[loud] - start


def run(layout: Layout, count: int, args: argparse.Namespace, directory: Path) -> Row:
    kafka = LocalKafka(directory / f"{layout.name}-{count}", partitions=args.partitions)
    try:
        kafka.start()
        time.sleep(args.idle)  # the baseline, once the broker has settled after start
        return asyncio.run(measure(kafka, layout, [f"a{n:03d}" for n in range(count)], args))
    finally:
        kafka.stop()
        shutil.rmtree(kafka.data_dir, ignore_errors=True)


COLUMNS = [("layout", "layout", "{}"), ("apps", "apps", "{}"), ("topics", "topics", "{}"),
           ("partitions", "partitions", "{}"), ("setup s", "setup_s", "{:.2f}"),
           ("RSS MiB", "rss_mib", "{:.0f}"), ("fds", "fds", "{}"), ("join s", "join_s", "{:.2f}"),
           ("pickup s", "pickup_s", "{:.2f}"), ("events/s", "events_per_s", "{:.0f}"),
           ("p50 ms", "p50_ms", "{:.1f}"), ("p99 ms", "p99_ms", "{:.1f}"),
           ("ack p99 ms", "ack_p99_ms", "{:.1f}"),
           ("behind backlog s", "behind_backlog_s", "{:.2f}"),
           ("backlog drained s", "backlog_drain_s", "{:.2f}")]
MARGINAL = [("setup s", "setup_s", "{:.3f}"), ("RSS MiB", "rss_mib", "{:.2f}"),
            ("fds", "fds", "{:.1f}"), ("partitions", "partitions", "{:.0f}"),
            ("join s", "join_s", "{:.4f}")]


def cell(row: Row, name: str, form: str) -> str:
    value = getattr(row, name)
    return "-" if value is None else form.format(value)


def table(rows: list[Row]) -> str:
    """A Markdown table of the rows, then each layout's cost per added app (between its
    fewest and most apps, when it was measured at two numbers or more)."""
    lines = ["| " + " | ".join(title for title, _, _ in COLUMNS) + " |",
             "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(cell(row, name, form) for _, name, form in COLUMNS)
              + " |" for row in rows]
    marginal = []
    for layout in dict.fromkeys(row.layout for row in rows):
        mine = sorted((row for row in rows if row.layout == layout), key=lambda row: row.apps)
        low, high = mine[0], mine[-1]
        if low.apps == high.apps:
            continue
        added = high.apps - low.apps
        marginal.append(f"| {layout} | " + " | ".join(
            form.format((getattr(high, name) - getattr(low, name)) / added)
            for _, name, form in MARGINAL) + " |")
    if marginal:
        lines += ["", "Per added app (from the fewest to the most apps measured):", "",
                  "| layout | " + " | ".join(title for title, _, _ in MARGINAL) + " |",
                  "|---|" + "|".join("---" for _ in MARGINAL) + "|", *marginal]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", default="1,10,100",
                        help="numbers of apps, comma-separated (default: 1,10,100)")
    parser.add_argument("--layouts", default=",".join(LAYOUTS),
                        help=f"comma-separated, of {', '.join(LAYOUTS)}")
    parser.add_argument("--events", type=int, default=100_000,
                        help="events of the throughput run (default: 100000)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="throughput runs, of which the median is shown (default: 3)")
    parser.add_argument("--backlog", type=int, default=20_000,
                        help="events of one app a second app's events wait behind "
                             "(default: 20000; needs 2 apps or more)")
    parser.add_argument("--apply-rate", type=float, default=3000.0,
                        help="events/s the consumer applies while a backlog drains: what "
                             "one worker applies (default: 3000, docs/scaling.md)")
    parser.add_argument("--latency-events", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=500.0,
                        help="events/s of the latency run (default: 500)")
    parser.add_argument("--partitions", type=int, default=Settings().topic_partitions,
                        help="partitions per topic (default: topic_partitions)")
    parser.add_argument("--metadata-max-age", type=float, default=10.0,
                        help="the consumer's metadata_max_age_ms, in seconds: bounds a "
                             "pattern's pickup of a new topic (default: 10; aiokafka's 300)")
    parser.add_argument("--idle", type=float, default=5.0,
                        help="seconds the broker idles before its memory is read")
    args = parser.parse_args()
    counts = [int(count) for count in args.apps.split(",")]
    layouts = [LAYOUTS[name] for name in args.layouts.split(",")]
    if min(counts) < 1 or min(args.events, args.latency_events, args.rounds) < 1:
        parser.error("--apps, --events, --latency-events and --rounds need positive numbers")
    # aiokafka warns of every retry (no coordinator yet, a new partition's leader not yet
    # known): expected right after a broker starts or topics are made, and retried.
    logging.basicConfig(level=logging.ERROR)

    directory = Path(tempfile.mkdtemp(prefix="streamrec-app-topics-"))
    rows = []
    started = time.perf_counter()
    try:
        for layout in layouts:
            for count in counts:
                row = run(layout, count, args, directory)
                rows.append(row)
                print(f"{layout.name} x {count}: " + ", ".join(
                    f"{title} {cell(row, name, form)}"
                    for title, name, form in COLUMNS[2:]), flush=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print()
    print(table(rows))
    print()
    print(f"Broker idle right after start: {rows[0].baseline_rss_mib:.0f} MiB resident, "
          f"{rows[0].baseline_fds} fds. Pickup is bounded by the consumer's "
          f"metadata_max_age_ms ({args.metadata_max_age * 1000:.0f} here). {len(rows)} "
          f"configurations in {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
