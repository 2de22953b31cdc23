"""Which variant serves a request: a fixed split by a hash of the user (A/B) or a
Thompson-sampling bandit over the variants' attributed rewards, with an exploration floor.

A placement's configuration is plain data (it travels as JSON through the admin API and
Redis); the running statistics come from the stream. Nothing here keeps state between
calls except the random generator, so every API replica decides the same way.

Every allocated choice comes with its *propensity*: the probability the allocation gave
the chosen variant at that moment, logged with the list (``schemas.impression.Decision``)
so that another allocation can be judged off-policy from the log. A split's is the
variant's share; a bandit's is its Thompson-sampling win probability mixed with the
floor, estimated by :func:`win_probabilities` once per refresh of the statistics.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from recommender import clustering, contextual
from recommender.clustering import (
    MAX_SEGMENTS,
    SegmentedThompson,
    logged_membership,
    membership_features,
    property_membership,
    segment_stats,
    vector_membership,
)
from recommender.contextual import (
    MAX_DIMENSIONS,
    LinearThompson,
    context_features,
)

if TYPE_CHECKING:
    from recommender.feedback import FeedbackStore
    from recommender.store import ServingReads

Strategy = Literal["split", "bandit", "clustered", "contextual"]
STRATEGIES: tuple[str, ...] = ("split", "bandit", "clustered", "contextual")
# Strategies learning from rewards (the floor applies; bandit state is kept for them).
LEARNING = ("bandit", "clustered", "contextual")

# Thompson draws per refresh behind a bandit's propensities: the estimate's standard error
# is at most 0.5 / sqrt(WIN_DRAWS) (0.008), the cost about 1 ms per placement at 10 arms.
WIN_DRAWS = 4096

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
    # clustered: K segments of users by MF vector, or by the property ``segment_by`` (one
    # segment per value in ``segment_values``, one for the rest).
    segments: int = 4
    segment_by: str | None = None
    segment_values: tuple[str, ...] = ()
    # contextual: the context keys, user properties and built-ins (@hour, @activity) used
    # (None: all sent, and both built-ins), the posterior's spread. The hashed vector is
    # always MAX_DIMENSIONS long, so what an impression adds to the state follows from its
    # logged features alone.
    features: tuple[str, ...] | None = None
    alpha: float = 1.0
    # Targeting: requests whose context or user properties match every key (value in the
    # listed ones) get the experiment; the rest get ``default_variant``.
    target: Mapping[str, tuple[str, ...]] | None = None
    default_variant: str | None = None

    def live(self) -> list[Variant]:
        if self.pin is not None:
            return [v for v in self.variants if v.name == self.pin]
        return [v for v in self.variants if v.weight > 0]

    def segment_count(self) -> int:
        return len(self.segment_values) + 1 if self.segment_by else self.segments

    def to_dict(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "name": self.name, "strategy": self.strategy, "floor": self.floor, "pin": self.pin,
            "version": self.version,
            "variants": [{"name": v.name, "model": v.model, "weight": v.weight,
                          "params": dict(v.params)} for v in self.variants],
        }
        if self.strategy == "clustered":
            config.update(segments=self.segment_count(), segment_by=self.segment_by,
                          segment_values=list(self.segment_values))
        if self.strategy == "contextual":
            config.update(features=None if self.features is None else list(self.features),
                          alpha=self.alpha)
        if self.target is not None:
            config.update(target={key: list(values) for key, values in self.target.items()},
                          default_variant=self.default_variant)
        return config

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Placement:
        features, target = data.get("features"), data.get("target")
        return cls(
            name=data["name"], strategy=data.get("strategy", "split"),
            floor=data.get("floor", 0.05), pin=data.get("pin"), version=data.get("version", 0),
            variants=tuple(Variant(v["name"], v["model"], v.get("weight", 1.0),
                                   dict(v.get("params", {}))) for v in data["variants"]),
            segments=data.get("segments", 4), segment_by=data.get("segment_by"),
            segment_values=tuple(data.get("segment_values") or ()),
            features=None if features is None else tuple(features),
            alpha=data.get("alpha", 1.0),
            target=None if target is None else {key: tuple(values)
                                                for key, values in target.items()},
            default_variant=data.get("default_variant"),
        )

    def targets(self, audience: Audience | None) -> bool:
        """Whether a request is in the experiment (always, without a condition)."""
        if self.target is None:
            return True
        audience = audience or Audience()
        return all(_text(audience.value(key)) in values for key, values in self.target.items())


@dataclass(frozen=True)
class Audience:
    """What a request tells about its user, for the strategies that look: the client's
    ``context`` keys, the user's catalog properties, MF vector and history length."""

    context: Mapping[str, Any] = field(default_factory=dict)
    user: Mapping[str, Any] | None = None
    vector: Any = None  # numpy array of the user's factors (without the constant) or None
    history: int = 0
    now: float = 0.0

    def value(self, key: str) -> Any:
        """A context key, else the user's property of that name (``user.x``: only it)."""
        if key.startswith("user."):
            return (self.user or {}).get(key[5:])
        if key in self.context:
            return self.context[key]
        return (self.user or {}).get(key)


