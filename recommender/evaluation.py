"""Prequential (test-then-learn) evaluation: replay events in time order; before a model
learns an event, ask it for the user's top-k and score whether the event's item is there.

Events are replayed in batches of ``batch_seconds`` of event time (at most ``max_batch``
events): the scores of a batch's events come from models that have learned everything
before the batch and nothing in it, which is what a live system with that freshness
sees. Only positive events (weight > 0) are scored; every event is learned.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from recommender.base import Interaction, ItemId, UserId
from recommender.engine import Engine
from recommender.store import StateUpdate

MAX_BATCH = 1000  # events in a replay's batch at most


class Learner(Protocol):
    def learn_many(self, interactions: Sequence[Interaction]) -> None: ...


class Recommender(Protocol):
    def learn_many(self, interactions: Sequence[Interaction]) -> None: ...

    def recommend(self, user_id: UserId, k: int, now: float) -> list[ItemId]: ...


@dataclass
class Tally:
    """Running sums of one model's scores."""

    events: int = 0
    hits: int = 0
    ndcg: float = 0.0
    reciprocal_rank: float = 0.0
    known_events: int = 0  # events of users seen before
    known_hits: int = 0
    # Cold-start slices: events whose user (or item) had fewer than N earlier events.
    slice_events: Counter = field(default_factory=Counter)
    slice_hits: Counter = field(default_factory=Counter)
    recommended: set[ItemId] = field(default_factory=set)
    seconds_recommending: float = 0.0
    seconds_learning: float = 0.0

    def add(self, ranked: Sequence[ItemId], target: ItemId, known: bool,
            slices: Sequence[str] = ()) -> None:
        # Called for every model on every scored event: searches in C, and the slices
        # (none for most events) counted without Counter.update's call.
        self.events += 1
        self.recommended.update(ranked)
        rank = ranked.index(target) if target in ranked else None
        if known:
            self.known_events += 1
        for name in slices:
            self.slice_events[name] += 1
        if rank is None:
            return
        self.hits += 1
        self.known_hits += known
        for name in slices:
            self.slice_hits[name] += 1
        self.ndcg += 1.0 / math.log2(rank + 2)
        self.reciprocal_rank += 1.0 / (rank + 1)

    def summary(self, catalog_size: int) -> dict[str, float]:
        n = max(self.events, 1)
        return {
            "events": self.events,
            "recall": self.hits / n,
            "ndcg": self.ndcg / n,
            "mrr": self.reciprocal_rank / n,
            "recall_known_users": self.known_hits / max(self.known_events, 1),
            **{f"recall_{name}": self.slice_hits[name] / max(self.slice_events[name], 1)
               for name in SLICES},
            **{f"events_{name}": self.slice_events[name] for name in SLICES},
            "coverage": len(self.recommended) / max(catalog_size, 1),
            "seconds_recommending": self.seconds_recommending,
            "seconds_learning": self.seconds_learning,
        }


SLICES = ("cold_users", "cold_items")


def cold_slices(user_events: int, item_events: int, threshold: int) -> tuple[str, ...]:
    """The cold-start slices an event falls in, given how many events its user and its
    item had before it.

    >>> cold_slices(0, 12, 5), cold_slices(7, 2, 5), cold_slices(9, 9, 5)
    (('cold_users',), ('cold_items',), ())
    """
    return tuple(name for name, seen in zip(SLICES, (user_events, item_events), strict=True)
                 if seen < threshold)


class EngineModels:
    """Models of one shared :class:`Engine`: it learns once per batch, and the lists of
    all its models for one request come from one :meth:`Engine.recommend_many` call
    (which reads and scores what they share once)."""

    def __init__(self, engine: Engine, names: Sequence[str],
                 variants: Mapping[str, Mapping[str, float]] | None = None,
                 learners: Sequence[Learner] = ()) -> None:
        self.engine = engine
        # What learns beside the engine: the schedule of trained runs the engine ranks
        # ``ease`` and ``ials`` with (its Engine.external_models).
        self.learners = tuple(learners)
        self.models = tuple(names)
        self.variants = dict(variants or {})  # hybrid lists with their own blends
        self.names = (*self.models, *self.variants)
        self._request: tuple | None = None
        self._lists: dict[str, list[ItemId]] = {}
        self._learned = 0
        # Where the engine's updates come from when it does not learn them itself: the
        # next batch's update, learned ahead on a copy of the state (another process),
        # without the blend's trials, which the engine makes on its own lists' reads.
        self.learned_elsewhere: Callable[[Sequence[Interaction]], StateUpdate] | None = None

    def model(self, name: str) -> EngineModel:
        return EngineModel(self, name)

    def learn_many(self, interactions: Sequence[Interaction]) -> None:
        if self.learned_elsewhere is not None:
            self.engine.apply_learned(self.learned_elsewhere(interactions), interactions)
        else:
            self.engine.learn_many(interactions)
        for learner in self.learners:
            learner.learn_many(interactions)
        self._learned += 1

    def lists(self, user_id: UserId, k: int, now: float) -> dict[str, list[ItemId]]:
        request = (user_id, k, now, self._learned)
        if request != self._request:
            results = self.engine.recommend_many(user_id, k, now, self.models,
                                                 variants=self.variants)
            self._lists = {name: [item for item, _ in result.items]
                           for name, result in results.items()}
            self._request = request
        return self._lists


