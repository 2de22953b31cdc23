"""Agents: thin loops that take a batch, decode it, and write through the store.

Concurrency stays 1 per agent: faust-streaming can commit offsets out of order with more.
Offsets are committed after the agent moves on from a batch, so a crash replays the batch
(at-least-once); the dead-letter sends are awaited before that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial

import redis

from recommender.attribution import Attributor
from recommender.engine import Engine
from schemas.models import Item, User
from streamrec.storage.feedback_store import RedisFeedback
from streamrec.storage.model_versions import MAIN, Versions, state_prefix
from streamrec.storage.ops_stats import OpsStats
from streamrec.storage.state_store import RedisStore
from streams.app import app, settings
from streams.catchup import learn_once
from streams.decode import (
    Rejected,
    decode_catalog,
    decode_events,
    decode_impressions,
    source,
    unapplied,
)
from streams.topics import (
    dead_letter_topic,
    events_topic,
    impressions_topic,
    items_topic,
    users_topic,
)

log = logging.getLogger(__name__)

store = RedisStore.from_url(settings.redis_url, settings.redis_prefix,
                            catalog_prefix=settings.catalog_prefix,
                            cluster=settings.redis_cluster)
# A model version's worker only learns; the main worker also keeps the catalog and the
# feedback (shared by every version).
MAIN_WORKER = settings.state_version == MAIN
engine = Engine(store, settings.engine_config())
weights = settings.weights()
ops = OpsStats(store.client, settings.redis_prefix)
attributor = Attributor(RedisFeedback(store.client, settings.redis_prefix),
                        settings.attribution_window_seconds, settings.attribution_grace_seconds,
                        settings.reward_event_types, settings.attribution_clock_skew_seconds)


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


def freshness_samples(batch, now: float, most: int = 20) -> list[float]:
    """Milliseconds from each record's Kafka time to now, for a spread of the batch."""
    step = max(1, len(batch) // most)
    return [max(0.0, (now - event.message.timestamp) * 1000) for event in batch[::step]]


async def send_to_dead_letters(rejected: list[Rejected]) -> None:
    if not rejected:
        return
    pending = [
        await app.producer.send(
            dead_letter_topic.get_topic_name(), key=reject.record.key,
            value=reject.record.value, partition=None, timestamp=None,
            headers=reject.headers(),
        )
        for reject in rejected
    ]
    await asyncio.gather(*pending)
    for reject in rejected:
        log.warning("dead-lettered %s/%s/%s: %s", reject.record.topic, reject.record.partition,
                    reject.record.offset, reject.reason)


@app.agent(events_topic, concurrency=1)
async def update_recommendation_state(stream):
    """Learn every model from a batch, then credit the batch's feedback to its variants."""
    async for batch in stream.take_events(settings.batch_size, settings.batch_within_seconds):
        records = [event.message for event in batch]
        # Effectively once: the state carries the last offset it applied per partition
        # (same transaction), so whatever Kafka redelivers after a crash is skipped here.
        applied = await steadily(store.applied_offsets, {source(r) for r in records})
        fresh, offsets = unapplied(records, applied)
        if not fresh:
            continue
        # One clock for the batch: a part replayed after a crash decodes as the whole did.
        decode = partial(decode_events, weights=weights,
                         max_skew=settings.max_event_time_skew_seconds, now=time.time())
        decoded = decode(fresh)
        if MAIN_WORKER:  # a version's worker sees the same rejects: one dead letter each
            await send_to_dead_letters(decoded.rejected)
        started = time.perf_counter()
        await steadily(learn_once, engine, store, decode, fresh, decoded.interactions, offsets)
        log.debug("applied %d events in %.1f ms", len(decoded.interactions),
                  1000 * (time.perf_counter() - started))
        if decoded.interactions:
            await steadily(ops.record_freshness, freshness_samples(batch, time.time()))
        if decoded.feedback and MAIN_WORKER:
            events = [(f.recommendation_id, f.user_id, f.item_id, f.event_type, f.timestamp,
                       f.received) for f in decoded.feedback]
            await steadily(attributor.credit_many, events, time.time())


@app.agent(impressions_topic, concurrency=1)
async def record_impressions(stream):
    """Keep what was shown (for the attribution window) and count it per variant."""
    async for batch in stream.take_events(settings.batch_size, settings.batch_within_seconds):
        if not MAIN_WORKER:
            continue  # the main worker records them; a version's worker only drains
        impressions, rejected = decode_impressions([event.message for event in batch])
        await send_to_dead_letters(rejected)
        if impressions:
            await steadily(attributor.record_impressions, impressions, time.time())


@app.timer(interval=1.0)
async def retry_waiting_feedback():
    """Feedback that arrived before its impression is tried again until its grace ends."""
    if MAIN_WORKER and attributor.waiting():
        await asyncio.to_thread(attributor.credit_many, [], time.time())


async def _update_catalog(stream, model, put) -> None:
    async for batch in stream.take_events(settings.batch_size, settings.batch_within_seconds):
        if not MAIN_WORKER:
            continue  # the catalog is shared: the main worker keeps it
        documents, rejected = decode_catalog([event.message for event in batch], model)
        await send_to_dead_letters(rejected)
        if documents:
            await steadily(put, documents)


def put_users(documents) -> None:
    """A tombstone deletes the user and their state in every model version; then the last
    document of each user in the batch is stored (the compacted topic's order), so a user
    deleted and described again within a batch starts afresh with the new document."""
    deleted = list(dict.fromkeys(user for user, document in documents if document is None))
    if deleted:
        versions = Versions(store.client, settings.redis_prefix).all()
        store.delete_users(deleted, also=[state_prefix(settings.redis_prefix, name)
                                          for name in versions])
    store.put_users([(user, document) for user, document in dict(documents).items()
                     if document is not None])


@app.agent(items_topic, concurrency=1)
async def update_items(stream):
    await _update_catalog(stream, Item, store.put_items)


@app.agent(users_topic, concurrency=1)
async def update_users(stream):
    await _update_catalog(stream, User, put_users)
