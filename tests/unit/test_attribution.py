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


def configured(*variants: str) -> InMemoryFeedback:
    store = InMemoryFeedback()
    store.put_placement({"name": "home", "variants": [{"name": v} for v in variants]},
                        "test", 0.0)
    return store


def click(rid: str, item: str, at: float, received: float | None = None,
          kind: str = "click") -> tuple:
    """A feedback event claiming time ``at``, received by Kafka at ``received``."""
    return (rid, "ann", item, kind, at, at if received is None else received)


def test_a_hand_counted_day_of_feedback():
    store = configured("A", "B")
    attributor = Attributor(store, window=600, grace=30, reward_types=REWARDS)
    attributor.record_impressions([shown("r1", "A", ("tea", "cup", "pot")),
                                   shown("r2", "B", ("jam", "tea")),
                                   shown("r3", "B", ("cup",), user="bob")], now=0.0)
    attributor.record_impressions([shown("r1", "A", ("tea", "cup", "pot"))], now=0.0)
    outcomes = attributor.credit_many([
        click("r1", "cup", 1010.0),                 # credited: A, position 1
        click("r1", "cup", 1011.0),                 # duplicate
        click("r1", "cup", 1020.0, kind="purchase"),  # credited: a conversion on the list
        click("r1", "pot", 1030.0, kind="view"),    # not a reward type: trains, not counted
        click("r2", "cup", 1040.0),                 # cup was not in r2
        click("r2", "jam", 1700.0),                 # 700 s later: outside the 600 s window
        click("r2", "jam", 1100.0, received=1700.0),  # claims in time, received late
        click("r2", "jam", 1.0, received=1100.0),   # claims to precede the list
        click("r3", "cup", 1050.0),                 # r3 was shown to bob
        click("r9", "tea", 1060.0),                 # no such list (yet): waits
    ], now=0.0)
    assert outcomes == {"credited": 2, "duplicate": 1, "not_in_list": 1, "late": 2,
                        "before_impression": 1, "other_user": 1}
    assert attributor.waiting() == 1
    attributor.record_impressions([shown("r9", "B", ("tea",), at=1055.0)], now=5.0)
    assert attributor.credit_many([], now=10.0) == {"credited": 1}  # arrived within grace
    assert attributor.credit_many([click("r8", "tea", 1.0)], now=20.0) == {}
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


def test_lists_the_allocation_did_not_choose_count_for_no_variant():
    store = configured("A")
    attributor = Attributor(store, window=600, grace=0, reward_types=REWARDS)
    forced = Impression("f1", "ann", "home", "popular", "popular", ("tea",), 1000.0,
                        allocated=False)
    attributor.record_impressions([
        forced,
        shown("u1", "Z", ("tea",)),  # a variant home does not have
        Impression("p1", "ann", "nowhere", "A", "popular", ("tea",), 1000.0),  # unknown
        shown("a1", "A", ("tea",)),
    ], now=0.0)
    assert store.variant_counters("home") == {"A": {"impressions": 1, "items_shown": 1}}
    assert store.variant_counters("nowhere") == {}
    outcomes = attributor.credit_many([click(rid, "tea", 1010.0)
                                       for rid in ("f1", "u1", "p1", "a1")], now=0.0)
    assert outcomes == {"not_allocated": 3, "credited": 1}
    assert store.variant_counters("home")["A"]["lists_rewarded"] == 1


def test_a_placement_configured_a_moment_ago_counts_at_once():
    store = InMemoryFeedback()
    attributor = Attributor(store, window=600, grace=0, reward_types=REWARDS, refresh=60)
    attributor.record_impressions([shown("r1", "A", ("tea",))], now=0.0)
    store.put_placement({"name": "home", "variants": [{"name": "A"}]}, "test", 0.0)
    attributor.record_impressions([shown("r2", "A", ("tea",))], now=0.2)
    assert store.variant_counters("home")["A"]["impressions"] == 1  # r2, not r1


def test_a_placement_configured_just_after_a_read_counts_however_soon_its_list_arrives():
    # The worker read the placements an instant before the admin created one; the new
    # placement's first list arrives before any refresh is due. It counts all the same:
    # it was shown after the read, so the read is stale for it.
    store = InMemoryFeedback()
    attributor = Attributor(store, window=600, grace=0, reward_types=REWARDS, refresh=60)
    attributor.record_impressions([shown("r0", "A", ("tea",), at=999.0)], now=999.0)
    store.put_placement({"name": "home", "variants": [{"name": "A"}]}, "test", 999.0)
    attributor.record_impressions([shown("r1", "A", ("tea",), at=999.001)], now=999.002)
    assert store.variant_counters("home")["A"]["impressions"] == 1  # r1, not r0


def test_names_nobody_configured_on_old_lists_cause_no_reads():
    store = InMemoryFeedback()
    reads = []
    placements = store.placements
    store.placements = lambda: reads.append(1) or placements()
    attributor = Attributor(store, window=600, grace=0, reward_types=REWARDS, refresh=60)
    attributor.record_impressions([shown("r0", "A", ("tea",), at=1000.0)], now=1000.0)
    for n in range(5):  # lists shown long before the read: no read for them
        attributor.record_impressions([shown(f"o{n}", "A", ("tea",), at=800.0)], now=1001.0)
    assert len(reads) == 1
    attributor.record_impressions([shown("new", "A", ("tea",), at=1000.5)], now=1001.0)
    assert len(reads) == 2 and store.variant_counters("home") == {}
