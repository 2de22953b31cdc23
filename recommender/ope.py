"""Off-policy evaluation: how another allocation would have done, judged from the lists a
placement logged (each with the propensity of its chosen variant) and the rewards they
earned, before that allocation takes live traffic.

Two estimators of the target policy's reward per list, each with a normal-approximation
interval:

- IPS (inverse propensity scoring): the mean of ``w * reward`` with ``w = target(variant |
  context) / propensity``; unbiased when every variant the target may choose had a chance
  in the log, but its variance grows with the weights. Interval: the sample standard error
  of ``w * reward`` (central limit theorem).
- SNIPS (self-normalised IPS): ``sum(w * reward) / sum(w)``: a little biased, much steadier,
  and always within the rewards' range. Interval: the delta method for a ratio of means.

The effective sample size ``(sum w)^2 / sum(w^2)`` says how many lists the estimate is
worth: far fewer than were logged when the target differs much from the logging policy.

Pure: rows and policies are plain values; reading the log is the caller's business
(``streamrec.policy_report``).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Protocol

import numpy as np

from recommender.abtest import wilson_interval

Context = Mapping[str, Any]  # what a policy may look at: segment, features, user properties


class OffPolicyError(ValueError):
    """A log or a policy that cannot be evaluated; ``str()`` names the field and why."""


@dataclass(frozen=True)
class Logged:
    """One list the placement served: the variant its allocation chose, the probability it
    gave that variant (None: logged without a decision), whether it earned a reward, and
    the context the allocation saw."""

    variant: str
    propensity: float | None
    reward: float
    context: Context = field(default_factory=dict)


class Policy(Protocol):
    """A target allocation: the probability of each variant for a list's context."""

    def probabilities(self, context: Context) -> Mapping[str, float]: ...

    def stratum(self, context: Context) -> Hashable:
        """The part of the context the policy's choice depends on (support is checked
        within each)."""
        ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class Split:
    """A fixed split: each variant's share of the lists, whatever the context.

    >>> Split({"A": 1, "B": 3}).probabilities({})
    {'A': 0.25, 'B': 0.75}
    """

    shares: Mapping[str, float]

    def probabilities(self, context: Context) -> dict[str, float]:
        total = sum(self.shares.values())
        return {name: share / total for name, share in self.shares.items()}

    def stratum(self, context: Context) -> Hashable:
        return None

    def describe(self) -> str:
        return "split " + ", ".join(f"{name} {share:.0%}" for name, share
                                    in self.probabilities({}).items())


@dataclass(frozen=True)
class Rule:
    """One variant per value of a context key (a user property, ``segment``, a logged
    feature); ``otherwise`` serves the values the rule does not list.

    >>> rule = Rule("device", {"mobile": "popular", "desktop": "hybrid"})
    >>> rule.probabilities({"device": "mobile"})
    {'popular': 1.0}
    >>> rule.probabilities({"device": "tv"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    recommender.ope.OffPolicyError: policy.choose: no variant for device='tv'; list it ...
    """

    by: str
    choose: Mapping[str, str]
    otherwise: str | None = None

    def value(self, context: Context) -> str | None:
        found = context.get(self.by)
        return None if found is None else _text(found)

    def probabilities(self, context: Context) -> dict[str, float]:
        value = self.value(context)
        variant = self.choose.get(value, self.otherwise) if value is not None else self.otherwise
        if variant is None:
            raise OffPolicyError(f"policy.choose: no variant for {self.by}={value!r}; list it "
                                 f"or set 'otherwise'")
        return {variant: 1.0}

    def stratum(self, context: Context) -> Hashable:
        return self.value(context)

    def describe(self) -> str:
        rules = ", ".join(f"{value} -> {variant}" for value, variant in self.choose.items())
        rest = f", otherwise {self.otherwise}" if self.otherwise else ""
        return f"by {self.by}: {rules}{rest}"


