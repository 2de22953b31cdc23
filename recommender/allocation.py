"""Which variant serves a request: a fixed split by a hash of the user (A/B) or a
Thompson-sampling bandit over the variants' attributed rewards, with an exploration floor.

A placement's configuration is plain data (it travels as JSON through the admin API and
Redis); the running statistics come from the stream. Nothing here keeps state between
calls except the random generator, so every API replica decides the same way.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from river import proba

if TYPE_CHECKING:
    from recommender.feedback import FeedbackStore

Strategy = Literal["split", "bandit"]

DEFAULT_PLACEMENT = "default"


@dataclass(frozen=True)
class Variant:
    """A named model with its parameters (e.g. ``hybrid`` with blend weights)."""

    name: str
    model: str
    weight: float = 1.0  # share in a split; 0 switches the variant off everywhere
    params: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Placement:
    name: str
    variants: tuple[Variant, ...]
    strategy: Strategy = "split"
    floor: float = 0.05  # bandit: each live variant gets at least this share of traffic
    pin: str | None = None  # serve only this variant (overrides everything else)
    version: int = 0

    def live(self) -> list[Variant]:
        if self.pin is not None:
            return [v for v in self.variants if v.name == self.pin]
        return [v for v in self.variants if v.weight > 0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "strategy": self.strategy, "floor": self.floor, "pin": self.pin,
            "version": self.version,
            "variants": [{"name": v.name, "model": v.model, "weight": v.weight,
                          "params": dict(v.params)} for v in self.variants],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Placement:
        return cls(
            name=data["name"], strategy=data.get("strategy", "split"),
            floor=data.get("floor", 0.05), pin=data.get("pin"), version=data.get("version", 0),
            variants=tuple(Variant(v["name"], v["model"], v.get("weight", 1.0),
                                   dict(v.get("params", {}))) for v in data["variants"]),
        )


@dataclass(frozen=True)
class ArmStats:
    """What the stream has credited to a variant: lists shown and lists that earned a click."""

    impressions: int = 0
    rewards: int = 0


def bucket(user_id: str, placement: str) -> float:
    """A stable number in [0, 1) per user and placement.

    >>> bucket("ann", "home") == bucket("ann", "home")
    True
    """
    digest = hashlib.blake2b(f"{placement}\x00{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


class Allocator:
    """Chooses a variant per request.

    Examples
    --------
    >>> home = Placement("home", (Variant("a", "popular"), Variant("b", "hybrid", 3.0)))
    >>> allocator = Allocator(seed=1)
    >>> allocator.choose(home, "ann", {}).name in {"a", "b"}
    True
    >>> bandit = Placement("home", home.variants, strategy="bandit", floor=0.0)
    >>> stats = {"a": ArmStats(1000, 10), "b": ArmStats(1000, 200)}
    >>> picks = [allocator.choose(bandit, f"u{i}", stats).name for i in range(100)]
    >>> picks.count("b")
    100
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._rng = random.Random(seed)

    def choose(self, placement: Placement, user_id: str, stats: Mapping[str, ArmStats]
               ) -> Variant:
        live = placement.live()
        if not live:
            raise ValueError(f"placement {placement.name!r} has no live variant")
        if len(live) == 1:
            return live[0]
        if placement.strategy == "split":
            return self._split(live, bucket(user_id, placement.name))
        # Exploration floor: a share of traffic is spread evenly, whatever the rewards say.
        if self._rng.random() < min(1.0, placement.floor * len(live)):
            return live[self._rng.randrange(len(live))]
        return max(live, key=lambda variant: self._sample(stats.get(variant.name, ArmStats())))

    @staticmethod
    def _split(live: list[Variant], position: float) -> Variant:
        # Scaled by the largest first, so even weights stored before MAX_WEIGHT existed
        # cannot sum to infinity.
        largest = max(variant.weight for variant in live)
        shares = [variant.weight / largest for variant in live]
        total = sum(shares)
        edge = 0.0
        for variant, share in zip(live, shares, strict=True):
            edge += share / total
            if position < edge:
                return variant
        return live[-1]

    def _sample(self, arm: ArmStats) -> float:
        """A draw from the Beta posterior of the arm's reward rate (uniform prior)."""
        failures = max(0, arm.impressions - arm.rewards)
        beta = proba.Beta(1 + arm.rewards, 1 + failures, seed=self._rng.getrandbits(32))
        return beta.sample()

    def shares(self, placement: Placement, stats: Mapping[str, ArmStats], draws: int = 2000
               ) -> dict[str, float]:
        """The traffic share each live variant would get now (by simulation)."""
        counts = dict.fromkeys((v.name for v in placement.live()), 0)
        for draw in range(draws):
            counts[self.choose(placement, f"share-{draw}", stats).name] += 1
        return {name: count / draws for name, count in counts.items()}


