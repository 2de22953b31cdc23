"""The contextual strategy's pure core: features, linear Thompson sampling, the logged
propensity against how often the allocation really picks each variant, and a state that
stays finite (and keeps learning) over a million updates."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from recommender.allocation import Allocation, Audience, Placement, Variant, learning
from recommender.attribution import Credit, Impression
from recommender.contextual import (
    MAX_FEATURES,
    LinearThompson,
    apply_increments,
    context_features,
    impression_increments,
    reward_increments,
    vectorize,
    win_probability,
)
from recommender.feedback import InMemoryFeedback

MOBILE = {"device": "mobile"}
DESKTOP = {"device": "desktop"}


def test_features_are_bounded_named_and_finite():
    context = {f"key{n}": "v" * 64 for n in range(40)}
    user = {f"prop{n}": ["a", "b", "c", "d", "e"] for n in range(40)}
    features = context_features(context, user, 10**9, 1.7e9)
    assert len(features) <= MAX_FEATURES
    assert all(len(name) <= 64 and math.isfinite(value) for name, value in features.items())
    only = context_features({"device": "tv", "page": "home"}, {"country": "CA", "age": 3},
                            0, 0.0, keys=["device", "user.country"])
    assert "ctx.device.tv" in only and "user.country.CA" in only
    assert not any(name.startswith(("ctx.page", "user.age")) for name in only)
    # The built-ins only when named: a placement that lists its features learns from those.
    assert not any(name.startswith(("hour.", "day.", "activity.")) for name in only)
    timed = context_features({"device": "tv"}, None, 7, 0.0, keys=["device", "@hour"])
    assert set(timed) == {"ctx.device.tv", "hour.sin", "hour.cos", "day.sin", "day.cos"}
    active = context_features({"device": "tv"}, None, 7, 0.0, keys=["@activity"])
    assert set(active) == {"activity.2"}


def test_propensity_matches_the_quadrature_and_the_frequencies():
    means, spreads = np.array([0.1, 0.12, 0.05]), np.array([0.05, 0.02, 0.1])
    rng = np.random.default_rng(1)
    draws = rng.normal(means, spreads, size=(200_000, 3)).argmax(axis=1)
    frequencies = np.bincount(draws, minlength=3) / len(draws)
    for arm in range(3):
        assert win_probability(means, spreads, arm) == pytest.approx(frequencies[arm],
                                                                     abs=0.005)


def _learned(feedback: InMemoryFeedback, placement: str, rounds: int) -> None:
    """Mobile users reward variant a's lists, desktop users b's."""
    n = 0
    for _ in range(rounds):
        for variant in ("a", "b"):
            for context, good in ((MOBILE, "a"), (DESKTOP, "b")):
                features = context_features(context, None, 0, 0.0)
                decision = {"strategy": "contextual", "propensity": 0.5, "features": features}
                rid = f"r{n}"
                n += 1
                feedback.record_impressions([Impression(rid, "u", placement, variant, "popular",
                                                        ("i",), 0.0, True, decision)], 60)
                if variant == good and n % 3:  # two in three of the good lists are taken
                    feedback.credit([Credit(rid, placement, variant, "i", 0, "click",
                                            decision)], 60)


def test_the_allocation_follows_the_context_and_logs_true_propensities():
    feedback = InMemoryFeedback()
    feedback.put_placement(Placement("home", (Variant("a", "popular"), Variant("b", "mf")),
                                     strategy="contextual", floor=0.1).to_dict(), "t", 0.0)
    _learned(feedback, "home", 60)
    allocation = Allocation(feedback, "hybrid", 0.05, seed=2)
    allocation.refresh()
    for context, best in ((MOBILE, "a"), (DESKTOP, "b")):
        picks, logged = Counter(), {}
        for n in range(4000):
            choice = allocation.choose_for("home", f"u{n}", audience=Audience(context))
            picks[choice.variant] += 1
            logged[choice.variant] = choice.decision["propensity"]
        assert picks[best] > 3000  # the floor keeps at least 5% on the other
        for variant, count in picks.items():
            assert count / 4000 == pytest.approx(logged[variant], abs=0.03)


def test_an_untaught_contextual_placement_spreads_its_traffic():
    feedback = InMemoryFeedback()
    feedback.put_placement(Placement("home", (Variant("a", "popular"), Variant("b", "mf")),
                                     strategy="contextual").to_dict(), "t", 0.0)
    allocation = Allocation(feedback, "hybrid", 0.05, seed=2)
    allocation.refresh()
    picks = Counter(allocation.choose_for("home", f"u{n}", audience=Audience(MOBILE)).variant
                    for n in range(2000))
    assert 800 < picks["a"] < 1200


def test_a_million_updates_stay_finite_and_the_state_keeps_learning():
    cap = 10_000
    fields: dict[str, float] = {}
    features = context_features(MOBILE, {"country": "CA"}, 30, 1.7e9)
    shown = {arm: impression_increments(arm, features, 64) for arm in ("a", "b")}
    taken = {arm: reward_increments(arm, features, 64) for arm in ("a", "b")}
    policy = LinearThompson(seed=1)
    for update in range(1_000_000):
        arm = "ab"[update % 2]
        good = "a" if update < 900_000 else "b"  # the world changes near the end
        apply_increments(fields, arm, shown[arm], cap)
        if arm == good and update % 7:
            apply_increments(fields, arm, taken[arm], cap)
    assert all(math.isfinite(value) for value in fields.values())
    assert max(fields["a|n"], fields["b|n"]) < cap
    assert max(abs(value) for value in fields.values()) <= cap * max(
        value for _, value in shown["a"])
    policy.load(fields, ["a", "b"])
    means, spreads = policy.posterior(["a", "b"], features)
    assert np.all(np.isfinite(means)) and np.all(spreads > 0)
    # 100,000 updates after the change were enough: old evidence was halved away.
    assert means[1] > means[0]


def test_only_contextual_and_clustered_decisions_teach_a_state():
    assert learning("a", {"strategy": "split", "propensity": 1.0}, False) == []
    assert learning("a", {"strategy": "contextual", "propensity": 1.0, "targeted": False,
                          "features": {"x": 1.0}}, False) == []
    assert learning("a", None, True) == []


def test_the_state_read_back_is_the_ridge_regression_of_what_was_shown():
    fields: dict[str, float] = {"changes": 7.0, "a|unknown|1": 3.0, "a|A|70|1": 9.0}
    precision = {arm: np.eye(64) for arm in "ab"}
    moments = {arm: np.zeros(64) for arm in "ab"}
    for n in range(300):
        features = context_features({"device": str(n % 5)}, {"tier": str(n % 3)}, n, n * 1e3)
        arm, x = "ab"[n % 2], vectorize(features, 64)
        apply_increments(fields, arm, impression_increments(arm, features, 64), 1e9)
        precision[arm] += np.outer(x, x)
        if n % 3 == 0:
            apply_increments(fields, arm, reward_increments(arm, features, 64), 1e9)
            moments[arm] += x
    policy = LinearThompson(seed=1)
    policy.load(fields, ["a", "b"])
    for row, arm in enumerate("ab"):
        assert np.allclose(policy._covariances[row], np.linalg.inv(precision[arm]))
        assert np.allclose(policy._means[row], np.linalg.solve(precision[arm], moments[arm]))
