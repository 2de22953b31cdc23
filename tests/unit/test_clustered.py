"""The clustered strategy's pure core: memberships, per-segment Thompson sampling, the
logged propensity against how often the allocation really picks each variant."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from recommender.allocation import Allocation, Audience, Placement, Variant
from recommender.attribution import Credit, Impression
from recommender.clustering import (
    SegmentedThompson,
    logged_membership,
    membership_features,
    property_membership,
    vector_membership,
)
from recommender.feedback import InMemoryFeedback


def test_similar_vectors_get_similar_memberships_in_every_process():
    rng = np.random.default_rng(4)
    user = rng.standard_normal(16)
    near = user + 0.05 * rng.standard_normal(16)
    first, again = vector_membership(user, "home", 8), vector_membership(user, "home", 8)
    assert first == again  # fixed directions: every API process agrees
    assert abs(sum(first.values()) - 1) < 1e-3
    top = max(first, key=first.__getitem__)
    assert max(vector_membership(near, "home", 8), key=lambda k: first.get(k, 0)) == top
    assert vector_membership(None, "home", 8) == {}
    assert vector_membership(np.array([np.nan, 1.0]), "home", 8) == {}


def test_a_membership_survives_the_log():
    membership = vector_membership(np.arange(1.0, 9.0), "home", 16)
    assert logged_membership(membership_features(membership), 16) == membership
    assert logged_membership({"segment.99": 1.0, "segment.x": 1.0, "other": 2.0}, 16) == {}
    assert property_membership(True, ["true", "false"]) == {0: 1.0}


def test_the_mixed_propensity_matches_the_frequencies():
    policy = SegmentedThompson(seed=3)
    policy.load(np.array([[[200, 30], [200, 25], [40, 5]],
                          [[100, 5], [100, 15], [100, 10]]]))
    membership = {0: 0.7, 1: 0.3}
    picks, logged = Counter(), {}
    for _ in range(20_000):
        arm, propensity = policy.choose(["a", "b", "c"], membership)
        picks[arm] += 1
        logged[arm] = propensity
    for arm, count in picks.items():
        assert count / 20_000 == pytest.approx(logged[arm], abs=0.035)


def test_segments_learn_their_own_best_variant_through_the_store():
    feedback = InMemoryFeedback()
    feedback.put_placement(Placement(
        "home", (Variant("a", "popular"), Variant("b", "mf")), strategy="clustered",
        floor=0.02, segment_by="device", segment_values=("mobile", "desktop")).to_dict(),
        "t", 0.0)
    allocation = Allocation(feedback, "hybrid", 0.05, seed=5)
    allocation.refresh()
    best = {"mobile": "a", "desktop": "b"}
    rng = np.random.default_rng(0)
    for n in range(3000):  # the loop: choose, show, reward what that segment likes
        device = ("mobile", "desktop")[n % 2]
        choice = allocation.choose_for("home", f"u{n}", audience=Audience({"device": device}))
        rid = f"r{n}"
        feedback.record_impressions([Impression(rid, f"u{n}", "home", choice.variant,
                                                choice.model, ("i",), 0.0, True,
                                                choice.decision)], 60)
        if rng.random() < (0.3 if choice.variant == best[device] else 0.1):
            feedback.credit([Credit(rid, "home", choice.variant, "i", 0, "click",
                                    choice.decision)], 60)
        if n % 100 == 99:
            allocation.refresh()
    for device, variant in best.items():
        picks = Counter(allocation.choose_for(
            "home", f"x{n}", audience=Audience({"device": device})).variant
            for n in range(500))
        assert picks[variant] > 400, (device, picks)
    # A user with no device: the placement's overall posterior, logged with no segment.
    nobody = allocation.choose_for("home", "nobody", audience=Audience())
    assert "segment" not in nobody.decision and 0 < nobody.decision["propensity"] <= 1
