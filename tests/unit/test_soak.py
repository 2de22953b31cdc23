"""The soak's verdict arithmetic and its refusal to load anything but this machine."""

from __future__ import annotations

from collections import Counter

import pytest

from streamrec.measure import soak
from streamrec.measure.soak import SoakConfig, SoakReport

CONFIG = SoakConfig(duration=80, interval=10, growth_percent=10, growth_mib=20)


def test_memory_is_judged_on_the_second_quarter_against_the_last():
    # The first quarter is warm-up: its climb does not count.
    found = soak.trend("api", [100, 150, 200, 200, 210, 210, 220, 220], CONFIG)
    assert (found.warm, found.final, found.growth) == (200, 220, 20)
    assert found.limit == 20 and found.flat and found.judged


def test_growth_beyond_the_larger_of_percent_and_floor_is_not_flat():
    found = soak.trend("worker", [500, 500, 500, 500, 530, 540, 560, 560], CONFIG)
    assert found.limit == 50 and found.growth == 60 and not found.flat


def test_redis_memory_is_shown_not_judged():
    found = soak.trend("redis_used", [1, 2, 4, 8, 16, 32, 64, 128], CONFIG)
    report = SoakReport(CONFIG, [], Counter(), 0, 0, 0, {}, [found])
    assert not found.flat and not found.judged and report.passed


def test_any_error_fails_the_verdict():
    report = SoakReport(CONFIG, [], Counter({"HTTP 503": 1}), 0, 0, 0, {})
    assert not report.passed and "1 errors" in soak.summary(report)[-1]


def test_too_few_rows_for_a_verdict_are_refused():
    with pytest.raises(ValueError, match="4 rows"):
        SoakConfig(duration=30, interval=10).check()


@pytest.mark.parametrize(("bootstrap", "redis_url"), [
    ("kafka.example.com:9092", None),
    ("127.0.0.1:9092,10.0.0.5:9092", None),
    (None, "redis://cache.internal:6379/0"),
])
def test_only_this_machine_is_loaded(bootstrap, redis_url):
    with pytest.raises(ValueError, match="127.0.0.1 only"):
        soak.require_local(bootstrap, redis_url)


def test_loopback_targets_pass():
    soak.require_local("127.0.0.1:9092,localhost:9093", "redis://127.0.0.1:6379/0")
    soak.require_local(None, None)


def test_the_simulator_fills_every_category_even_with_few_items():
    from streamrec.sim.simulator import Simulation

    sim = Simulation(users=50, items=20, categories=20, seed=3)
    assert sorted(set(sim.catalog.categories.tolist())) == list(range(20))
    events = list(sim.events(200, start=0.0))
    assert len(events) == 200


def test_the_simulator_refuses_more_categories_than_items():
    import pytest

    from streamrec.sim.simulator import Simulation

    with pytest.raises(ValueError, match="categories: 30 categories need between 1 and 20"):
        Simulation(users=5, items=20, categories=30)
