"""Decayed state over years of events, for every StateStore (in memory, Redis, the cluster
layout): what the store holds, read back with its landmarks, equals the decayed counts
computed straight from the events, at any half-life from a minute to a year. Subclasses
provide the ``store`` fixture and may give a ``twin`` in-memory store that must agree."""

from __future__ import annotations

import math
from collections import defaultdict

import pytest

from recommender.base import Interaction
from recommender.decay import RESCALE_HALF_LIVES, ForwardDecay
from recommender.engine import Engine, EngineConfig
from recommender.store import StateStore
from tests.factories import decayed_batches

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
HALF_LIVES = {"1 minute": MINUTE, "1 hour": HOUR, "1 day": DAY, "7 days": 7 * DAY,
              "365 days": 365 * DAY}
YEARS = 2.0
BATCH_HOURS = 24.0
CHECKS = 25  # moments at which the state is read back
WINDOW = 3
ITEMS = 6
CATEGORIES = {"i0": ["c0"], "i1": ["c0"], "i2": ["c0", "c1"], "i3": ["c1"], "i4": ["c1"]}
TOLERANCE = 1e-9
# Compared where the direct value is a normal double (with a margin for the reading time):
# below, doubles hold a few bits, and a rescale writes 0.
FLOOR = 1e-290


class Direct:
    """Decayed counts computed from the events alone: no store, no landmarks, no frames."""

    def __init__(self, half_life: float) -> None:
        self.half_life = half_life
        self.touches: list[tuple[str, float, float]] = []  # (item, time, weight)
        self.pairs: list[tuple[str, str, float, float]] = []  # (item, other, time, weight)
        self.recent: dict[str, list[str]] = defaultdict(list)

    def add(self, event: Interaction) -> None:
        # Every event of decayed_batches is a first touch within its user's window.
        window = self.recent[event.user_id]
        self.touches.append((event.item_id, event.timestamp, event.weight))
        for other in window[:WINDOW]:
            self.pairs.append((event.item_id, other, event.timestamp, event.weight))
            self.pairs.append((other, event.item_id, event.timestamp, event.weight))
        window.insert(0, event.item_id)

    def _decayed(self, at: float, weight: float, now: float) -> float:
        return weight * 2.0 ** ((at - now) / self.half_life)

    def popularity(self, now: float, category: str | None = None) -> dict[str, float]:
        values: dict[str, float] = defaultdict(float)
        for item, at, weight in self.touches:
            if category is None or category in CATEGORIES.get(item, ()):
                values[item] += self._decayed(at, weight, now)
        return values

    def counts(self, now: float) -> dict[str, float]:
        return self.popularity(now)  # every event is a first touch: N(i) is popularity

    def neighbours(self, now: float) -> dict[str, dict[str, float]]:
        values: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for item, other, at, weight in self.pairs:
            values[item][other] += self._decayed(at, weight, now)
        return values


def _assert_decayed_equal(read: dict[str, float], direct: dict[str, float], where: str
                          ) -> int:
    """``read`` equals ``direct`` where the direct value is a normal double; returns how
    many values were compared."""
    compared = 0
    for member, value in direct.items():
        if value >= FLOOR:
            assert member in read, (where, member)
            assert read[member] == pytest.approx(value, rel=TOLERANCE), (where, member)
            compared += 1
        elif member in read:
            assert read[member] < 2 * FLOOR, (where, member, read[member], value)
    return compared


def _cosines(direct: Direct, now: float) -> dict[str, list[tuple[str, float]]]:
    """Each item's neighbours by cosine, from the direct values (those all normal)."""
    counts, pairs = direct.counts(now), direct.neighbours(now)
    ranked = {}
    for item, others in pairs.items():
        if counts.get(item, 0.0) < FLOOR:
            continue
        scores = [(other, weight / math.sqrt(counts[item]) / math.sqrt(counts[other]))
                  for other, weight in others.items()
                  if weight >= FLOOR and counts.get(other, 0.0) >= FLOOR]
        ranked[item] = sorted(scores, key=lambda pair: (-pair[1], pair[0]))
    return ranked


def engine(store: StateStore, half_life: float) -> Engine:
    store.put_items([(item, {"item_id": item, "categories": categories})
                     for item, categories in CATEGORIES.items()])
    return Engine(store, EngineConfig(
        half_life=half_life, popularity_half_life=half_life, window=WINDOW,
        window_seconds=1e12, max_neighbours=100,
        history_length=50, mf_dim=2, mf_negative_pool=4, content_weight=0.0))


