"""Learn a batch exactly once, also after a crash in the middle of a sharded apply.

On one Redis a batch is one atomic Lua call that also records the offsets it applied, so a
replayed record is recognised by the offsets alone. On a Redis Cluster a batch is one call
per group of slots (``RedisStore.apply``), in a fixed order: the global state and the item
groups, then the user groups, then the offsets. A crash between two calls leaves some
groups ahead of the offsets; each group records what it applied, so:

- the records split into chunks at the offsets the groups stopped at, so that every group
  applied all of a chunk or none of it, and each group skips the chunks it applied;
- a record whose user's group applied it was applied by every group (the users come after
  the rest) and is left out of the learning: the history it would read holds it already.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from recommender.base import Interaction
from recommender.engine import Engine
from streamrec.storage.state_store import RedisStore
from streams.decode import DecodedEvents, Record, source

log = logging.getLogger(__name__)


CAUGHT_UP = "catching up"  # what the worker logs when it replays an interrupted batch


@dataclass(frozen=True)
class Chunk:
    partition: str
    records: list[Record]
    # The user groups that applied every record of the chunk already.
    done_user_groups: frozenset[str]


def chunks(records: list[Record], applied: Mapping[str, int],
           markers: Mapping[str, Mapping[str, int]]) -> list[Chunk] | None:
    """The chunks to replay, or None when no group is ahead of the ``applied`` offsets
    (the usual case: learn the batch whole).

    >>> from types import SimpleNamespace as R
    >>> batch = [R(topic="e", partition=0, offset=n) for n in range(5, 10)]
    >>> markers = {"global": {"e:0": 7}, "i1": {"e:0": 7}, "u1": {"e:0": 6}, "u2": {}}
    >>> [([r.offset for r in c.records], sorted(c.done_user_groups))
    ...  for c in chunks(batch, {"e:0": 4}, markers)]
    [([5, 6], ['u1']), ([7], []), ([8, 9], [])]
    >>> chunks(batch, {"e:0": 7}, markers) is None
    True
    """
    if not markers:  # one Redis: a batch is one atomic call, never half applied
        return None
    by_partition: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_partition[source(record)].append(record)
    if not any(marker.get(name, -1) > applied.get(name, -1)
               for marker in markers.values() for name in by_partition):
        return None
    plan: list[Chunk] = []
    for name, batch in by_partition.items():
        cuts = sorted({marker[name] for marker in markers.values() if name in marker})
        current: list[Record] = []
        for record in sorted(batch, key=lambda r: r.offset):
            if current and any(current[-1].offset <= cut < record.offset for cut in cuts):
                plan.append(_chunk(name, current, markers))
                current = []
            current.append(record)
        plan.append(_chunk(name, current, markers))
    return plan


def _chunk(name: str, records: list[Record], markers: Mapping[str, Mapping[str, int]]
           ) -> Chunk:
    end = records[-1].offset
    done = frozenset(group for group, marker in markers.items()
                     if group.startswith("u") and marker.get(name, -1) >= end)
    return Chunk(name, records, done)


def learn_once(engine: Engine, store: RedisStore,
               decode: Callable[[list[Record]], DecodedEvents], records: list[Record],
               interactions: list[Interaction], offsets: dict[str, int]) -> None:
    """Learn ``interactions`` (``decode(records)``) unless an earlier attempt did: the
    offsets travel with the state, so a batch whose reply was lost with the connection, or
    that a crash cut short, is recognised. ``decode`` decodes a part of the batch again as
    it decoded the whole (the same clock), to replay what a crash left unapplied."""
    # Before the batch reads any state: a user deleted while it runs is deleted again after.
    deletions = store.deletion_count()
    stored = store.applied_offsets(offsets)
    if offsets and all(stored.get(name, -1) >= offset for name, offset in offsets.items()):
        return
    try:
        _learn(engine, store, decode, records, interactions, offsets, stored)
    finally:
        store.delete_again({event.user_id for event in interactions}, deletions)


def _learn(engine: Engine, store: RedisStore, decode: Callable[[list[Record]], DecodedEvents],
           records: list[Record], interactions: list[Interaction], offsets: dict[str, int],
           stored: dict[str, int]) -> None:
    plan = chunks(records, stored, store.group_markers(offsets))
    if plan is None:
        engine.learn_many(interactions, offsets)
        return
    log.warning("%s: %d chunk(s) of an interrupted batch replayed group by group",
                CAUGHT_UP, len(plan))
    for chunk in plan:
        decoded = decode(chunk.records).interactions
        kept = [event for event in decoded
                if store.user_group(event.user_id) not in chunk.done_user_groups]
        engine.learn_many(kept, {chunk.partition: chunk.records[-1].offset},
                          events=len(decoded))
