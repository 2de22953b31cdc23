"""The one path from Kafka records to applied state, for the worker and every replay.

Applied offsets -> the records not applied yet -> decode (one clock for the batch) ->
learn every model -> write through the store with the offsets, in one Redis call (one per
group of slots on a cluster, where :mod:`streams.catchup` replays what a crash left
half-applied). The worker (:mod:`streams.agents`) and ``streamrec rebuild``
(:mod:`streams.rebuild`) both call :class:`EventBatches`; a batch replayed after a crash is
recognised by its offsets, so nothing is learned twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from recommender.engine import Engine
from recommender.weights import EventWeights
from streamrec.storage.state_store import RedisStore
from streams.catchup import Waiting, learn_once
from streams.decode import DecodedEvents, Record, decode_events, source, unapplied


@dataclass(frozen=True)
class Batch:
    """The records of a batch not applied yet, decoded."""

    records: list[Record]
    offsets: dict[str, int]  # the highest offset per partition among ``records``
    decoded: DecodedEvents
    skipped: int  # records applied before (a replay after a crash, a restarted rebuild)
    decode: Callable[[list[Record]], DecodedEvents]  # decodes a part as the whole was


class EventBatches:
    """Read a batch of event records against the applied offsets, then learn it once."""

    def __init__(self, engine: Engine, store: RedisStore, weights: EventWeights,
                 max_event_time_skew: float,
                 read_weights: Callable[[], Mapping[str, float]] | None = None) -> None:
        self.engine = engine
        self.store = store
        self.weights = weights
        self.max_event_time_skew = max_event_time_skew
        self.read_weights = read_weights

    def read(self, records: list[Record], now: float | None = None,
             refused: Mapping[str, str] | None = None,
             through: Mapping[str, int] | None = None) -> Batch:
        """The records past their partition's applied offset, decoded as of ``now`` (the
        worker's clock by default: it bounds records without the broker's append time).

        With apps, ``records`` are one app's part of a batch read from the shared topics:
        ``refused`` rejects some by position with a reason found before (their app does
        not exist), and ``through`` is the highest offset per partition of the whole
        batch, which the part's offsets are raised to: the part holds every record of its
        app up to there, so the app's state says how far it has read the topic (its lag),
        not only where its own last record was."""
        # Effectively once: the state carries the last offset it applied per partition
        # (same transaction), so whatever Kafka redelivers after a crash is skipped here.
        applied = self.store.applied_offsets({source(r) for r in records})
        if self.read_weights is not None:
            # Read after the API read them to accept these records: a type it accepted is
            # known here too (streamrec.storage.event_weights). A new object per batch, so
            # a part replayed after a crash decodes with the batch's table.
            self.weights = EventWeights(self.read_weights(), self.weights.rating_threshold)
        fresh, offsets = unapplied(records, applied)
        if through:
            offsets = {name: max(offset, through.get(name, offset))
                       for name, offset in offsets.items()}
        # One clock for the batch: a part replayed after a crash decodes as the whole did.
        decode = partial(decode_events, weights=self.weights,
                         max_skew=self.max_event_time_skew,
                         now=time.time() if now is None else now, refused=refused)
        return Batch(fresh, offsets, decode(fresh), len(records) - len(fresh), decode)

    def learn(self, batch: Batch, waiting: Sequence[Waiting] = ()) -> frozenset[str]:
        """Learn the batch's events and write them with its offsets (and its ``waiting``
        feedback), unless an earlier attempt did (a reply lost with the connection, a
        crash in the middle). Returns the positions of the records left out for repeating
        an event id."""
        if not batch.offsets:
            return frozenset()
        return learn_once(self.engine, self.store, batch.decode, batch.records,
                          batch.decoded.interactions, batch.offsets, batch.decoded.claims,
                          waiting)