def read_audience(store: ServingReads, reads: frozenset[str], user_id: str,
                  context: Mapping[str, Any], now: float) -> Audience:
    """The :class:`Audience` of a request: what ``reads`` (:meth:`Allocation.reads`) names
    read from ``store`` (the user's properties, MF vector, history length), the rest left
    empty; the request's ``context`` and time always.

    Examples
    --------
    >>> from recommender.store import InMemoryStore, StateUpdate
    >>> store = InMemoryStore()
    >>> store.apply(StateUpdate(200, 200, history={"ann": {"tea": 1.0}}))
    >>> read_audience(store, frozenset({"history"}), "ann", {"device": "mobile"}, 5.0)
    Audience(context={'device': 'mobile'}, user=None, vector=None, history=1, now=5.0)
    """
    if not reads:
        return Audience(context, now=now)
    document = store.get_user(user_id) if "user" in reads else None
    user = None if document is None else document.get("properties", {})
    history, vector = [], None
    if reads & {"vector", "history"}:
        history, vector = store.user_state(user_id, 100)
    if vector is not None:
        vector = vector[:-1]  # the stored vector's last component is a constant 1
    return Audience(context, user, vector, len(history), now)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class ArmStats:
    """What the stream has credited to a variant: lists shown and lists that earned a click."""

    impressions: float = 0
    rewards: float = 0