@dataclass(frozen=True)
class Choice:
    """What serves one request: the variant's name, its model and parameters, and whether
    the list may count for that variant (and move its bandit)."""

    variant: str
    model: str
    params: Mapping[str, float]
    allocated: bool


class Allocation:
    """Every placement's variants and bandit statistics, as last read from a
    :class:`~recommender.feedback.FeedbackStore` by :meth:`refresh`, so that choosing
    never waits on the store. The API refreshes it every ``allocation_refresh_seconds``
    (a kill switch, a pin or a new split reaches every replica within that time);
    ``streamrec export`` once.

    Examples
    --------
    >>> from recommender.feedback import InMemoryFeedback
    >>> feedback = InMemoryFeedback()
    >>> home = Placement("home", (Variant("a", "mf"), Variant("b", "popular", weight=0)))
    >>> _ = feedback.put_placement(home.to_dict(), "ann", 0.0)
    >>> allocation = Allocation(feedback, default_model="hybrid", floor=0.05, seed=1)
    >>> allocation.refresh()
    >>> allocation.choose_for("home", "u1")
    Choice(variant='a', model='mf', params={}, allocated=True)
    >>> allocation.choose_for("home", "u1", model="popular")
    Choice(variant='popular', model='popular', params={}, allocated=False)
    >>> allocation.choose_for("nowhere", "u1")
    Choice(variant='hybrid', model='hybrid', params={}, allocated=False)
    """

    def __init__(self, feedback: FeedbackStore, default_model: str, floor: float,
                 seed: int | None = None) -> None:
        self.feedback = feedback
        self.default_model = default_model
        self.floor = floor
        self.allocator = Allocator(seed)
        self._placements: dict[str, Placement] = {}
        self._stats: dict[str, dict[str, ArmStats]] = {}

    def fallback(self, name: str) -> Placement:
        """An unconfigured placement serves the default model as its only variant."""
        variant = Variant(self.default_model, self.default_model)
        return Placement(name, (variant,), floor=self.floor)

    def placement(self, name: str) -> Placement:
        return self._placements.get(name) or self.fallback(name)

    def configured(self, name: str) -> bool:
        """Whether ``name`` is a configured placement. An unknown name gets the fallback's
        answer and creates no state: its lists count for no variant."""
        return name in self._placements

    def refresh(self) -> None:
        placements = {
            name: Placement.from_dict(config)
            for name, config in self.feedback.placements().items()
        }
        stats = {}
        for name, placement in placements.items():
            if placement.strategy == "bandit":
                counters = self.feedback.variant_counters(name)
                stats[name] = {
                    variant: ArmStats(values.get("impressions", 0),
                                      values.get("lists_rewarded", 0))
                    for variant, values in counters.items()
                }
        self._placements, self._stats = placements, stats

    def stats(self, placement_name: str) -> dict[str, ArmStats]:
        return self._stats.get(placement_name, {})

    def choose(self, placement_name: str, user_id: str) -> tuple[Placement, Variant]:
        placement = self.placement(placement_name)
        variant = self.allocator.choose(placement, user_id, self._stats.get(placement_name, {}))
        return placement, variant

    def choose_for(self, placement_name: str, user_id: str, model: str | None = None
                   ) -> Choice:
        """The variant that serves ``user_id`` on ``placement_name``, or ``model`` when one
        is forced. Only the allocation's choice on a configured placement may count for its
        variant: a forced model or an unknown placement is served, never credited."""
        if model is not None:
            return Choice(model, model, {}, allocated=False)
        _, variant = self.choose(placement_name, user_id)
        return Choice(variant.name, variant.model, dict(variant.params),
                      allocated=self.configured(placement_name))
