"""Off-policy estimators on synthetic logs whose truth is known."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from recommender.allocation import Allocator, ArmStats, Placement, Variant
from recommender.ope import (
    Logged,
    OffPolicyError,
    Rule,
    Split,
    evaluate,
    parse_policy,
    placement_policy,
    thompson_shares,
)

# Reward rate of each variant per segment: the best variant differs by segment.
RATES = {"mobile": {"popular": 0.30, "hybrid": 0.10, "mf": 0.15},
         "desktop": {"popular": 0.10, "hybrid": 0.35, "mf": 0.15}}


@functools.cache
def logged_run(seed: int, lists: int = 3000) -> tuple[Logged, ...]:
    """A logging policy that leans on a different variant per segment (propensities
    differ by context, as a contextual bandit's do)."""
    rng = np.random.default_rng(seed)
    logging = {"mobile": {"popular": 0.6, "hybrid": 0.2, "mf": 0.2},
               "desktop": {"popular": 0.2, "hybrid": 0.3, "mf": 0.5}}
    segments = np.where(rng.random(lists) < 0.4, "mobile", "desktop")
    draws, luck = rng.random(lists), rng.random(lists)
    rows = []
    for segment, draw, chance in zip(segments.tolist(), draws, luck, strict=True):
        names = list(logging[segment])
        edges = np.cumsum([logging[segment][name] for name in names])
        variant = names[min(int(np.searchsorted(edges, draw, side="right")), len(names) - 1)]
        reward = float(chance < RATES[segment][variant])
        rows.append(Logged(variant, logging[segment][variant], reward, {"device": segment}))
    return tuple(rows)


def truth(policy) -> float:
    return sum(weight * sum(p * RATES[segment][variant] for variant, p
                            in policy.probabilities({"device": segment}).items())
               for segment, weight in (("mobile", 0.4), ("desktop", 0.6)))


@pytest.mark.parametrize("policy", [
    Split({"popular": 1, "hybrid": 1, "mf": 1}),
    Split({"hybrid": 1}),
    Rule("device", {"mobile": "popular", "desktop": "hybrid"}),
])
def test_intervals_cover_the_truth_over_seeds(policy) -> None:
    true_value = truth(policy)
    runs = [evaluate(logged_run(seed), policy) for seed in range(40)]
    ips_covered = sum(r.ips.low <= true_value <= r.ips.high for r in runs)
    snips_covered = sum(r.snips.low <= true_value <= r.snips.high for r in runs)
    # 95% intervals: 40 runs should miss about 2; 34 covered is a loose bound (p < 0.002).
    assert ips_covered >= 34, (ips_covered, true_value)
    assert snips_covered >= 34, (snips_covered, true_value)
    # Unbiased: the mean over seeds lies within a few standard errors of the truth.
    mean = np.mean([r.ips.value for r in runs])
    spread = np.std([r.ips.value for r in runs]) / np.sqrt(len(runs))
    assert abs(mean - true_value) < 4 * spread + 1e-9


def test_the_logging_policy_itself_has_full_weight() -> None:
    rows = [Logged("A", 0.5, float(n % 3 == 0)) for n in range(100)] + \
           [Logged("B", 0.5, float(n % 2 == 0)) for n in range(100)]
    result = evaluate(rows, Split({"A": 1, "B": 1}))
    assert result.effective_sample_size == pytest.approx(200)
    assert result.snips.value == pytest.approx(result.logged.value)
    assert result.ips.value == pytest.approx(result.logged.value)


def test_a_far_policy_has_few_effective_lists() -> None:
    rows = logged_run(1)
    near = evaluate(rows, Split({"popular": 1, "hybrid": 1, "mf": 1}))
    far = evaluate(rows, Split({"hybrid": 1}))
    assert far.effective_sample_size < near.effective_sample_size < len(rows)


def test_missing_propensities_are_refused_with_the_count() -> None:
    rows = [Logged("A", 0.5, 1.0), Logged("A", None, 0.0)]
    with pytest.raises(OffPolicyError, match=r"decision.propensity: 1 of 2 .*--since"):
        evaluate(rows, Split({"A": 1}))


def test_support_is_checked_within_each_context_value() -> None:
    rows = [Logged("popular", 0.5, 1.0, {"device": "mobile"}),
            Logged("hybrid", 0.5, 0.0, {"device": "desktop"})]
    with pytest.raises(OffPolicyError, match=r"hybrid, which the log never chose where "
                                             r"device='mobile' \(1 lists\)"):
        evaluate(rows, Rule("device", {"mobile": "hybrid", "desktop": "hybrid"}))
    assert evaluate(rows, Rule("device", {"mobile": "popular", "desktop": "hybrid"})
                    ).snips.value == 0.5


def test_an_empty_log_says_so() -> None:
    with pytest.raises(OffPolicyError, match="log: no allocated list"):
        evaluate([], Split({"A": 1}))


@pytest.mark.parametrize(("document", "message"), [
    ([1], "policy: expected a JSON object"),
    ({"strategy": "spilt"}, r"policy.strategy: 'spilt' is not one of"),
    ({"strategy": "split"}, "policy.shares: required"),
    ({"strategy": "split", "shares": {"A": -1}}, r"policy.shares.A: expected a finite"),
    ({"strategy": "split", "shares": {"A": float("nan")}}, r"policy.shares.A: expected"),
    ({"strategy": "split", "shares": {"A": 0}}, "policy.shares: at least one"),
    ({"strategy": "split", "shares": {"A": 1}, "extra": 1}, "policy.extra: unknown field"),
    ({"strategy": "bandit", "floor": 2}, "policy.floor: expected a number from 0 to 1"),
    ({"by": "", "choose": {"x": "A"}}, "policy.by: expected"),
    ({"by": "device", "choose": {"x": "Z"}}, r"policy.choose.x: 'Z' is not a variant"),
    ({"by": "device", "choose": {"x": "A"}, "otherwise": "Z"}, "policy.otherwise: 'Z'"),
])
def test_bad_policies_name_the_field(document, message) -> None:
    with pytest.raises(OffPolicyError, match=message):
        parse_policy(document, ["A", "B"])


def test_bandit_policy_matches_the_allocators_frequencies() -> None:
    """The Thompson policy's shares are what recommender.allocation really serves."""
    stats = {"A": (400, 40), "B": (400, 48), "C": (400, 30)}
    shares = thompson_shares(stats, floor=0.05)
    placement = Placement("home", tuple(Variant(name, "mf") for name in stats),
                          strategy="bandit", floor=0.05)
    allocator = Allocator(seed=3)
    arms = {name: ArmStats(*counts) for name, counts in stats.items()}
    served = [allocator.choose(placement, f"u{n}", arms).name for n in range(20_000)]
    for name in stats:
        assert served.count(name) / len(served) == pytest.approx(shares[name], abs=0.015)


def test_the_bandit_policy_from_a_log_uses_its_arm_statistics() -> None:
    rows = [Logged("A", 0.5, float(n < 10)) for n in range(200)] + \
           [Logged("B", 0.5, float(n < 60)) for n in range(200)]
    policy = parse_policy({"strategy": "bandit", "floor": 0.1}, ["A", "B"], rows)
    assert policy.probabilities({}) == {"A": 0.1, "B": 0.9}
    greedy = parse_policy({"strategy": "greedy", "floor": 0}, ["A", "B"], rows)
    assert greedy.probabilities({}) == {"A": 0.0, "B": 1.0}
    assert evaluate(rows, greedy).snips.value == pytest.approx(0.3)


def test_a_placements_current_configuration_is_a_policy() -> None:
    config = {"strategy": "split", "variants": [{"name": "A", "weight": 1},
                                                {"name": "B", "weight": 3}]}
    assert placement_policy(config).probabilities({}) == {"A": 0.25, "B": 0.75}
    assert placement_policy({**config, "pin": "B"}).probabilities({}) == {"B": 1.0}
    with pytest.raises(OffPolicyError, match="'contextual', which has no closed form"):
        placement_policy({**config, "strategy": "contextual"})


def test_the_summary_never_prints_powers_of_ten() -> None:
    rows = [Logged("A", 0.999999, 0.0) for _ in range(3)] + [Logged("B", 1e-6, 1.0)]
    text = evaluate(rows, Split({"B": 1})).to_dict()["summary"]
    assert "e-" not in text and "e+" not in text
    assert "a hint, not a figure" in text
