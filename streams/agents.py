"""Agents: thin loops that take a batch, decode it, and write through the store.

Concurrency stays 1 per agent: faust-streaming can commit offsets out of order with more.
Offsets are committed once a batch is handled (when the agent moves on from it; the events
agent acks each batch once learned), so a crash replays the batch (at-least-once); the
dead-letter sends are awaited before that. An agent that fails for a
reason nobody handles stops the worker (:func:`stops_the_worker`): Faust would restart it
in place, past the batch it failed on.

The events agent learns each app's part of a batch in the worker's learning process
(:mod:`streams.learner`) and awaits it; the catalog, the impressions and the feedback are
written from here. The agents are declared on an App by :func:`register_agents` with the
parts the composition root built (:class:`~streams.worker_parts.WorkerParts`) and the
learner; nothing is built when this module is imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time

import faust
import redis

from schemas.models import Item, User
from streamrec.shutdown import exit_within
from streamrec.storage.model_versions import MAIN
from streams import learner as learning
from streams.app_parts import AppParts, Split
from streams.decode import Rejected, decode_catalog, decode_impressions, position
from streams.prepared import Prepared
from streams.take import ack, take_events
from streams.topics import Topics
from streams.worker_parts import WorkerParts

log = logging.getLogger(__name__)


async def steadily(call, *args):
    """Run a blocking store call in a thread, retrying with backoff while Redis is away.

    The agent does not move past its batch meanwhile, so Kafka offsets are not committed
    and nothing is lost; the applied offsets in Redis make the retry safe.
    """
    delay = 0.2
    while True:
        try:
            return await asyncio.to_thread(call, *args)
        except redis.RedisError as error:
            log.warning("Redis unavailable (%s); retrying in %.1f s", error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def stops_the_worker(app: faust.App, agent):
    """``agent``, stopping the worker when it fails for a reason nobody handled (a bug, a
    write the store refused, a broker that stopped answering a dead-letter send).

    Faust would restart the agent in place. The restarted agent takes the records after the
    batch it failed on, and once they are applied, the applied offsets in Redis stand past
    that batch: a later replay skips it, and its events are lost. Stopping the process
    instead leaves the batch uncommitted, to be read again when the worker starts again
    (its orchestrator restarts it). The failed agent holds its batch until the process
    ends, so that nothing is taken past it meanwhile; the process ends within
    ``ROLE_STOP_SECONDS`` whatever the stop waits on."""

    @functools.wraps(agent)
    async def guarded(stream):
        try:
            await agent(stream)
        except Exception as error:
            await stop_the_worker(app, agent.__name__, error)
            await asyncio.Event().wait()  # until the stop cancels it

    return guarded


async def stop_the_worker(app: faust.App, name: str, error: BaseException) -> None:
    """:func:`stops_the_worker`'s stop: ``name`` failed with ``error``."""
    log.critical("%s failed (%r): stopping the worker, which starts again from the last "
                 "committed offset", name, error, exc_info=error)
    exit_within()
    await app.crash(error)


def put_items(parts: WorkerParts, documents) -> None:
    """Store the items; their per-category popularity follows their categories (a view
    learned before its item's document counts in the item's categories once it arrives).
    A model version's own state is left as it was learned."""
    parts.store.put_items(documents, parts.batches.engine.popularity_decay)


def put_users(parts: WorkerParts, documents) -> None:
    """A tombstone deletes the user and their state in every model version; then the last
    document of each user in the batch is stored (the compacted topic's order), so a user
    deleted and described again within a batch starts afresh with the new document."""
    deleted = list(dict.fromkeys(user for user, document in documents if document is None))
    if deleted:
        parts.store.delete_users(deleted, also=[parts.versions.prefix(name)
                                                for name in parts.versions.all()])
    parts.store.put_users([(user, document) for user, document in dict(documents).items()
                           if document is not None])


# How stale the tally trials' copies may get (other workers' item vectors and the catalog's
# content; the vectors this worker learns are in its copy at once). Each refresh reads back
# every item vector changed since the last one and every change row of the index's 5-s
# reach-back, in the learning process, between two parts: every second, that was 12% of the
# learning process's time at 100k items (docs/benchmarks.md). A tally counts which source
# would have found the event's item: a vector a few seconds old changes no count that matters.
TRIAL_REFRESH_SECONDS = 5.0