def win_probabilities(arms: Sequence[ArmStats], draws: int = WIN_DRAWS, seed: int = 0
                      ) -> np.ndarray:
    """The probability each arm's Beta posterior (uniform prior) draws the highest value:
    the share Thompson sampling gives it, by ``draws`` joint draws (ties to the first, as
    ``max`` does). Never 0: an arm no draw picked gets half a draw's share, since it may
    still be picked.

    >>> p = win_probabilities([ArmStats(100, 10), ArmStats(100, 10)])
    >>> round(float(p.sum()), 6), bool(abs(p[0] - 0.5) < 0.03)
    (1.0, True)
    >>> win_probabilities([ArmStats(1000, 10), ArmStats(1000, 200)]).round(4).tolist()
    [0.0001, 0.9999]
    """
    rng = np.random.default_rng(seed)
    alpha = np.array([1 + max(0.0, arm.rewards) for arm in arms], dtype=float)
    beta = np.array([1 + max(0.0, arm.impressions - arm.rewards) for arm in arms], dtype=float)
    samples = rng.beta(alpha, beta, size=(draws, len(arms)))
    counts = np.bincount(samples.argmax(axis=1), minlength=len(arms)).astype(float)
    counts = np.maximum(counts, 0.5)
    return counts / counts.sum()


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
        return self.decide(placement, user_id, stats)[0]

    def decide(self, placement: Placement, user_id: str, stats: Mapping[str, ArmStats],
               wins: Mapping[str, float] | None = None) -> tuple[Variant, float]:
        """The variant and the probability this allocation gave it (its propensity).

        ``wins``: each live variant's Thompson-sampling win probability
        (:func:`win_probabilities`), behind a bandit's propensity; without it the bandit's
        propensity counts only the floor and the draw as even (tests, ``shares``).
        """
        live = placement.live()
        if not live:
            raise ValueError(f"placement {placement.name!r} has no live variant")
        if len(live) == 1:
            return live[0], 1.0
        if placement.strategy == "split":
            return self._split(live, bucket(user_id, placement.name))
        # Exploration floor: a share of traffic is spread evenly, whatever the rewards say.
        explore = min(1.0, placement.floor * len(live))
        if self._rng.random() < explore:
            chosen = live[self._rng.randrange(len(live))]
        else:
            chosen = max(live,
                         key=lambda variant: self._sample(stats.get(variant.name, ArmStats())))
        win = (wins or {}).get(chosen.name, 1 / len(live))
        return chosen, explore / len(live) + (1 - explore) * win

    @staticmethod
    def _split(live: list[Variant], position: float) -> tuple[Variant, float]:
        # Scaled by the largest first, so even weights stored before MAX_WEIGHT existed
        # cannot sum to infinity.
        largest = max(variant.weight for variant in live)
        shares = [variant.weight / largest for variant in live]
        total = sum(shares)
        edge = 0.0
        for variant, share in zip(live, shares, strict=True):
            edge += share / total
            if position < edge:
                return variant, share / total
        return live[-1], shares[-1] / total

    def _sample(self, arm: ArmStats) -> float:
        """A draw from the Beta posterior of the arm's reward rate (uniform prior); the
        standard library's sampler, a tenth of the cost of a river distribution made
        per draw (the choose bench: 159 us a choice at 10 variants)."""
        failures = max(0, arm.impressions - arm.rewards)
        return self._rng.betavariate(1 + arm.rewards, 1 + failures)

    def shares(self, placement: Placement, stats: Mapping[str, ArmStats], draws: int = 2000
               ) -> dict[str, float]:
        """The traffic share each live variant would get now (by simulation)."""
        counts = dict.fromkeys((v.name for v in placement.live()), 0)
        for draw in range(draws):
            counts[self.choose(placement, f"share-{draw}", stats).name] += 1
        return {name: count / draws for name, count in counts.items()}


def state_meaning(config: Mapping[str, Any] | None) -> tuple:
    """What a placement's bandit state means: the strategy and the settings that number its
    segments or name its features. A change of it starts the state afresh (a store's
    ``put_placement``), since segment 2's counts would otherwise describe other users.

    >>> state_meaning({"strategy": "clustered", "segments": 4}) == state_meaning(
    ...     {"strategy": "clustered", "segments": 4, "floor": 0.1})
    True
    """
    config = config or {}
    return (config.get("strategy", "split"), config.get("segments"), config.get("segment_by"),
            tuple(config.get("segment_values") or ()), tuple(config.get("features") or ()))


def learning(variant: str, decision: Mapping[str, Any] | None, rewarded: bool
             ) -> list[tuple[str, float]]:
    """What an allocated list adds to its placement's bandit state (``(field, amount)``):
    when shown (``rewarded`` False) and when it earns its first reward. Only the
    clustered and contextual strategies keep such state; everything follows from the
    decision the impression logged, so the worker learns from what the choice saw.

    >>> learning("a", {"strategy": "clustered", "features": {"segment.2": 1.0}}, True)
    [('a|s2|r', 1.0)]
    >>> learning("a", {"strategy": "bandit", "propensity": 0.5}, False)
    []
    """
    if not decision or decision.get("targeted") is False:
        return []
    features = decision.get("features") or {}
    if decision.get("strategy") == "contextual":
        if rewarded:
            return contextual.reward_increments(variant, features, MAX_DIMENSIONS)
        return contextual.impression_increments(variant, features, MAX_DIMENSIONS)
    if decision.get("strategy") == "clustered":
        membership = logged_membership(features, MAX_SEGMENTS)
        if not membership:
            return []
        if rewarded:
            return clustering.reward_increments(variant, membership)
        return clustering.impression_increments(variant, membership)
    return []


