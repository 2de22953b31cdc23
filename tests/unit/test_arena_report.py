"""The arena report's words: switch, keep, or how many more lists; never 10^12."""

from __future__ import annotations

import re

import pytest

from recommender.abtest import advice, placement_report, with_cards


def _report(a: tuple[int, int], b: tuple[int, int], control: str | None = None) -> dict:
    return placement_report({"A": {"impressions": a[0], "lists_rewarded": a[1]},
                             "B": {"impressions": b[0], "lists_rewarded": b[1]}}, control)


def test_a_significantly_better_challenger_is_switched_to() -> None:
    assert advice(_report((3000, 300), (1000, 150))).startswith("switch to B: its take-rate")


def test_a_control_better_than_every_other_is_kept() -> None:
    text = advice(placement_report({
        "A": {"impressions": 3000, "lists_rewarded": 600},
        "B": {"impressions": 1000, "lists_rewarded": 100},
        "C": {"impressions": 1000, "lists_rewarded": 120}}))
    assert text.startswith("keep A: its take-rate 20.0%")


def test_a_close_call_says_how_many_more_lists_and_what_difference() -> None:
    text = advice(_report((500, 50), (400, 48)))
    assert re.match(r"not enough data yet: about [\d,]+ more lists per variant to tell a "
                    r"difference of 2\.0 points of take-rate \(B 12\.0% against A 10\.0%\)",
                    text), text


@pytest.mark.parametrize(("a", "b"), [((1000, 100), (1000, 100)), ((5, 1), (5, 1)),
                                      ((10**6, 1), (10**6, 1))])
def test_equal_rates_never_print_powers_of_ten(a, b) -> None:
    text = advice(_report(a, b))
    assert not re.search(r"\de[+-]?\d", text) and "1,000,000,000,000" not in text
    assert text.startswith(("not enough data yet: about", "keep A or B")), text


def test_nothing_rewarded_or_served_says_so() -> None:
    assert advice(_report((10, 0), (12, 0))) == "not enough data yet: no list has earned a reward"
    assert advice(_report((0, 0), (0, 0))) == "not enough data yet: no list has been served"
    assert advice(placement_report({"A": {"impressions": 5}})) == \
        "one variant: nothing to compare"


def test_cards_sit_beside_the_live_figures() -> None:
    report = with_cards(_report((100, 10), (100, 20)), {"A": "popular", "B": "lists:nightly"},
                        {"lists:nightly": {"kind": "imported", "run": "g7", "offline": None}})
    assert report["variants"]["A"]["offline"] is None
    assert report["variants"]["B"]["offline"] == {"run": "g7", "kind": "imported"}
    assert report["variants"]["B"]["model"] == "lists:nightly"
    assert report["advice"] == advice(report)
