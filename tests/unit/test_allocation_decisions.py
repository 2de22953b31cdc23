"""The propensity each allocated list logs is the probability the allocation gave its
variant: checked against how often the allocation actually picks each variant."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from recommender.allocation import (
    Allocation,
    Allocator,
    ArmStats,
    Placement,
    Variant,
    win_probabilities,
)
from recommender.attribution import Impression
from recommender.feedback import InMemoryFeedback
from schemas.impression import ImpressionMessage

CHOICES = 20_000
# Four standard errors of the difference: a frequency over CHOICES choices against a
# Monte Carlo win probability of WIN_DRAWS draws (0.0035 and 0.0078 at p = 0.5).
TOLERANCE = 0.035


def _frequencies_and_propensities(placement, stats, wins):
    allocator = Allocator(seed=3)
    picks, logged = Counter(), {}
    for n in range(CHOICES):
        variant, propensity = allocator.decide(placement, f"user{n}", stats, wins)
        picks[variant.name] += 1
        # The same variant is always logged with the same propensity between refreshes.
        assert logged.setdefault(variant.name, propensity) == pytest.approx(propensity)
    return {name: count / CHOICES for name, count in picks.items()}, logged


def test_split_logs_each_variant_share():
    home = Placement("home", (Variant("a", "popular", 1.0), Variant("b", "mf", 3.0)))
    frequencies, logged = _frequencies_and_propensities(home, {}, None)
    assert logged == {"a": 0.25, "b": 0.75}
    assert frequencies["a"] == pytest.approx(0.25, abs=TOLERANCE)


@pytest.mark.parametrize("stats", [
    {"a": ArmStats(200, 20), "b": ArmStats(200, 26), "c": ArmStats(50, 4)},  # close arms
    {"a": ArmStats(100, 10), "b": ArmStats(100, 10)},  # equal arms
    {"a": ArmStats(5000, 50), "b": ArmStats(5000, 500), "c": ArmStats(0, 0)},  # one clear
])
def test_bandit_propensity_matches_how_often_thompson_sampling_picks(stats):
    variants = tuple(Variant(name, "popular") for name in stats)
    bandit = Placement("home", variants, strategy="bandit", floor=0.05)
    wins = dict(zip(stats, win_probabilities(list(stats.values())).tolist(), strict=True))
    frequencies, logged = _frequencies_and_propensities(bandit, stats, wins)
    for name in stats:
        assert frequencies.get(name, 0.0) == pytest.approx(logged[name], abs=TOLERANCE), name
        assert logged[name] >= 0.05  # the floor's share is in every propensity
    assert sum(logged.values()) == pytest.approx(1.0, abs=0.02)


def test_win_probabilities_of_two_arms_match_the_closed_form():
    # Two Beta arms with integer parameters: P(X > Y) has a closed form (Evan Miller).
    a, b = ArmStats(40, 6), ArmStats(40, 9)
    exact = _beta_beats(1 + b.rewards, 1 + b.impressions - b.rewards,
                        1 + a.rewards, 1 + a.impressions - a.rewards)
    assert win_probabilities([a, b])[1] == pytest.approx(exact, abs=0.02)


def _beta_beats(alpha_x, beta_x, alpha_y, beta_y) -> float:
    from math import exp, lgamma, log

    def log_beta(x, y):
        return lgamma(x) + lgamma(y) - lgamma(x + y)

    total = 0.0
    for i in range(int(alpha_x)):
        total += exp(log_beta(alpha_y + i, beta_x + beta_y) - log(beta_x + i)
                     - log_beta(1 + i, beta_x) - log_beta(alpha_y, beta_y))
    return total


def test_allocation_logs_a_decision_only_for_its_own_choices():
    feedback = InMemoryFeedback()
    feedback.put_placement(Placement("home", (Variant("a", "mf"), Variant("b", "popular")),
                                     strategy="bandit", floor=0.1).to_dict(), "test", 0.0)
    allocation = Allocation(feedback, default_model="hybrid", floor=0.05, seed=1)
    allocation.refresh()
    choice = allocation.choose_for("home", "ann")
    assert choice.decision["strategy"] == "bandit"
    assert 0.1 <= choice.decision["propensity"] <= 0.9
    assert allocation.choose_for("home", "ann", model="mf").decision is None
    assert allocation.choose_for("elsewhere", "ann").decision is None
    # What the impression carries passes the topic's contract, and reads back the same.
    shown = Impression("r1", "ann", "home", choice.variant, choice.model, ("tea",), 1.0,
                       True, choice.decision)
    message = ImpressionMessage.model_validate(shown.to_dict())
    assert Impression.from_dict(message.model_dump()).decision["propensity"] == \
        choice.decision["propensity"]


def test_a_pinned_variant_has_propensity_one():
    feedback = InMemoryFeedback()
    feedback.put_placement(Placement("home", (Variant("a", "mf"), Variant("b", "popular")),
                                     strategy="bandit", pin="b").to_dict(), "test", 0.0)
    allocation = Allocation(feedback, default_model="hybrid", floor=0.05, seed=1)
    allocation.refresh()
    assert allocation.choose_for("home", "ann").decision == {"strategy": "bandit",
                                                             "propensity": 1.0}


def test_win_probabilities_are_never_zero():
    p = win_probabilities([ArmStats(10**6, 10**5), ArmStats(10**6, 10)])
    assert np.all(p > 0) and p.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(("features", "reads"), [
    (None, {"user", "history"}),
    (("device",), {"user"}),  # a plain key names the user property of the same name too
    (("@hour",), set()),
    (("@activity", "@hour"), {"history"}),
    (("user.tier", "@activity"), {"user", "history"}),
])
def test_a_contextual_placement_reads_only_what_its_features_use(features, reads):
    feedback = InMemoryFeedback()
    feedback.put_placement(Placement("home", (Variant("a", "mf"), Variant("b", "popular")),
                                     strategy="contextual", features=features).to_dict(),
                           "test", 0.0)
    allocation = Allocation(feedback, default_model="hybrid", floor=0.05, seed=1)
    allocation.refresh()
    assert allocation.reads("home") == reads
