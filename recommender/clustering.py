"""Soft segments of users and per-segment Thompson sampling: the ``clustered`` allocation
strategy.

A user belongs to each of a placement's K segments with a weight (the weights sum to 1):

- by their MF vector (the worker keeps it current from their events): a softmax of the
  vector's cosine with K fixed random directions, drawn from a seed of the placement's
  name. Fixed rather than learned centroids (online k-means) because the arm statistics
  of a segment are only meaningful while the segment means the same users: centroids
  that drift would hand one population's history to another. Users whose tastes are
  alike have close vectors, hence close memberships.
- by a property the placement names (``segment_by``: ``device``, ``country``): one
  segment per listed value (``segment_values``) and one more for every other value. The
  request's ``context`` is read first, then the user's catalog properties.

Each segment keeps, per variant, the membership-weighted impressions and rewarded lists
(fields ``variant|s<k>|n``, ``variant|s<k>|r`` and the arm's total ``variant|n``), halved
when the arm's total reaches a cap, as the contextual state is. A request picks one of
the user's segments with probability its weight, then draws each variant from that
segment's Beta posterior: so the choice follows the user's membership-weighted mixture of
posteriors, and its propensity is the membership-weighted mix of each segment's win
probabilities (cached per refresh). A user with no vector or property has no membership:
the placement's overall posterior decides, as the plain bandit does.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

MAX_SEGMENTS = 16
SHARPNESS = 8.0  # softmax temperature of cosines: ~0.3 apart in cosine is ~10x the weight
MIN_WEIGHT = 0.01  # smaller memberships are dropped (logged and learned as 0)
SEPARATOR = "|"


@lru_cache(maxsize=1024)
def directions(placement: str, segments: int, dimensions: int) -> np.ndarray:
    """K fixed random unit vectors of ``dimensions``, the same in every process."""
    seed = int.from_bytes(hashlib.blake2b(placement.encode(), digest_size=8).digest(),
                          "little")
    vectors = np.random.default_rng(seed).standard_normal((segments, dimensions))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def vector_membership(vector: np.ndarray | None, placement: str, segments: int
                      ) -> dict[int, float]:
    """A user's weight in each segment, from their MF vector (the constant last component
    of a stored user vector left out by the caller); empty without a usable vector.

    >>> weights = vector_membership(np.array([0.3, -0.2, 0.5]), "home", 4)
    >>> round(sum(weights.values()), 6), len(weights) <= 4
    (1.0, True)
    >>> vector_membership(np.zeros(3), "home", 4)
    {}
    """
    if vector is None or len(vector) == 0:
        return {}
    vector = np.asarray(vector, dtype=float)
    norm = float(np.linalg.norm(vector))
    if not math.isfinite(norm) or norm == 0:
        return {}
    cosines = directions(placement, segments, len(vector)) @ (vector / norm)
    weights = np.exp(SHARPNESS * (cosines - cosines.max()))
    return _kept(weights / weights.sum())


def property_membership(value: Any, values: Sequence[str]) -> dict[int, float]:
    """The one segment of a property's value: its place in ``values``, or the last segment
    (``len(values)``) for any other value; empty when the user has no such property.

    >>> property_membership("desktop", ["mobile", "desktop"])
    {1: 1.0}
    >>> property_membership("tv", ["mobile", "desktop"]), property_membership(None, ["a"])
    ({2: 1.0}, {})
    """
    if value is None or isinstance(value, dict | list):
        return {}
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return {values.index(text) if text in values else len(values): 1.0}


def _kept(weights: np.ndarray) -> dict[int, float]:
    kept = {k: float(w) for k, w in enumerate(weights) if w >= MIN_WEIGHT}
    total = sum(kept.values())
    return {k: round(w / total, 4) for k, w in kept.items()}


def membership_features(membership: Mapping[int, float]) -> dict[str, float]:
    """How a membership is logged with the impression (``decision.features``), which the
    worker reads back to credit each segment its weight.

    >>> membership_features({0: 0.75, 3: 0.25})
    {'segment.0': 0.75, 'segment.3': 0.25}
    """
    return {f"segment.{k}": w for k, w in membership.items()}


def logged_membership(features: Mapping[str, float], segments: int) -> dict[int, float]:
    """The membership a logged decision carries (unknown or out-of-range names ignored)."""
    membership = {}
    for name, weight in features.items():
        kind, _, number = name.partition(".")
        if kind == "segment" and number.isdigit() and int(number) < segments \
                and math.isfinite(weight) and weight > 0:
            membership[int(number)] = min(1.0, weight)
    return membership


def impression_increments(variant: str, membership: Mapping[int, float]
                          ) -> list[tuple[str, float]]:
    """What one impression adds: its weight to each segment's count, 1 to the arm's.

    >>> impression_increments("a", {1: 0.25, 2: 0.75})
    [('a|s1|n', 0.25), ('a|s2|n', 0.75), ('a|n', 1.0)]
    """
    return [*((f"{variant}|s{k}|n", w) for k, w in membership.items()), (f"{variant}|n", 1.0)]


def reward_increments(variant: str, membership: Mapping[int, float]
                      ) -> list[tuple[str, float]]:
    """What a list's first reward adds: its weight to each segment's rewarded lists."""
    return [(f"{variant}|s{k}|r", w) for k, w in membership.items()]


def segment_stats(fields: Mapping[str, float], arms: Sequence[str], segments: int
                  ) -> np.ndarray:
    """``(segments, arms, 2)`` array of (impressions, rewarded lists) from a store's fields.

    >>> segment_stats({"a|s1|n": 4.0, "a|s1|r": 1.0, "b|s9|n": 3.0}, ["a", "b"], 2)[1, 0]
    array([4., 1.])
    """
    index = {name: n for n, name in enumerate(arms)}
    stats = np.zeros((segments, len(arms), 2))
    for name, value in fields.items():
        parts = name.split(SEPARATOR)
        if len(parts) != 3 or parts[0] not in index or not parts[1].startswith("s") \
                or parts[2] not in ("n", "r") or not math.isfinite(value):
            continue
        try:
            k = int(parts[1][1:])
        except ValueError:
            continue
        if 0 <= k < segments:
            stats[k, index[parts[0]], int(parts[2] == "r")] = max(0.0, value)
    return stats


class SegmentedThompson:
    """Thompson sampling per segment, the segment drawn from the user's membership.

    Parameters
    ----------
    draws
        Joint posterior draws behind each segment's cached win probabilities.
    seed
        Seed of the random draws.

    Examples
    --------
    >>> policy = SegmentedThompson(seed=1)
    >>> stats = np.array([[[1000, 300], [1000, 10]],    # segment 0: "a" wins
    ...                   [[1000, 10], [1000, 300]]])   # segment 1: "b" wins
    >>> policy.load(stats)
    >>> policy.choose(["a", "b"], {0: 1.0})[0], policy.choose(["a", "b"], {1: 1.0})[0]
    ('a', 'b')
    >>> round(policy.choose(["a", "b"], {0: 0.5, 1: 0.5})[1], 2)
    0.5
    """

    def __init__(self, draws: int = 4096, seed: int | None = None) -> None:
        self.draws = draws
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._stats = np.zeros((0, 0, 2))
        self._wins = np.zeros((0, 0))

    def load(self, stats: np.ndarray) -> None:
        """Keep ``(segments, arms, 2)`` statistics and each segment's win probabilities."""
        self._stats = np.asarray(stats, dtype=float)
        rng = np.random.default_rng(0)
        wins = []
        for segment in self._stats:
            alpha = 1 + segment[:, 1]
            beta = 1 + np.maximum(segment[:, 0] - segment[:, 1], 0)
            samples = rng.beta(alpha, beta, size=(self.draws, len(segment)))
            counts = np.maximum(np.bincount(samples.argmax(axis=1),
                                            minlength=len(segment)), 0.5)
            wins.append(counts / counts.sum())
        self._wins = np.array(wins)

    def win(self, segment: int, arm: int) -> float:
        """The cached probability a draw in ``segment`` picks ``arm``."""
        return float(self._wins[segment, arm])

    def choose(self, arms: Sequence[str], membership: Mapping[int, float],
               explore: float = 0.0) -> tuple[str, float]:
        """The arm a Thompson draw in one of the user's segments picks (or, with
        probability ``explore``, an even draw), and the probability of it over the
        segment's draw and the posterior's."""
        segments = list(membership)
        weights = np.array([membership[k] for k in segments])
        weights = weights / weights.sum()
        if explore > 0 and self._rng.random() < explore:
            chosen = int(self._rng.integers(len(arms)))
        else:
            position = int(np.searchsorted(np.cumsum(weights), self._rng.random(),
                                           side="right"))
            stats = self._stats[segments[min(position, len(segments) - 1)]]
            draws = self._rng.beta(1 + stats[:, 1],
                                   1 + np.maximum(stats[:, 0] - stats[:, 1], 0))
            chosen = int(np.argmax(draws))
        win = float(weights @ self._wins[segments, chosen])
        return arms[chosen], explore / len(arms) + (1 - explore) * win