@dataclass(frozen=True)
class Choice:
    """What serves one request: the variant's name, its model and parameters, and whether
    the list may count for that variant (and move its bandit)."""

    variant: str
    model: str
    params: Mapping[str, float]
    allocated: bool
    # What the impression logs (schemas.impression.Decision's fields); None when the
    # allocation did not choose (a forced model, an unconfigured placement).
    decision: Mapping[str, Any] | None = None


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
    Choice(variant='a', model='mf', params={}, allocated=True, decision={'strategy': 'split', \
'propensity': 1.0})
    >>> allocation.choose_for("home", "u1", model="popular")
    Choice(variant='popular', model='popular', params={}, allocated=False, decision=None)
    >>> allocation.choose_for("nowhere", "u1")
    Choice(variant='hybrid', model='hybrid', params={}, allocated=False, decision=None)
    """

    def __init__(self, feedback: FeedbackStore, default_model: str, floor: float,
                 seed: int | None = None) -> None:
        self.feedback = feedback
        self.default_model = default_model
        self.floor = floor
        self.allocator = Allocator(seed)
        self._placements: dict[str, Placement] = {}
        self._stats: dict[str, dict[str, ArmStats]] = {}
        # placement -> (the statistics and live variants they were computed for, each live
        # variant's win probability): recomputed only when those change.
        self._wins: dict[str, tuple[Any, dict[str, float]]] = {}
        # placement -> (what its policy was loaded from, the clustered or contextual policy)
        self._policies: dict[str, tuple[Any, Any]] = {}

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
        policies: dict[str, Any] = {}
        for name, placement in placements.items():
            if placement.strategy in ("bandit", "clustered"):
                # The clustered strategy's overall posterior (users with no membership).
                counters = self.feedback.variant_counters(name)
                stats[name] = {
                    variant: ArmStats(values.get("impressions", 0),
                                      values.get("lists_rewarded", 0))
                    for variant, values in counters.items()
                }
            if placement.strategy in ("clustered", "contextual"):
                policies[name] = self._policy(placement, self.feedback.bandit_state_changes(name))
        self._placements, self._stats = placements, stats
        self._wins = {name: self._win_probabilities(placements[name], arms)
                      for name, arms in stats.items()}
        self._policies = policies

    def _policy(self, placement: Placement, changes: int) -> Any:
        """The placement's policy on its state, read and loaded again only when the
        placement or the state's count of changes moved (reading ~20,000 fields, the
        inverses and the win probabilities are what a refresh costs)."""
        arms = tuple(variant.name for variant in placement.live())
        seen = (placement, arms, changes)
        cached = self._policies.get(placement.name)
        if cached is not None and cached[0] == seen:
            return cached
        fields = self.feedback.bandit_state(placement.name)
        seed = self.allocator.seed
        if placement.strategy == "contextual":
            policy: Any = LinearThompson(MAX_DIMENSIONS, placement.alpha, seed=seed)
            policy.load(fields, arms)
        else:
            policy = SegmentedThompson(seed=seed)
            policy.load(segment_stats(fields, arms, placement.segment_count()))
        return seen, policy

    def _win_probabilities(self, placement: Placement, arms: Mapping[str, ArmStats]
                           ) -> tuple[Any, dict[str, float]]:
        names = tuple(variant.name for variant in placement.live())
        seen = (names, tuple(arms.get(name, ArmStats()) for name in names))
        cached = self._wins.get(placement.name)
        if cached is not None and cached[0] == seen:
            return cached
        if len(names) < 2:
            return seen, dict.fromkeys(names, 1.0)
        probabilities = win_probabilities(seen[1])
        return seen, dict(zip(names, probabilities.tolist(), strict=True))

    def stats(self, placement_name: str) -> dict[str, ArmStats]:
        return self._stats.get(placement_name, {})

    def reads(self, placement_name: str) -> frozenset[str]:
        """What a request on this placement needs read about its user before choosing:
        ``user`` (catalog properties), ``vector`` (MF factors), ``history`` (its length)."""
        placement = self._placements.get(placement_name)
        if placement is None or len(placement.live()) < 2 and placement.target is None:
            return frozenset()
        needed = set()
        if placement.target is not None:
            needed.add("user")
        if placement.strategy == "contextual":
            named = placement.features
            # The history's length is read for the activity level; the user for properties
            # (a plain key names the property of the same name too).
            if named is None or contextual.ACTIVITY in named:
                needed.add("history")
            if named is None or set(named) - {contextual.HOUR, contextual.ACTIVITY}:
                needed.add("user")
        elif placement.strategy == "clustered":
            needed.add("user" if placement.segment_by else "vector")
        return frozenset(needed)

    def choose(self, placement_name: str, user_id: str) -> tuple[Placement, Variant]:
        placement, variant, _ = self.decide(placement_name, user_id)
        return placement, variant

    def decide(self, placement_name: str, user_id: str, audience: Audience | None = None
               ) -> tuple[Placement, Variant, float]:
        """The placement, the variant chosen for ``user_id`` and its propensity."""
        placement, variant, decision = self._decide(placement_name, user_id, audience)
        return placement, variant, decision["propensity"]

    def _decide(self, placement_name: str, user_id: str, audience: Audience | None
                ) -> tuple[Placement, Variant, dict[str, Any]]:
        placement = self.placement(placement_name)
        live = placement.live()
        policy = self._policies.get(placement_name)
        if placement.strategy not in ("clustered", "contextual") or policy is None \
                or len(live) < 2:
            wins = self._wins.get(placement_name, (None, {}))[1]
            variant, propensity = self.allocator.decide(
                placement, user_id, self._stats.get(placement_name, {}), wins)
            return placement, variant, {"strategy": placement.strategy,
                                        "propensity": propensity}
        audience = audience or Audience()
        # The floor as the bandit's: a share of requests spread evenly, counted in the
        # propensity whichever way the variant was reached.
        explore = min(1.0, placement.floor * len(live))
        arms = [variant.name for variant in live]
        decision: dict[str, Any] = {"strategy": placement.strategy}
        if placement.strategy == "contextual":
            features = context_features(audience.context, audience.user, audience.history,
                                        audience.now, placement.features)
            name, propensity = policy[1].choose(arms, features, explore)
            decision["features"] = features
        else:
            membership = self._membership(placement, audience)
            if membership:
                name, propensity = policy[1].choose(arms, membership, explore)
                decision["segment"] = max(membership, key=membership.__getitem__)
                decision["features"] = membership_features(membership)
            else:  # nobody knows their segment yet: the placement's overall posterior
                wins = self._wins.get(placement_name, (None, {}))[1]
                variant, propensity = self.allocator.decide(
                    placement, user_id, self._stats.get(placement_name, {}), wins)
                name = variant.name
        decision["propensity"] = propensity
        return placement, live[arms.index(name)], decision

    @staticmethod
    def _membership(placement: Placement, audience: Audience) -> dict[int, float]:
        if placement.segment_by:
            return property_membership(audience.value(placement.segment_by),
                                       list(placement.segment_values))
        return vector_membership(audience.vector, placement.name, placement.segments)

    def choose_for(self, placement_name: str, user_id: str, model: str | None = None,
                   audience: Audience | None = None) -> Choice:
        """The variant that serves ``user_id`` on ``placement_name``, or ``model`` when one
        is forced. Only the allocation's choice on a configured placement may count for its
        variant: a forced model or an unknown placement is served, never credited.

        A request outside the placement's targeting gets its ``default_variant``, logged
        with ``targeted: False`` and not allocated: it counts for no variant, so the
        experiment's figures and bandit state hold only the population it targets."""
        if model is not None:
            return Choice(model, model, {}, allocated=False)
        placement = self.placement(placement_name)
        if self.configured(placement_name) and not placement.targets(audience):
            variant = next(v for v in placement.variants if v.name == placement.default_variant)
            return Choice(variant.name, variant.model, dict(variant.params), allocated=False,
                          decision={"strategy": placement.strategy, "propensity": 1.0,
                                    "targeted": False})
        placement, variant, decision = self._decide(placement_name, user_id, audience)
        if not self.configured(placement_name):
            return Choice(variant.name, variant.model, dict(variant.params), allocated=False)
        decision["propensity"] = min(1.0, max(decision["propensity"], 1e-6))
        if placement.target is not None:
            decision["targeted"] = True
        return Choice(variant.name, variant.model, dict(variant.params), allocated=True,
                      decision=decision)