def register_agents(app: faust.App, topics: Topics, apps: AppParts,
                    learner: learning.Learner) -> None:
    """Declare the worker's agents and timers on ``app``; each batch is split by app and
    each app's part written through that app's parts (:mod:`streams.app_parts`)."""
    settings = apps.base.settings
    main_worker = apps.only is None or apps.base.settings.state_version == MAIN

    def take(stream, acked_here: bool = True):
        return take_events(stream, settings.batch_size, settings.batch_within_seconds,
                           acked_here)

    async def send_to_dead_letters(parts: WorkerParts, rejected: list[Rejected]) -> None:
        if not rejected:
            return
        pending = [
            await app.producer.send(
                topics.dead_letters.get_topic_name(), key=reject.record.key,
                value=reject.record.value, partition=None, timestamp=None,
                headers=reject.headers(),
            )
            for reject in rejected
        ]
        await asyncio.gather(*pending)
        await steadily(parts.ops.record_rejects,
                       [(reject.record.topic, reject.reason) for reject in rejected])
        for reject in rejected:
            log.warning("dead-lettered %s/%s/%s: %s", reject.record.topic,
                        reject.record.partition, reject.record.offset, reject.reason)

    async def split_batch(events, field: bool = False) -> Split:
        split = await steadily(apps.split, [event.message for event in events], field)
        if split.dropped:
            await steadily(apps.record_dropped, events[0].message.topic, split.dropped)
        return split

    async def learn_part(parts: WorkerParts, name: str, records, plain, split: Split
                         ) -> None:
        """Learn app ``name``'s part of a batch (``plain``: its records as
        :func:`streams.learner.plain` makes them) in the learning process, then credit its
        feedback to its variants. The rejects are dead-lettered before the part is
        applied: a crash in between sends them again, never loses them."""
        while True:
            try:
                count, rejects, learned = await learner.call(
                    learning.read_and_learn, name, split.apps.get(name), plain,
                    split.refused, split.through, main_worker)
                if not count:
                    return
                if main_worker and rejects:  # a version's worker sees the same rejects
                    found = {position(record): record for record in records}
                    await send_to_dead_letters(parts, [Rejected(found[at], reason)
                                                       for at, reason in rejects])
                if learned is None:
                    learned = await learner.call(learning.learn, name)
                repeated, interactions, waiting = learned
                break
            except learning.LearnerLost:
                continue  # a new learning process reads the part again
        if repeated:
            log.info("left out %d record(s) repeating an event id", repeated)
        if waiting:  # a repeat's feedback was not kept: it earns nothing either
            await steadily(parts.attributor.settle, time.time())

    async def still_there(name: str) -> None:
        if apps.may_go(name) and not await steadily(apps.still_there, name):
            try:
                await learner.call(learning.forget, name)
            except learning.LearnerLost:
                pass  # the new learning process builds its parts afresh, without the app's

    @app.agent(topics.events, name=f"{__name__}.update_recommendation_state", concurrency=1)
    @functools.partial(stops_the_worker, app)
    async def update_recommendation_state(stream):
        """Learn every model of each app from its part of a batch. Each part is applied
        with its app's offsets, so a crash between two apps' parts replays only the
        parts not applied.

        The next batches are taken, split and made plain while the learning process
        learns this one, so that process does not wait for them between two parts; when
        it is free, it learns every batch prepared meanwhile as one (up to the batch
        size, :mod:`streams.prepared`). Batches are learned in order, and each is acked
        once learned: a part is sent only after the one before it was applied."""
        while True:  # the learning process starts before the first batch is timed
            try:
                await learner.call(learning.ready)
                break
            except learning.LearnerLost:
                continue
        prepared = Prepared(settings.batch_size)

        async def learn_batches() -> None:
            acking: asyncio.Task | None = None
            try:
                while True:
                    events, split, plain = await prepared.take()
                    for name, records in split.parts.items():
                        if records:
                            await learn_part(apps.parts(name, split.apps.get(name)), name,
                                             records, plain[name], split)
                            await still_there(name)
                    # Acked while the next batch learns (an ack per record, each through
                    # Faust's sensors), after the batch before it.
                    if acking is not None:
                        await acking
                    acking = asyncio.create_task(ack(stream, events))
            finally:
                if acking is not None:  # a learned batch is acked, whatever comes next
                    await asyncio.shield(acking)

        def stopped(task: asyncio.Task) -> None:
            # Found at once, even while the loop below waits for a batch: nothing is
            # learned past the failed batch, which is not acked.
            if not task.cancelled() and task.exception() is not None:
                asyncio.ensure_future(stop_the_worker(
                    app, "update_recommendation_state", task.exception()))

        learning_batches = asyncio.create_task(learn_batches(), name="learn_batches")
        learning_batches.add_done_callback(stopped)
        try:
            async for events in take(stream, acked_here=False):
                split = await split_batch(events, field=True)
                plain = {name: [learning.plain(record) for record in records]
                         for name, records in split.parts.items() if records}
                queued = asyncio.ensure_future(prepared.put(events, split, plain))
                await asyncio.wait({queued, learning_batches},
                                   return_when=asyncio.FIRST_COMPLETED)
                if learning_batches.done():  # it failed: the callback stops the worker
                    queued.cancel()
                    await asyncio.Event().wait()  # holding the batches, until the stop
        finally:
            if not learning_batches.done():
                learning_batches.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await learning_batches

    @app.agent(topics.impressions, name=f"{__name__}.record_impressions", concurrency=1)
    @functools.partial(stops_the_worker, app)
    async def record_impressions(stream):
        """Keep what was shown (for the attribution window) and count it per variant."""
        async for events in take(stream):
            if not main_worker:
                continue  # the main worker records them; a version's worker only drains
            split = await split_batch(events)
            for name, records in split.parts.items():
                parts = apps.parts(name, split.apps.get(name))
                impressions, rejected = decode_impressions(
                    [r for r in records if position(r) not in split.refused])
                await send_to_dead_letters(parts, rejected + refused_of(records, split))
                if impressions:
                    await steadily(parts.attributor.record_impressions, impressions,
                                   time.time())
                    await still_there(name)

    @app.timer(interval=1.0, name=f"{__name__}.retry_waiting_feedback")
    async def retry_waiting_feedback():
        """Feedback that arrived before its impression (kept in Redis, so also what a
        crashed worker left) is tried again until its grace ends."""
        if main_worker:
            for parts in apps.cached():
                try:
                    await asyncio.to_thread(parts.attributor.settle, time.time())
                except redis.RedisError as error:  # the next tick tries again
                    log.warning("Redis unavailable (%s); waiting feedback not tried", error)
                    return

    @app.timer(interval=TRIAL_REFRESH_SECONDS, name=f"{__name__}.refresh_trials")
    async def refresh_trials():
        """The tally trials rank with this process's copies of the item factors and the
        catalog's content: bring them up to date with what other workers learned and what
        the catalog agent stored (learning here only updates the factors it learned)."""
        try:
            await learner.call(learning.refresh)
        except learning.LearnerLost:  # the next tick tries again
            pass
        except redis.RedisError as error:  # the next tick tries again
            log.warning("Redis unavailable (%s); item factors not refreshed", error)

    async def update_catalog(stream, model, put) -> None:
        async for events in take(stream):
            if not main_worker:
                continue  # the catalog is shared: the main worker keeps it
            split = await split_batch(events)
            for name, records in split.parts.items():
                parts = apps.parts(name, split.apps.get(name))
                mine = [r for r in records if position(r) not in split.refused]
                documents, rejected = decode_catalog(mine, model, name)
                await send_to_dead_letters(parts, rejected + refused_of(records, split))
                if documents:
                    await steadily(put, parts, documents)
                    await still_there(name)

    @app.agent(topics.items, name=f"{__name__}.update_items", concurrency=1)
    @functools.partial(stops_the_worker, app)
    async def update_items(stream):
        await update_catalog(stream, Item, put_items)

    @app.agent(topics.users, name=f"{__name__}.update_users", concurrency=1)
    @functools.partial(stops_the_worker, app)
    async def update_users(stream):
        await update_catalog(stream, User, put_users)


def refused_of(records, split: Split) -> list[Rejected]:
    """The records of a part refused before decoding (their app does not exist)."""
    return [Rejected(record, split.refused[position(record)]) for record in records
            if position(record) in split.refused]
