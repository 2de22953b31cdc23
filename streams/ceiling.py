"""The framework's own ceiling: the worker's App and batching with an agent that does
nothing with what it takes. ``streamrec bench`` runs it over the same backlog the worker
applied and compares the two rates (``streamrec ingest-ceiling``, a hidden command).

It reads the events topic from the start in a consumer group of its own, times the records
after its first batch up to the ``events``-th, writes ``{"events", "seconds",
"events_per_second"}`` to ``report`` and exits. Meanwhile it takes every other topic the
worker's agents take (impressions, items, users) and does nothing with them either: the
bench's catalog reaches the worker in the same window, through the same per-record path.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import faust
import orjson

from streamrec.settings import Settings
from streams.app import create_app
from streams.topics import declare_topics


def build(settings: Settings, events: int, report: Path) -> faust.App:
    """The App that takes ``events`` records off ``settings.events_topic`` as the worker
    does, then writes the rate to ``report`` and exits."""
    ceiling = settings.model_copy(update={"worker_id": f"{settings.worker_id}-ceiling"})
    Path(ceiling.data_dir, "faust").mkdir(parents=True, exist_ok=True)
    app = create_app(ceiling)
    topics = declare_topics(app, ceiling)
    total, measured, first = 0, 0, None

    async def take_and_drop(stream):
        async for _ in stream.take_events(ceiling.batch_size, ceiling.batch_within_seconds):
            pass

    for other in (topics.impressions, topics.items, topics.users):
        app.agent(other, name=f"{__name__}.drop_{other.get_topic_name()}",
                  concurrency=1)(take_and_drop)

    @app.agent(topics.events, name=f"{__name__}.take_and_do_nothing", concurrency=1)
    async def take_and_do_nothing(stream):
        nonlocal total, measured, first
        async for batch in stream.take_events(ceiling.batch_size,
                                              ceiling.batch_within_seconds):
            total += len(batch)
            if first is None:  # timed from the first batch, as the bench times the worker
                first = time.perf_counter()
            else:
                measured += len(batch)
            if total >= events:
                seconds = time.perf_counter() - first
                report.write_bytes(orjson.dumps({
                    "events": measured, "seconds": seconds,
                    "events_per_second": measured / max(seconds, 1e-9)}))
                await asyncio.sleep(0)
                os._exit(0)  # measured: nothing to commit, no state to close

    return app


def run(settings: Settings, events: int, report: Path) -> None:
    """Run :func:`build`'s App until it has measured."""
    app = build(settings, events, report)
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()