class EngineModel:
    """One named model of :class:`EngineModels`: the first of them asked to learn a batch
    teaches the engine, the others learn nothing more."""

    def __init__(self, group: EngineModels, name: str) -> None:
        self.group = group
        self.name = name

    @property
    def learns(self) -> bool:
        return self.name == self.group.names[0]

    def learn_many(self, interactions: Sequence[Interaction]) -> None:
        if self.learns:
            self.group.learn_many(interactions)

    def recommend(self, user_id: UserId, k: int, now: float) -> list[ItemId]:
        return self.group.lists(user_id, k, now)[self.name]


def batches(events: Iterable[Interaction], seconds: float, most: int
            ) -> Iterator[list[Interaction]]:
    """Consecutive events within ``seconds`` of the batch's first one, at most ``most``.

    >>> events = [Interaction("u", "i", t, 1.0) for t in (0.0, 0.5, 2.0, 2.1, 9.0)]
    >>> [len(batch) for batch in batches(events, 1.0, 10)]
    [2, 2, 1]
    """
    batch: list[Interaction] = []
    for event in events:
        if batch and (event.timestamp - batch[0].timestamp >= seconds or len(batch) >= most):
            yield batch
            batch = []
        batch.append(event)
    if batch:
        yield batch


@dataclass
class Report:
    k: int
    cold_start: int
    totals: dict[str, dict[str, float]]
    over_time: list[dict[str, float]]  # one row per bucket: events seen, time, per-model recall
    events: int
    positives: int
    batches: int


def prequential(
    events: Sequence[Interaction],
    models: dict[str, Recommender],
    k: int = 10,
    batch_seconds: float = 1.0,
    max_batch: int = MAX_BATCH,
    buckets: int = 20,
    progress: Callable[[int], None] | None = None,
    cold_start: int = 5,
) -> Report:
    """Score every model on every positive event before any model learns it.

    Besides the totals, events are sliced by cold start: a user's first ``cold_start``
    events (``cold_users``) and an item's first ``cold_start`` events (``cold_items``).
    """
    tallies = {name: Tally() for name in models}
    user_events: Counter[UserId] = Counter()
    item_events: Counter[ItemId] = Counter()
    seen_users: set[UserId] = set()
    items: set[ItemId] = set()
    over_time: list[dict[str, float]] = []
    bucket_size = max(1, len(events) // buckets)
    bucket_start = {name: (0, 0) for name in models}  # (events, hits) at the bucket's start
    done = batch_count = positives = 0
    for batch in batches(events, batch_seconds, max_batch):
        batch_count += 1
        for event in batch:
            if event.weight <= 0:
                continue
            positives += 1
            known = event.user_id in seen_users
            slices = cold_slices(user_events[event.user_id], item_events[event.item_id],
                                 cold_start)
            for name, model in models.items():
                started = time.perf_counter()
                ranked = model.recommend(event.user_id, k, event.timestamp)
                tallies[name].seconds_recommending += time.perf_counter() - started
                tallies[name].add(ranked, event.item_id, known, slices)
        for name, model in models.items():
            started = time.perf_counter()
            model.learn_many(batch)
            tallies[name].seconds_learning += time.perf_counter() - started
        seen_users.update(event.user_id for event in batch)
        items.update(event.item_id for event in batch)
        user_events.update(event.user_id for event in batch)
        item_events.update(event.item_id for event in batch)
        before = done
        done += len(batch)
        if progress is not None:
            progress(len(batch))
        if done // bucket_size > before // bucket_size or done == len(events):
            row: dict[str, float] = {"events": done, "timestamp": batch[-1].timestamp}
            for name, tally in tallies.items():
                start_events, start_hits = bucket_start[name]
                scored = tally.events - start_events
                row[name] = (tally.hits - start_hits) / scored if scored else 0.0
                row["scored"] = scored
                bucket_start[name] = (tally.events, tally.hits)
            if row["scored"]:  # a last sliver of a bucket with nothing scored is no point
                over_time.append(row)
    totals = {name: tally.summary(len(items)) for name, tally in tallies.items()}
    _pool_shared_seconds(models, totals)
    return Report(k, cold_start, totals, over_time, len(events), positives, batch_count)


def _pool_shared_seconds(models: dict[str, Recommender],
                         totals: dict[str, dict[str, float]]) -> None:
    """Models of one shared engine (:class:`EngineModels`) rank and learn in one call, which
    the first of them pays for: each gets the group's seconds instead, and
    ``time_shared_by`` says how many models those seconds served."""
    groups: dict[int, list[str]] = {}
    for name, model in models.items():
        groups.setdefault(id(getattr(model, "group", model)), []).append(name)
    for names in groups.values():
        pooled = {key: sum(totals[name][key] for name in names)
                  for key in ("seconds_recommending", "seconds_learning")}
        for name in names:
            totals[name].update(pooled, time_shared_by=len(names))
