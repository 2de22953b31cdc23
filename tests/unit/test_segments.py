"""The simulator's segments: users whose best variant differs, known exactly."""

from __future__ import annotations

from collections import Counter

import pytest

from streamrec.sim.loop import run_loop
from streamrec.sim.simulator import Segments, Simulation


def _serve(variant_of):
    def fetch(user: str, placement: str, context: dict | None = None) -> dict:
        variant = variant_of(context)
        return {"user_id": user, "recommendation_id": f"r-{user}", "variant": variant,
                "items": [{"item_id": "item-1"}, {"item_id": "item-2"}]}
    return fetch


def test_segments_leave_the_stream_and_the_tastes_as_they_were() -> None:
    plain = Simulation(users=50, items=100, categories=5, seed=4)
    segmented = Simulation(users=50, items=100, categories=5, seed=4, segments=Segments())
    assert list(plain.events(200, start=0.0)) == list(segmented.events(200, start=0.0))
    assert [list(t) for t in plain.tastes] == [list(t) for t in segmented.tastes]
    assert plain.context(0) == {} and plain.segment(0) is None


def test_each_segment_rewards_its_own_best_variant_at_its_rate() -> None:
    simulation = Simulation(users=400, items=50, categories=5, seed=2, segments=Segments())
    shares = Counter(simulation.segment(user) for user in range(400))
    assert 150 < shares["mobile"] < 250
    documents = list(simulation.user_documents())
    assert documents[0]["properties"] == {"device": simulation.segment(0)}
    sent = []
    best = run_loop(simulation, _serve(lambda c: Segments().best(c["device"])), sent.extend,
                    4000, "home", seed=1)
    worst = run_loop(simulation, _serve(lambda c: "mf"), sent.extend, 4000, "home", seed=1)
    assert sum(best.rewards) / 4000 == pytest.approx(0.30, abs=0.03)
    assert sum(worst.rewards) / 4000 == pytest.approx(0.10, abs=0.02)
    assert best.cumulative()[-1] == sum(best.rewards)
    assert {event["event_type"] for event in sent} <= {"click", "purchase"}
    assert all(event["item_id"] == "item-1" for event in sent)


def test_equal_segments_have_no_best_variant() -> None:
    from streamrec.sim.simulator import EQUAL_SEGMENTS

    assert EQUAL_SEGMENTS.rate("mobile", "left") == EQUAL_SEGMENTS.rate("desktop", "right")
