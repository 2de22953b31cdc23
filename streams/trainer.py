"""``streamrec trainer``: retrain ``ease`` and ``ials`` on a schedule from the retained log.

Each cycle reads the events topic up to its end as of now, the newest
``STREAMREC_TRAINER_MAX_EVENTS`` records at most (its own consumer, manual assignment: no
consumer group, no rebalance of the workers), keeps each app's
records (by the ``app`` header, as ``streamrec rebuild`` does), decodes them as the worker
does, and for each app and model:

1. trains on all but the last ``STREAMREC_TRAINER_HOLDOUT`` of the event-time range and
   scores that held-back slice (Recall@10, NDCG@10: the prequential evaluation's metrics);
2. trains again on everything and publishes that run, with the slice's metrics as its
   offline estimate. The second fit costs a training's time; it buys a served run that
   has seen the newest events, which are the ones most like tomorrow's;
3. promotes it unless it falls short of the serving run by more than
   ``STREAMREC_TRAINER_PROMOTE_MARGIN`` of its Recall@10 **on the same events**: the
   held-back events the serving run never trained on (those after its newest training
   event), both ranked from the same head histories (the old run keeps serving; the log
   says why). Each run's own slice is no yardstick for another's: Recall@10 falls as the
   catalogue grows, so a first run on a small log would outscore every later one. Fewer
   than ``STREAMREC_TRAINER_COMPARE_MIN_EVENTS`` such events: nothing to tell them apart
   by, and the new run (trained on more, and newer, events) is promoted. Then runs older
   than the ``STREAMREC_TRAINER_KEEP_RUNS`` newest are deleted.

A cycle that cannot train (an empty topic, too few events, Kafka or Redis away) logs why
and the loop tries again at the next cycle; it never ends the role.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from recommender import batch_models
from recommender.base import Interaction
from recommender.weights import EventWeights
from streamrec.apps import DEFAULT, Apps, app_settings, base_of
from streamrec.connections import kafka_client_options
from streamrec.kafka import partition_ids
from streamrec.settings import Settings
from streamrec.storage.trained_runs import Run, RunError
from streamrec.wiring import Wiring
from streams.decode import PlainRecord, decode_events, replays_for

log = logging.getLogger("streamrec.trainer")


class TrainerError(RuntimeError):
    """A cycle (or one app's part of it) that trained nothing; ``str()`` says why."""


@dataclass
class LogRead:
    """Records of the events topic as of one read, and where they came from."""

    records: list[PlainRecord]
    offsets: dict[str, list[int]]  # "topic:partition" -> [first, last] offset read


@dataclass
class Published:
    app: str
    run: Run
    promoted: bool
    reason: str
    pruned: list[int] = field(default_factory=list)

    def describe(self) -> str:
        offline = self.run.offline or {}
        metrics = (f"Recall@10 {offline['recall@10']:.4f}, NDCG@10 {offline['ndcg@10']:.4f} "
                   f"on {offline['events']:,} held-back events" if offline
                   else "no held-back events to score")
        lineage = self.run.lineage
        return (f"app {self.app}: {self.run.name} trained on {lineage['events']:,} events, "
                f"{lineage['users']:,} users, {lineage['items']:,} items in "
                f"{self.run.training_seconds:.1f} s (peak {self.run.peak_memory_bytes / 1e6:.0f}"
                f" MB); {metrics}; {self.reason}")


def newest(starts: dict[Any, int], ends: dict[Any, int], most: int) -> dict[Any, int]:
    """Where to start reading each partition for at most ``most`` of the newest records in
    all, each partition giving its share of them (by how many it holds).

    >>> newest({0: 0, 1: 10}, {0: 100, 1: 60}, 1000)
    {0: 0, 1: 10}
    >>> newest({0: 0, 1: 10}, {0: 100, 1: 60}, 30)
    {0: 80, 1: 50}
    """
    sizes = {tp: max(0, ends[tp] - starts[tp]) for tp in starts}
    total = sum(sizes.values())
    if total <= most:
        return dict(starts)
    return {tp: ends[tp] - most * size // total for tp, size in sizes.items()}


async def read_log(settings: Settings) -> LogRead:
    """The newest ``trainer_max_events`` records of the events topic (all of them when it
    holds fewer), up to its end as of now."""
    topic = settings.events_topic
    consumer = AIOKafkaConsumer(**kafka_client_options(settings), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_poll_records=5000)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await partition_ids(settings, topic)]
        if not partitions:
            raise TrainerError(f"topic {topic!r} does not exist or has no partitions")
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        starts = newest(await consumer.beginning_offsets(partitions), ends,
                        settings.trainer_max_events)
        for tp in partitions:
            consumer.seek(tp, starts[tp])
        records: list[PlainRecord] = []
        remaining = {tp for tp in partitions if starts[tp] < ends[tp]}
        while remaining:
            fetched = await consumer.getmany(*remaining, timeout_ms=1000, max_records=5000)
            for tp, batch in fetched.items():
                records.extend(PlainRecord(r.topic, r.partition, r.offset, r.key, r.value,
                                           r.timestamp / 1000.0, r.timestamp_type, r.headers)
                               for r in batch if r.offset < ends[tp])
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        offsets = {f"{tp.topic}:{tp.partition}": [starts[tp], ends[tp] - 1]
                   for tp in partitions if ends[tp] > starts[tp]}
        return LogRead(records, offsets)
    finally:
        await consumer.stop()


def app_interactions(wiring: Wiring, read: LogRead, app: str, since: float
                     ) -> tuple[list[Interaction], dict[str, list[int]]]:
    """App ``app``'s interactions in ``read`` (decoded as the worker decodes them, with
    the shared event types), and the offsets of its records per partition."""
    records = [record for record in read.records if replays_for(record, app, since)]
    settings = wiring.settings
    weights = EventWeights(wiring.read_event_types()(), settings.rating_positive_threshold)
    decoded = decode_events(records, weights, settings.max_event_time_skew_seconds)
    offsets: dict[str, list[int]] = {}
    for record in records:
        name = f"{record.topic}:{record.partition}"
        low, high = offsets.get(name, [record.offset, record.offset])
        offsets[name] = [min(low, record.offset), max(high, record.offset)]
    return decoded.interactions, offsets


@dataclass
class Champion:
    """The run serving a model as a cycle starts, to be scored beside the new one."""

    name: str
    trained_until: float  # its newest training event's time: later events it never saw
    load: Callable[[], batch_models.TrainedRun]  # its artifact (loaded only when needed)


def train(model: str, interactions: Sequence[Interaction], settings: Settings,
          items: int | None = None, champion: Champion | None = None
          ) -> tuple[batch_models.TrainedRun, dict[str, Any]]:
    """Train ``model`` as a cycle does: on the head to score the held-back tail, then on
    everything; returns the run and what its record says of it (without the offsets).

    With a ``champion``, what it says also has ``duel``: the head's run and the champion
    scored on the same events, the held-back ones after ``champion.trained_until``, ranked
    from the same head histories (None: none such, or the champion did not load)."""
    params = settings.trainer_hyperparameters(model)
    cap = settings.trainer_item_cap(model, items)
    head, tail, cut = batch_models.split_by_time(interactions, settings.trainer_holdout)
    offline = duel = None
    if tail:
        unseen = ([event for event in tail if event.timestamp > champion.trained_until]
                  if champion is not None else [])
        defended = None
        if unseen:
            try:  # scored first, so its artifact is freed before the estimate is fitted
                defended = batch_models.offline_metrics(champion.load(), head, unseen)
            except RunError as error:
                duel = {"champion": champion.name, "error": str(error)}
        estimate = batch_models.fit(model, batch_models.TrainingData.of(head, cap), params)
        offline = batch_models.offline_metrics(estimate, head, tail)
        if defended is not None:
            duel = {"champion": champion.name, "from": champion.trained_until,
                    "champion_metrics": defended,
                    "metrics": batch_models.offline_metrics(estimate, head, unseen)}
        del estimate
        if offline is not None:
            offline["slice"] = {"from": cut, "to": max(e.timestamp for e in tail),
                                "trained_on": "head"}
    tracemalloc.start()
    started = time.perf_counter()
    data = batch_models.TrainingData.of(interactions, cap)
    if not data.items:
        tracemalloc.stop()
        raise TrainerError(f"{model}: no positive interactions to train on")
    trained = batch_models.fit(model, data, params)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return trained, {
        "offline": offline, "duel": duel, "hyperparameters": {**params, "items": cap},
        "training_seconds": round(seconds, 3), "peak_memory_bytes": int(peak),
        "users": len(data.users), "items": len(data.items),
        "first_event": min(e.timestamp for e in interactions),
        "last_event": max(e.timestamp for e in interactions)}


def train_app(wiring: Wiring, read: LogRead, app: str, since: float,
              models: Sequence[str], items: int | None = None) -> list[Published]:
    """Train, publish and (unless worse) promote each of ``models`` for app ``app``."""
    settings = wiring.settings
    interactions, offsets = app_interactions(wiring, read, app, since)
    if len(interactions) < settings.trainer_min_events:
        raise TrainerError(
            f"app {app}: {len(interactions):,} events on topic {settings.events_topic!r}, "
            f"fewer than STREAMREC_TRAINER_MIN_EVENTS={settings.trainer_min_events}: "
            "nothing trained")
    runs = wiring.trained_runs()
    published = []
    for model in models:
        serving = runs.serving_run(model)
        current = None if serving is None else runs.get(model, serving)
        span = None if current is None else (current.lineage or {}).get("event_time")
        champion = None if not span else Champion(
            current.name, float(span[1]), partial(runs.load, model, current.number))
        trained, made = train(model, interactions, settings, items, champion)
        run = Run(model=model, number=runs.next_number(model), made_at=time.time(),
                  lineage={"topic": settings.events_topic, "offsets": offsets,
                           "event_time": [made["first_event"], made["last_event"]],
                           "events": len(interactions), "users": made["users"],
                           "items": made["items"]},
                  hyperparameters=made["hyperparameters"], offline=made["offline"],
                  training_seconds=made["training_seconds"],
                  peak_memory_bytes=made["peak_memory_bytes"])
        runs.publish(run, trained, settings.trainer_max_artifact_bytes)
        verdict = None if current is None else _verdict(made["duel"], current.name, settings)
        if verdict is not None and verdict[0]:
            promoted = False
            reason = (f"NOT promoted: {verdict[1]}; {current.name} keeps serving "
                      f"(`streamrec promote {run.name}` serves it anyway)")
        else:
            previous = runs.promote(model, run.number, author="trainer")
            promoted = True
            said = "" if verdict is None else f"; {verdict[1]}"
            reason = ("promoted" if previous in (None, False)
                      else f"promoted (was {model}@{previous}{said})")
        pruned = runs.prune(model, settings.trainer_keep_runs)
        published.append(Published(app, run, promoted, reason, pruned))
    return published


def _verdict(duel: dict[str, Any] | None, champion: str, settings: Settings
             ) -> tuple[bool, str]:
    """Whether the head's run falls short of ``champion`` on the events neither trained on
    by more than the margin, and what the log says of it either way."""
    least = settings.trainer_compare_min_events
    if duel and "error" in duel:
        return False, f"not compared: {champion} could not be scored ({duel['error']})"
    scored = (duel or {}).get("metrics") or {}
    if not duel or not duel["champion_metrics"] or scored.get("events", 0) < least:
        events = scored.get("events", 0)
        return False, (f"{events:,} held-back events unseen by {champion}, fewer than "
                       f"STREAMREC_TRAINER_COMPARE_MIN_EVENTS={least}: not compared")
    ours, theirs = scored["recall@10"], duel["champion_metrics"]["recall@10"]
    worse = batch_models.worse_by(scored, duel["champion_metrics"],
                                  settings.trainer_promote_margin)
    said = (f"Recall@10 {ours:.4f} against {champion}'s {theirs:.4f} on the same "
            f"{scored['events']:,} held-back events, which {champion} never trained on")
    if worse:
        said = (f"more than {settings.trainer_promote_margin:.0%} below {champion}: "
                + said)
    return worse, said


def apps_to_train(base: Wiring, app: str | None) -> dict[str, tuple[Wiring, float]]:
    """App name -> its wiring and the time its records start (``None``: every app)."""
    settings = base.settings
    registry = Apps(base.client, base_of(settings.redis_prefix))
    chosen = registry.all() if app is None else {app: registry.require(app)}
    return {name: (Wiring(app_settings(settings, found), base.client),
                   0.0 if name == DEFAULT else
                   found.created_at - settings.attribution_clock_skew_seconds)
            for name, found in chosen.items()}


def cycle(settings: Settings, app: str | None, models: Sequence[str],
          items: int | None = None) -> tuple[list[Published], list[str]]:
    """One cycle: read the log once, train every chosen app; returns the runs published
    and the errors (one line each) of the apps that trained nothing."""
    base = Wiring.connect(settings, "trainer")
    try:
        chosen = apps_to_train(base, app)
        read = asyncio.run(read_log(settings))
        published, errors = [], []
        for name, (wiring, since) in chosen.items():
            try:
                published += train_app(wiring, read, name, since, models, items)
            except (TrainerError, RunError) as error:
                errors.append(str(error))
        return published, errors
    finally:
        base.close()


def run_forever(settings: Settings, app: str | None, models: Sequence[str], every: float,
                items: int | None = None) -> None:
    """Cycles every ``every`` seconds (from each cycle's start); never ends on a cycle's
    error."""
    while True:
        started = time.monotonic()
        try:
            published, errors = cycle(settings, app, models, items)
            for done in published:
                log.info("%s", done.describe())
            for error in errors:
                log.warning("%s; next cycle in %.0f s", error, every)
        except Exception as error:  # Kafka or Redis away, a bug: the next cycle retries
            log.error("trainer cycle failed: %s: %s; next cycle in %.0f s",
                      type(error).__name__, error, every, exc_info=log.isEnabledFor(10))
        time.sleep(max(0.0, every - (time.monotonic() - started)))


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