def _text(value: Any) -> str:
    """A context value as a rule's key: 1.0 and 1 are the same segment."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class Fixed:
    """The same probabilities for every list (a bandit's converged choice, say)."""

    shares: Mapping[str, float]
    name: str

    def probabilities(self, context: Context) -> Mapping[str, float]:
        return self.shares

    def stratum(self, context: Context) -> Hashable:
        return None

    def describe(self) -> str:
        shares = ", ".join(f"{name} {share:.1%}" for name, share in self.shares.items())
        return f"{self.name} ({shares})"


def thompson_shares(stats: Mapping[str, tuple[float, float]], floor: float,
                    draws: int = 20_000, seed: int = 0) -> dict[str, float]:
    """The share of lists each variant gets from Thompson sampling over ``(lists, rewarded
    lists)`` per variant (Beta(1 + rewarded, 1 + not rewarded) posteriors), with the
    exploration floor mixed in as :class:`recommender.allocation.Allocator` does (a share
    ``min(1, floor * variants)`` of lists spread evenly). By ``draws`` posterior draws: a
    share is exact within about ``1 / sqrt(draws)``.

    >>> shares = thompson_shares({"A": (1000, 100), "B": (1000, 200)}, floor=0.05)
    >>> shares["A"], shares["B"]
    (0.05, 0.95)
    """
    names = list(stats)
    if not names:
        raise OffPolicyError("policy: no variant to allocate among")
    rng = np.random.default_rng(seed)
    samples = np.stack([
        rng.beta(1 + rewarded, 1 + max(0.0, lists - rewarded), size=draws)
        for lists, rewarded in (stats[name] for name in names)])
    wins = np.bincount(samples.argmax(axis=0), minlength=len(names)) / draws
    return _with_floor(dict(zip(names, wins.tolist(), strict=True)), floor)


def greedy_shares(stats: Mapping[str, tuple[float, float]], floor: float) -> dict[str, float]:
    """The variant with the best measured rate takes every list the floor leaves.

    >>> greedy_shares({"A": (100, 10), "B": (100, 20)}, floor=0.1)
    {'A': 0.1, 'B': 0.9}
    """
    if not stats:
        raise OffPolicyError("policy: no variant to allocate among")
    rates = {name: rewarded / lists if lists else 0.0
             for name, (lists, rewarded) in stats.items()}
    best = max(rates, key=lambda name: rates[name])
    return _with_floor({name: float(name == best) for name in stats}, floor)


def _with_floor(shares: dict[str, float], floor: float) -> dict[str, float]:
    explore = min(1.0, floor * len(shares))
    return {name: round(explore / len(shares) + (1 - explore) * share, 6)
            for name, share in shares.items()}


def arm_stats(rows: Iterable[Logged]) -> dict[str, tuple[int, int]]:
    """``(lists, rewarded lists)`` per variant in a log: the plain bandit's statistics.

    >>> arm_stats([Logged("A", 0.5, 1.0), Logged("A", 0.5, 0.0), Logged("B", 0.5, 0.0)])
    {'A': (2, 1), 'B': (1, 0)}
    """
    lists: Counter[str] = Counter()
    rewarded: Counter[str] = Counter()
    for row in rows:
        lists[row.variant] += 1
        rewarded[row.variant] += row.reward > 0
    return {name: (lists[name], rewarded[name]) for name in sorted(lists)}


@dataclass(frozen=True)
class Estimate:
    """A reward per list with its interval (``confidence``, normal approximation)."""

    value: float
    low: float
    high: float
    standard_error: float


@dataclass(frozen=True)
class Evaluation:
    """What the log says about the target policy, beside what the logged one earned."""

    policy: str
    lists: int
    logged: Estimate  # the logging policy's measured reward per list (Wilson interval)
    ips: Estimate
    snips: Estimate
    effective_sample_size: float
    largest_weight: float
    target_shares: dict[str, float]  # the target's average probability of each variant

    def to_dict(self) -> dict[str, Any]:
        def estimate(value: Estimate) -> dict[str, float]:
            return {"value": _round(value.value), "interval": [_round(value.low),
                                                               _round(value.high)]}
        return {"policy": self.policy, "lists": self.lists, "logged": estimate(self.logged),
                "ips": estimate(self.ips), "snips": estimate(self.snips),
                "effective_sample_size": round(self.effective_sample_size, 1),
                "largest_weight": round(self.largest_weight, 3),
                "target_shares": {k: _round(v) for k, v in self.target_shares.items()},
                "summary": summary(self)}


DIGITS = 4  # as abtest's intervals: finer is noise, and 6.9e-18 must read as 0


def _round(value: float) -> float:
    return round(value, DIGITS) + 0.0  # + 0.0: no -0.0


def evaluate(rows: Sequence[Logged], policy: Policy, confidence: float = 0.95
             ) -> Evaluation:
    """IPS and SNIPS estimates of ``policy``'s reward per list from ``rows``.

    Raises :class:`OffPolicyError` for an empty log, rows without a propensity, or a
    target that gives probability to a variant the log never chose in the same stratum
    (nothing in the log says how it would have done there).

    Examples
    --------
    A 50/50 split logged; the target always serves B, which earned 3 of its 4 lists:

    >>> rows = [Logged(v, 0.5, r) for v, r in [("A", 0), ("B", 1), ("A", 1), ("B", 1),
    ...                                         ("A", 0), ("B", 0), ("A", 0), ("B", 1)]]
    >>> result = evaluate(rows, Split({"B": 1}))
    >>> result.ips.value, result.snips.value, result.effective_sample_size
    (0.75, 0.75, 4.0)
    >>> evaluate(rows, Split({"C": 1}))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    recommender.ope.OffPolicyError: policy: gives probability to C, which the log never ...
    >>> evaluate([Logged("A", None, 1.0)], Split({"A": 1}))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    recommender.ope.OffPolicyError: decision.propensity: 1 of 1 logged lists carry none ...
    """
    if not rows:
        raise OffPolicyError("log: no allocated list to evaluate (none was served in the "
                             "window, or none was logged with its decision)")
    missing = sum(row.propensity is None for row in rows)
    if missing:
        raise OffPolicyError(
            f"decision.propensity: {missing} of {len(rows)} logged lists carry none (served "
            f"before decisions were logged, or by an allocation that logs none): evaluate "
            f"from a time after it (--since)")
    chosen: dict[Hashable, set[str]] = defaultdict(set)
    strata: Counter[Hashable] = Counter()
    for row in rows:
        key = policy.stratum(row.context)
        chosen[key].add(row.variant)
        strata[key] += 1
    weights = np.empty(len(rows))
    rewards = np.empty(len(rows))
    target_mass: Counter[str] = Counter()
    for n, row in enumerate(rows):
        probabilities = policy.probabilities(row.context)
        key = policy.stratum(row.context)
        unsupported = sorted(name for name, p in probabilities.items()
                             if p > 0 and name not in chosen[key])
        if unsupported:
            where = "" if key is None else f" where {_stratum_name(policy, key)}"
            raise OffPolicyError(
                f"policy: gives probability to {', '.join(unsupported)}, which the log never "
                f"chose{where} ({strata[key]} lists): nothing says how it would have done")
        for name, p in probabilities.items():
            target_mass[name] += p
        weights[n] = probabilities.get(row.variant, 0.0) / row.propensity
        rewards[n] = row.reward
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    count = len(rows)
    weighted = weights * rewards
    ips = float(weighted.mean())
    ips_error = float(weighted.std(ddof=1) / math.sqrt(count)) if count > 1 else math.inf
    total = float(weights.sum())
    if total > 0:
        snips = float(weighted.sum() / total)
        # Delta method for the ratio mean(w r) / mean(w).
        residual = weights * (rewards - snips)
        snips_error = (float(np.sqrt(np.mean(residual ** 2) / count)) / (total / count)
                       if count > 1 else math.inf)
    else:
        snips, snips_error = 0.0, math.inf
    ess = total ** 2 / float(np.sum(weights ** 2)) if total > 0 else 0.0
    earned = int(np.count_nonzero(rewards > 0))
    logged_low, logged_high = wilson_interval(earned, count, confidence)
    return Evaluation(
        policy=policy.describe(), lists=count,
        logged=Estimate(float(rewards.mean()), logged_low, logged_high,
                        float(rewards.std(ddof=1) / math.sqrt(count)) if count > 1 else 0.0),
        ips=_interval(ips, ips_error, z), snips=_interval(snips, snips_error, z),
        effective_sample_size=ess, largest_weight=float(weights.max()),
        target_shares={name: mass / count for name, mass in sorted(target_mass.items())})


def _interval(value: float, error: float, z: float) -> Estimate:
    if not math.isfinite(error):
        return Estimate(value, -math.inf, math.inf, error)
    # A reward per list is never negative: a bound below 0 says only "near 0".
    return Estimate(value, max(0.0, value - z * error), value + z * error, error)


def _stratum_name(policy: Policy, key: Hashable) -> str:
    by = getattr(policy, "by", "context")
    return f"{by}={key!r}"


ESS_TO_TRUST = 100  # effective lists below which an estimate is a hint, not a figure


def summary(result: Evaluation) -> str:
    """The evaluation in one sentence for people.

    >>> rows = [Logged(v, 0.5, r) for v, r in [("A", 0), ("B", 1)] * 200]
    >>> summary(evaluate(rows, Split({"B": 1})))  # doctest: +NORMALIZE_WHITESPACE
    'split B 100% would have earned a reward on about 100.0% of lists (SNIPS, 95% CI
    [100.0%, 100.0%]; IPS 100.0%), against 50.0% [45.1%, 54.9%] measured under the logged
    allocation: better, beyond the intervals (200 effective lists of 400).'
    """
    snips, logged = result.snips, result.logged
    if snips.low > logged.high:
        verdict = "better, beyond the intervals"
    elif snips.high < logged.low:
        verdict = "worse, beyond the intervals"
    else:
        verdict = "no clear difference"
    trust = (f"; only {result.effective_sample_size:.0f} effective lists of {result.lists}: "
             f"a hint, not a figure" if result.effective_sample_size < ESS_TO_TRUST else
             f" ({result.effective_sample_size:.0f} effective lists of {result.lists})")
    low = "-inf" if not math.isfinite(snips.low) else f"{snips.low:.1%}"
    high = "inf" if not math.isfinite(snips.high) else f"{snips.high:.1%}"
    text = (f"{result.policy} would have earned a reward on about {snips.value:.1%} of lists "
            f"(SNIPS, 95% CI [{low}, {high}]; IPS {result.ips.value:.1%}), against "
            f"{logged.value:.1%} [{logged.low:.1%}, {logged.high:.1%}] measured under the "
            f"logged allocation: {verdict}")
    return text + (trust if trust.startswith(";") else trust) + "."


# -- policies from their JSON form --------------------------------------------------------

STRATEGIES = ("split", "bandit", "greedy")


def parse_policy(document: Any, variants: Sequence[str], rows: Sequence[Logged] = (),
                 floor: float = 0.05) -> Policy:
    """A policy from its JSON form, checked against the placement's ``variants``:

    - ``{"strategy": "split", "shares": {"A": 1, "B": 3}}``;
    - ``{"by": "device", "choose": {"mobile": "popular"}, "otherwise": "hybrid"}``;
    - ``{"strategy": "bandit" | "greedy", "floor": 0.05}``: the plain bandit's choice
      probabilities (or the best measured variant's) from the arm statistics of ``rows``,
      the log being evaluated, with the exploration floor (default ``floor``).

    Raises :class:`OffPolicyError` naming the field.

    >>> parse_policy({"strategy": "split", "shares": {"A": 1, "Z": 1}}, ["A", "B"])
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    recommender.ope.OffPolicyError: policy.shares.Z: not a variant of this placement; ...
    >>> parse_policy({"by": "device"}, ["A"])
    Traceback (most recent call last):
    ...
    recommender.ope.OffPolicyError: policy.choose: required with 'by' (an object: value -> variant)
    """
    if not isinstance(document, Mapping):
        raise OffPolicyError(f"policy: expected a JSON object, got {type(document).__name__}")
    known = list(variants)

    def variant(name: Any, where: str) -> str:
        if not isinstance(name, str) or name not in known:
            raise OffPolicyError(f"{where}: {name!r} is not a variant of this placement; "
                                 f"one of {known}")
        return name

    if "by" in document:
        _only(document, {"by", "choose", "otherwise"})
        by, choose = document["by"], document.get("choose")
        if not isinstance(by, str) or not by:
            raise OffPolicyError("policy.by: expected the name of a context key or user "
                                 "property")
        if not isinstance(choose, Mapping) or not choose:
            raise OffPolicyError("policy.choose: required with 'by' (an object: value -> "
                                 "variant)")
        rules = {str(value): variant(name, f"policy.choose.{value}")
                 for value, name in choose.items()}
        otherwise = document.get("otherwise")
        return Rule(by, rules, None if otherwise is None
                    else variant(otherwise, "policy.otherwise"))
    strategy = document.get("strategy")
    if strategy not in STRATEGIES:
        raise OffPolicyError(f"policy.strategy: {strategy!r} is not one of {list(STRATEGIES)} "
                             f"(or give 'by' and 'choose' for a rule per context value)")
    if strategy == "split":
        _only(document, {"strategy", "shares"})
        shares = document.get("shares")
        if not isinstance(shares, Mapping) or not shares:
            raise OffPolicyError("policy.shares: required for a split (an object: variant -> "
                                 "share)")
        checked = {}
        for name, share in shares.items():
            if name not in known:
                raise OffPolicyError(f"policy.shares.{name}: not a variant of this placement; "
                                     f"one of {known}")
            if isinstance(share, bool) or not isinstance(share, int | float) \
                    or not math.isfinite(share) or share < 0:
                raise OffPolicyError(f"policy.shares.{name}: expected a finite number >= 0, "
                                     f"got {share!r}")
            checked[name] = float(share)
        if sum(checked.values()) <= 0:
            raise OffPolicyError("policy.shares: at least one share must be above 0")
        return Split(checked)
    _only(document, {"strategy", "floor"})
    chosen_floor = document.get("floor", floor)
    if isinstance(chosen_floor, bool) or not isinstance(chosen_floor, int | float) \
            or not 0 <= chosen_floor <= 1:
        raise OffPolicyError(f"policy.floor: expected a number from 0 to 1, got "
                             f"{chosen_floor!r}")
    stats = {name: (0, 0) for name in known}
    stats.update({name: counts for name, counts in arm_stats(rows).items() if name in stats})
    if strategy == "bandit":
        return Fixed(thompson_shares(stats, chosen_floor), "bandit")
    return Fixed(greedy_shares(stats, chosen_floor), "greedy")


def _only(document: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(document) - allowed)
    if unknown:
        raise OffPolicyError(f"policy.{unknown[0]}: unknown field; expected "
                             f"{sorted(allowed)}")


def placement_policy(config: Mapping[str, Any], rows: Sequence[Logged] = ()) -> Policy:
    """The policy a placement's configuration (``Placement.to_dict`` form) allocates by
    now: a split's weights, a pinned variant, or a bandit's choice probabilities from the
    arm statistics of ``rows``.

    >>> placement_policy({"strategy": "split", "variants": [{"name": "A", "weight": 1},
    ...                   {"name": "B", "weight": 0}]}).probabilities({})
    {'A': 1.0}
    """
    variants = config.get("variants", [])
    live = [v for v in variants if v.get("weight", 1.0) > 0]
    if config.get("pin") is not None:
        return Split({config["pin"]: 1.0})
    if not live:
        raise OffPolicyError("policy: the placement's configuration has no live variant")
    strategy = config.get("strategy", "split")
    if strategy == "split" or len(live) == 1:
        return Split({v["name"]: float(v.get("weight", 1.0)) for v in live})
    if strategy == "bandit":
        return parse_policy({"strategy": "bandit", "floor": config.get("floor", 0.05)},
                            [v["name"] for v in live], rows)
    raise OffPolicyError(f"policy: the placement allocates by {strategy!r}, which has no "
                         f"closed form to evaluate; write it as a policy file")


NAMED = ("current", "uniform", "bandit", "greedy")


def resolve_policy(spec: str | Mapping[str, Any], config: Mapping[str, Any],
                   rows: Sequence[Logged] = ()) -> Policy:
    """The policy ``spec`` names for a placement configured as ``config``: a policy
    document (:func:`parse_policy`), or a name: ``current`` (the placement's configuration
    now), ``uniform`` (an even split of its live variants), ``bandit`` or ``greedy`` (from
    the log's arm statistics, with the placement's floor), or one variant's name (every
    list to it: "what if we switched?").

    >>> config = {"strategy": "bandit", "floor": 0.05,
    ...           "variants": [{"name": "A"}, {"name": "B"}]}
    >>> resolve_policy("B", config).probabilities({})
    {'B': 1.0}
    >>> resolve_policy("uniform", config).probabilities({})
    {'A': 0.5, 'B': 0.5}
    >>> resolve_policy("C", config)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    recommender.ope.OffPolicyError: policy: 'C' is neither current, uniform, bandit, ...
    """
    variants = [variant["name"] for variant in config.get("variants", [])]
    floor = config.get("floor", 0.05)
    if not isinstance(spec, str):
        return parse_policy(spec, variants, rows, floor)
    if spec == "current":
        return placement_policy(config, rows)
    if spec == "uniform":
        return Split(dict.fromkeys(variants, 1.0))
    if spec in ("bandit", "greedy"):
        return parse_policy({"strategy": spec}, variants, rows, floor)
    if spec in variants:
        return Split({spec: 1.0})
    raise OffPolicyError(f"policy: {spec!r} is neither {', '.join(NAMED[:-1])}, {NAMED[-1]} "
                         f"nor a variant of this placement ({', '.join(variants)})")