def raw_state(store: StateStore) -> dict:
    """The stored scores with their landmarks, as a store reads them."""
    items = [f"i{n}" for n in range(ITEMS)]
    return {"popular": store.popular(100),
            "categories": {c: store.popular(100, c) for c in ("c0", "c1")},
            "counts": store.item_counts(items),
            "neighbours": store.neighbours(items, 100)}


def _assert_same_raw(ours: dict, theirs: dict) -> None:
    """Two stores that took the same batches hold the same scores in the same frames."""
    def same(a, b, where):
        assert a.landmark == b.landmark, where
        scores_a, scores_b = dict(a.scores), dict(b.scores)
        assert scores_a.keys() == scores_b.keys(), where
        for member, value in scores_a.items():
            assert value == pytest.approx(scores_b[member], rel=1e-12, abs=1e-300), \
                (where, member)

    same(ours["popular"], theirs["popular"], "popular")
    same(ours["counts"], theirs["counts"], "counts")
    for name in ours["categories"]:
        same(ours["categories"][name], theirs["categories"][name], name)
    for item in ours["neighbours"]:
        same(ours["neighbours"][item], theirs["neighbours"][item], item)


def run_years(store: StateStore, half_life: float, twin: StateStore | None = None) -> None:
    """Learn YEARS of batches; at CHECKS moments compare what ``store`` holds with the
    direct computation (and with ``twin``, an in-memory store taking the same batches)."""
    built = engine(store, half_life)
    other = None if twin is None else engine(twin, half_life)
    decay = ForwardDecay(half_life)
    direct = Direct(half_life)
    batches = decayed_batches(YEARS, BATCH_HOURS)
    every = len(batches) // CHECKS
    landmarks, compared = set(), 0
    for number, batch in enumerate(batches, 1):
        built.learn_many(batch)
        if other is not None:
            other.learn_many(batch)
        for event in batch:
            direct.add(event)
        if number % every:
            continue
        now = batch[-1].timestamp + 600.0  # ten minutes after the batch's latest event
        found = raw_state(store)
        landmarks.add(found["popular"].landmark)
        where = f"{number} batches in"
        compared += _assert_decayed_equal(dict(decay.values_at(found["popular"], now)),
                                          direct.popularity(now), f"{where}: popular")
        for category, listed in found["categories"].items():
            compared += _assert_decayed_equal(dict(decay.values_at(listed, now)),
                                              direct.popularity(now, category),
                                              f"{where}: {category}")
        counts = found["counts"]
        compared += _assert_decayed_equal(
            {item: decay.value_at(value, counts.landmark, now)
             for item, value in counts.scores.items()}, direct.counts(now), f"{where}: cnt")
        pairs = direct.neighbours(now)
        for item, listed in found["neighbours"].items():
            compared += _assert_decayed_equal(dict(decay.values_at(listed, now)),
                                              pairs.get(item, {}), f"{where}: nbr {item}")
        for item, expected in _cosines(direct, now).items():
            similar = built.cooccurrence.similar(item, found["neighbours"][item], counts, 100)
            comparable = {other for other, _ in expected}
            ranked = [(other, score) for other, score in similar if other in comparable]
            assert [other for other, _ in ranked] == [other for other, _ in expected], \
                (where, item, similar, expected)
            for (_, score), (_, value) in zip(ranked, expected, strict=True):
                assert score > 0 and score == pytest.approx(value, rel=TOLERANCE), \
                    (where, item)
        if twin is not None:
            _assert_same_raw(found, raw_state(twin))
    assert compared > 10 * CHECKS
    if YEARS * 365 * DAY > 1.2 * RESCALE_HALF_LIVES * half_life:  # all but 365 days
        assert len(landmarks) >= 2, "no rescale happened"  # popularity's landmark moved


class DecayContract:
    def twin(self) -> StateStore | None:
        """An in-memory store that must hold the same as ``store`` (None: no comparison)."""
        return None

    @pytest.mark.parametrize("half_life", list(HALF_LIVES.values()), ids=list(HALF_LIVES))
    def test_years_of_events_read_back_as_their_decayed_counts(self, store, half_life):
        run_years(store, half_life, self.twin())
