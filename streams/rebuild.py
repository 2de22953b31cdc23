"""``streamrec rebuild``: build a model version by replaying the retained events topic into
its own namespace, with the version's hyperparameters, while the serving version goes on
serving. Batches take the worker's path (:class:`streams.batch.EventBatches`).

A version built by ``rebuild`` is kept up to date by its own worker
(``streamrec worker --version NAME``), which continues from the offsets the rebuild
applied.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamrec.apps import DEFAULT, Apps, base_of
from streamrec.connections import kafka_client_options
from streamrec.kafka import partition_ids
from streamrec.settings import Settings
from streamrec.storage.model_versions import MAIN, Version, VersionError, check_name
from streamrec.wiring import Wiring
from streams.batch import EventBatches
from streams.decode import PlainRecord, highest_offsets, replays_for


@dataclass
class RebuildReport:
    version: str
    events: int = 0
    rejected: int = 0
    skipped: int = 0  # already applied (a restarted rebuild, or a restored snapshot)
    seconds: float = 0.0
    offsets: dict[str, int] = field(default_factory=dict)


async def rebuild(settings: Settings, name: str, overrides: dict[str, Any],
                  snapshot: Path | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  app: str = DEFAULT) -> RebuildReport:
    """Build version ``name`` by replaying the events topic from its start (or from a
    snapshot's offsets) up to its end as of now, with ``overrides`` on the model settings.

    The serving version is untouched. Batches are applied with their offsets in one Redis
    call each, as the worker does, so an interrupted rebuild can simply be run again; the
    version's consumer group gets the offsets committed, so ``streamrec worker --version``
    continues from where the rebuild stopped. ``progress(done, total)`` is called per batch.

    ``settings`` are app ``app``'s (:func:`streamrec.apps.app_settings`): the topic is
    shared by every app, and only ``app``'s records of it are learned (the others count
    as read, not as rejected).
    """
    check_name(name)
    if name == MAIN:
        raise VersionError("rebuild into a new version name; 'main' is the base state")
    base = Wiring.connect(settings, "rebuild")
    try:
        registry = base.versions()
        if registry.serving() == name:
            raise VersionError(f"version {name!r} is serving: rebuild into another name")
        version = Version(name, overrides, status="building")
        registry.register(version)
        wiring = base.for_version(name, version)
        # The broker's append time against the registry's clock: forgive the skew the
        # attribution forgives (an app deleted and made again within it is not told apart).
        since = 0.0 if app == DEFAULT else Apps(
            base.client, base_of(settings.redis_prefix)).require(app).created_at - (
            settings.attribution_clock_skew_seconds)
        report = await _replay(wiring, snapshot, progress, app, since)
        registry.register(Version(name, overrides, status="ready",
                                  created_at=version.created_at))
        return report
    finally:
        base.close()


async def _replay(wiring: Wiring, snapshot: Path | None,
                  progress: Callable[[int, int], None] | None, app: str, since: float
                  ) -> RebuildReport:
    effective = wiring.settings
    store = wiring.store()
    if snapshot is not None:
        wiring.restore_snapshot(snapshot)
    batches = EventBatches(wiring.engine(store), store, effective.weights(),
                           effective.max_event_time_skew_seconds, wiring.read_event_types())
    report = RebuildReport(effective.state_version)
    topic = effective.events_topic
    consumer = AIOKafkaConsumer(**kafka_client_options(effective),
                                group_id=effective.worker_id, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_poll_records=5000)
    await consumer.start()
    started = time.perf_counter()
    try:
        partitions = [TopicPartition(topic, p) for p in await partition_ids(effective, topic)]
        if not partitions:
            raise VersionError(f"topic {topic!r} has no partitions")
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        applied = store.applied_offsets([f"{tp.topic}:{tp.partition}" for tp in partitions])
        for tp in partitions:
            done = applied.get(f"{tp.topic}:{tp.partition}")
            consumer.seek(tp, max(starts[tp], done + 1) if done is not None else starts[tp])
        total = sum(ends[tp] - starts[tp] for tp in partitions)
        position = 0
        for tp in partitions:
            position += min(await consumer.position(tp), ends[tp]) - starts[tp]
        report.skipped = position
        if progress is not None:
            progress(position, total)
        remaining = set()
        for tp in partitions:
            if await consumer.position(tp) < ends[tp]:
                remaining.add(tp)
        while remaining:
            fetched = await consumer.getmany(*remaining, timeout_ms=1000,
                                             max_records=effective.batch_size)
            read = [PlainRecord(r.topic, r.partition, r.offset, r.key, r.value,
                                r.timestamp / 1000.0,  # Faust's messages carry seconds
                                r.timestamp_type, r.headers)
                    for tp, batch in fetched.items() for r in batch if r.offset < ends[tp]]
            records = [record for record in read if replays_for(record, app, since)]
            if records:
                fresh = batches.read(records, through=highest_offsets(read))
                report.rejected += len(fresh.decoded.rejected)
                report.skipped += fresh.skipped
                batches.learn(fresh)
                report.events += len(fresh.decoded.interactions)
            if read:
                # Only what was applied: records past the end are the version's
                # worker's to apply.
                await consumer.commit({
                    tp: min(max(r.offset for r in batch), ends[tp] - 1) + 1
                    for tp, batch in fetched.items() if batch and batch[0].offset < ends[tp]})
                if progress is not None:
                    progress(len(read), total)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        report.offsets = {f"{tp.topic}:{tp.partition}": ends[tp] - 1 for tp in partitions
                          if ends[tp] > starts[tp]}
    finally:
        await consumer.stop()
    report.seconds = time.perf_counter() - started
    return report
