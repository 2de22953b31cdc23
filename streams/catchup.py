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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from recommender.base import Interaction
from recommender.engine import Engine
from recommender.once import Claim, DuplicateEvents
from streamrec.storage.state_store import RedisStore
from streams.decode import DecodedEvents, Record, position, source

log = logging.getLogger(__name__)


CAUGHT_UP = "catching up"  # what the worker logs when it replays an interrupted batch
# Feedback to keep with a batch: its record's position, its waiting entry, when it gives up.
Waiting = tuple[str, str, float]


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
               interactions: list[Interaction], offsets: dict[str, int],
               claims: Sequence[Claim | None] = (), waiting: Sequence[Waiting] = ()
               ) -> frozenset[str]:
    """Learn ``interactions`` (``decode(records)``) unless an earlier attempt did: the
    offsets travel with the state, so a batch whose reply was lost with the connection, or
    that a crash cut short, is recognised. ``decode`` decodes a part of the batch again as
    it decoded the whole (the same clock), to replay what a crash left unapplied.

    ``claims`` (in step with ``interactions``, or empty) are their event ids: records that
    repeat an id applied already are left out (:func:`learn_new`). Returns their
    positions. ``waiting`` is the batch's feedback to keep with the state."""
    # Before the batch reads any state: a user deleted while it runs is deleted again after.
    deletions = store.deletion_count()
    stored = store.applied_offsets(offsets)
    if offsets and all(stored.get(name, -1) >= offset for name, offset in offsets.items()):
        return frozenset()
    try:
        return _learn(engine, store, decode, records, interactions, offsets, stored,
                      claims or [None] * len(interactions), waiting)
    finally:
        store.delete_again({event.user_id for event in interactions}, deletions)


def learn_new(engine: Engine, interactions: Sequence[Interaction],
              claims: Sequence[Claim | None], offsets: Mapping[str, int],
              events: int | None = None, learned: Callable[[Interaction], bool] | None = None,
              waiting: Sequence[Waiting] = ()) -> frozenset[str]:
    """Learn the interactions whose records do not repeat an event id; returns the
    positions of those that do.

    The store decides in the same atomic step that writes the state and the offsets
    (``recommender.once``): it refuses a batch that repeats an id, naming the records,
    and the batch is learned again without them (a retry is rare, so no read beforehand).
    ``events`` counts the batch's records when some were applied already; ``learned``
    keeps those a replay still has to learn (all by default); ``waiting`` feedback is
    kept with the state, but not a repeat's."""
    dropped: frozenset[str] = frozenset()
    while True:
        kept = [(event, claim) for event, claim in zip(interactions, claims, strict=True)
                if claim is None or claim.position not in dropped]
        try:
            engine.learn_many(
                [event for event, _ in kept if learned is None or learned(event)], offsets,
                events=(len(kept) if events is None else events - len(dropped)),
                claims=[claim for _, claim in kept if claim is not None],
                duplicates=len(interactions) - len(kept),
                waiting_feedback=[(entry, give_up) for position, entry, give_up in waiting
                                  if position not in dropped])
            return dropped
        except DuplicateEvents as refused:
            dropped |= refused.positions


def _learn(engine: Engine, store: RedisStore, decode: Callable[[list[Record]], DecodedEvents],
           records: list[Record], interactions: list[Interaction], offsets: dict[str, int],
           stored: dict[str, int], claims: Sequence[Claim | None],
           waiting: Sequence[Waiting]) -> frozenset[str]:
    plan = chunks(records, stored, store.group_markers(offsets))
    if plan is None:
        return learn_new(engine, interactions, claims, offsets, waiting=waiting)
    log.warning("%s: %d chunk(s) of an interrupted batch replayed group by group",
                CAUGHT_UP, len(plan))
    dropped: frozenset[str] = frozenset()
    for chunk in plan:
        decoded = decode(chunk.records)
        mine = {position(record) for record in chunk.records}
        dropped |= learn_new(
            engine, decoded.interactions, decoded.claims,
            {chunk.partition: chunk.records[-1].offset}, events=len(decoded.interactions),
            learned=lambda event, done=chunk.done_user_groups: (
                store.user_group(event.user_id) not in done),
            waiting=[entry for entry in waiting if entry[0] in mine])
    return dropped
