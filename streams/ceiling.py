"""The framework's own ceiling: the worker's App and batching with an agent that does
nothing with what it takes. ``streamrec bench`` runs it over the same backlog the worker
applied and compares the two rates (``streamrec ingest-ceiling``, a hidden command).

It reads the events topic from the start in a consumer group of its own, passes over the
first ``skip`` records untimed (the bench's warm-up, which the worker applies before its
clock starts), times the records after the batch that reaches them up to the
``skip + events``-th, writes ``{"events", "seconds", "events_per_second",
"cpu_us_per_event"}`` (its own process's CPU over the timed records) to ``report`` and
exits. Meanwhile it takes every other topic the worker's agents take (impressions,
items, users) and does nothing with them either: the bench's catalog reaches both through
the same per-record path, within the timed window when there is no warm-up.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import faust
import orjson

from streamrec import collector
from streamrec.settings import Settings
from streams.app import create_app
from streams.topics import declare_topics


class Clock:
    """Times a run of batches as the bench times the worker: from the first batch that
    brings the records taken to ``skip`` or more, up to ``skip + events``; the records of
    that first batch are not counted (the worker's clock starts when its applied count
    reaches the warm-up, and counts what it applies after). A first batch that reaches
    ``skip + events`` alone ends the run with nothing timed (a rate of 0)."""

    def __init__(self, events: int, skip: int = 0) -> None:
        self.events, self.skip = events, skip
        self.taken = 0
        self.started: tuple[float, int] | None = None  # (time, records taken by then)

    def add(self, records: int, now: float) -> dict[str, float] | None:
        """Count a batch of ``records`` taken at ``now``; the report once it is done."""
        self.taken += records
        if self.started is None:
            if self.taken < self.skip:
                return None
            self.started = (now, self.taken)
        if self.taken < self.skip + self.events:
            return None
        since, before = self.started
        seconds, measured = now - since, self.taken - before
        return {"events": measured, "seconds": seconds,
                "events_per_second": measured / max(seconds, 1e-9)}


def build(settings: Settings, events: int, report: Path, skip: int = 0) -> faust.App:
    """The App that takes ``skip + events`` records off ``settings.events_topic`` as the
    worker does (timing the last ``events``, see :class:`Clock`), then writes the rate to
    ``report`` and exits."""
    ceiling = settings.model_copy(update={"worker_id": f"{settings.worker_id}-ceiling"})
    Path(ceiling.data_dir, "faust").mkdir(parents=True, exist_ok=True)
    app = create_app(ceiling)
    topics = declare_topics(app, ceiling)
    clock = Clock(events, skip)

    async def take_and_drop(stream):
        async for _ in stream.take_events(ceiling.batch_size, ceiling.batch_within_seconds):
            pass

    for other in (topics.impressions, topics.items, topics.users):
        app.agent(other, name=f"{__name__}.drop_{other.get_topic_name()}",
                  concurrency=1)(take_and_drop)

    @app.agent(topics.events, name=f"{__name__}.take_and_do_nothing", concurrency=1)
    async def take_and_do_nothing(stream):
        cpu_at_start = None  # this process's CPU seconds when the clock started
        async for batch in stream.take_events(ceiling.batch_size,
                                              ceiling.batch_within_seconds):
            done = clock.add(len(batch), time.perf_counter())
            if cpu_at_start is None and clock.started is not None:
                cpu_at_start = time.process_time()
            if done is not None:
                done["cpu_us_per_event"] = (1e6 * (time.process_time() - cpu_at_start)
                                            / max(done["events"], 1))
                report.write_bytes(orjson.dumps(done))
                await asyncio.sleep(0)
                os._exit(0)  # measured: nothing to commit, no state to close

    return app


def run(settings: Settings, events: int, report: Path, skip: int = 0) -> None:
    """Run :func:`build`'s App until it has measured."""
    app = build(settings, events, report, skip)
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    collector.settle()  # as the worker does: the same process settings on both sides
    app.main()
