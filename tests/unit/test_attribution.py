"""Attribution and the metric arithmetic, against counts made by hand."""

from __future__ import annotations

import pytest

from recommender.abtest import placement_report, variant_metrics
from recommender.attribution import Attributor, Impression
from recommender.feedback import InMemoryFeedback

REWARDS = {"click", "purchase"}


def shown(rid: str, variant: str, items: tuple[str, ...], user: str = "ann",
          at: float = 1000.0) -> Impression:
    return Impression(rid, user, "home", variant, "hybrid", items, at)


def test_a_hand_counted_day_of_feedback():
    store = InMemoryFeedback()
    attributor = Attributor(store, window=600, grace=30, reward_types=REWARDS)
    attributor.record_impressions([shown("r1", "A", ("tea", "cup", "pot")),
                                   shown("r2", "B", ("jam", "tea")),
                                   shown("r3", "B", ("cup",), user="bob")])
    attributor.record_impressions([shown("r1", "A", ("tea", "cup", "pot"))])  # replayed
    outcomes = attributor.credit_many([
        ("r1", "ann", "cup", "click", 1010.0),      # credited: A, position 1
        ("r1", "ann", "cup", "click", 1011.0),      # duplicate
        ("r1", "ann", "cup", "purchase", 1020.0),   # credited: a conversion on the same list
        ("r1", "ann", "pot", "view", 1030.0),       # not a reward type: trains, not counted
        ("r2", "ann", "cup", "click", 1040.0),      # cup was not in r2
        ("r2", "ann", "jam", "click", 1700.0),      # 700 s later: outside the 600 s window
        ("r3", "ann", "cup", "click", 1050.0),      # r3 was shown to bob
        ("r9", "ann", "tea", "click", 1060.0),      # no such list (yet): waits
    ], now=0.0)
    assert outcomes == {"credited": 2, "duplicate": 1, "not_in_list": 1, "late": 1,
                        "other_user": 1}
    assert attributor.waiting() == 1
    attributor.record_impressions([shown("r9", "B", ("tea",), at=1055.0)])
    assert attributor.credit_many([], now=10.0) == {"credited": 1}  # arrived within grace
    assert attributor.credit_many([("r8", "ann", "tea", "click", 1.0)], now=20.0) == {}
    assert attributor.credit_many([], now=51.0) == {"no_impression": 1}  # grace over

    counters = store.variant_counters("home")
    assert counters["A"] == {"impressions": 1, "items_shown": 3, "click": 1, "click@1": 1,
                             "purchase": 1, "purchase@1": 1, "lists_rewarded": 1}
    assert counters["B"] == {"impressions": 3, "items_shown": 4, "click": 1, "click@0": 1,
                             "lists_rewarded": 1}
    metrics = variant_metrics(counters["B"])
    assert metrics["ctr"] == pytest.approx(1 / 4)
    assert metrics["take_rate"] == pytest.approx(1 / 3)
    report = placement_report(counters, control="A")
    assert report["comparisons"]["B"]["lift"] == pytest.approx((1 / 3) / 1 - 1)
