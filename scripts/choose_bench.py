"""What choosing a variant costs per request, per strategy: split, bandit, clustered
(16 segments by MF vector) and contextual (64 hashed features), at 10 variants, with the
decision and its propensity computed as the API computes them, beside a do-nothing call.

    .venv/bin/python scripts/choose_bench.py [--choices 4000]

The states are taught first through the in-memory feedback store (the same increments the
worker's scripts add); the timed part is ``Allocation.choose_for`` alone (the request's
reads of the user, the same for every strategy but split and bandit, are not in it).
Target (issue 20): at most 200 us a choice.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from recommender.allocation import Allocation, Audience, Placement, Variant
from recommender.attribution import Credit, Impression
from recommender.contextual import MAX_FEATURES, context_features
from recommender.feedback import InMemoryFeedback

VARIANTS = tuple(Variant(f"v{n}", "popular") for n in range(10))
TARGET_MICROSECONDS = 200.0


def _context(n: int) -> dict[str, str]:
    # Enough keys that, with the user's properties, the decision logs 64 features.
    return {f"k{key}": f"value{(n + key) % 5}" for key in range(16)}


def _user(n: int) -> dict[str, list[str]]:
    return {f"p{prop}": [f"x{(n + prop + element) % 7}" for element in range(4)]
            for prop in range(16)}


def _teach(feedback: InMemoryFeedback, allocation: Allocation, placement: str,
           audiences: list[Audience], lists: int) -> None:
    rng = np.random.default_rng(0)
    for n in range(lists):
        choice = allocation.choose_for(placement, f"u{n}", audience=audiences[n % len(audiences)])
        rid = f"{placement}-{n}"
        feedback.record_impressions([Impression(rid, f"u{n}", placement, choice.variant,
                                                choice.model, ("i",), 0.0, True,
                                                choice.decision)], 60)
        if rng.random() < 0.1:
            feedback.credit([Credit(rid, placement, choice.variant, "i", 0, "click",
                                    choice.decision)], 60)
        if n % 500 == 499:
            allocation.refresh()
    allocation.refresh()


def _microseconds(call, choices: int, rounds: int = 5) -> tuple[float, float]:
    """CPU and wall time per call, each the fastest of ``rounds`` rounds (timeit's advice:
    slower rounds measure the other processes of a shared machine, not the call; CPU time
    leaves out the time spent waiting for a core)."""
    for _ in range(min(choices, 500)):  # warm caches and numpy's dispatch
        call(0)
    cpu = wall = float("inf")
    for round_ in range(rounds):
        started, started_cpu = time.perf_counter(), time.thread_time()
        for n in range(round_ * choices, (round_ + 1) * choices):
            call(n)
        cpu = min(cpu, time.thread_time() - started_cpu)
        wall = min(wall, time.perf_counter() - started)
    return cpu / choices * 1e6, wall / choices * 1e6


def main(choices: int) -> None:
    feedback = InMemoryFeedback()
    for strategy, extra in (("split", {}), ("bandit", {}),
                            ("clustered", {"segments": 16}), ("contextual", {})):
        feedback.put_placement(Placement(strategy, VARIANTS, strategy=strategy, floor=0.05,
                                         **extra).to_dict(), "bench", 0.0)
    allocation = Allocation(feedback, "popular", 0.05, seed=1)
    allocation.refresh()
    rng = np.random.default_rng(1)
    now = time.time()
    audiences = [Audience(_context(n), _user(n), rng.standard_normal(32), n % 150, now)
                 for n in range(256)]
    features = len(context_features(audiences[0].context, audiences[0].user, 10, now))
    for strategy in ("bandit", "clustered", "contextual"):
        _teach(feedback, allocation, strategy, audiences, 5000)
    for n in range(5000):  # a split and a bandit count lists too
        feedback.record_impressions([Impression(f"b{n}", "u", "bandit", f"v{n % 10}", "popular",
                                                ("i",), 0.0)], 60)
    allocation.refresh()

    def nothing(n: int) -> None:
        return None

    baseline, baseline_wall = _microseconds(nothing, choices)
    print(f"choosing a variant, 10 variants, {features} features logged "
          f"(of at most {MAX_FEATURES}), fastest of 5 rounds of {choices} choices:")
    print(f"  {'do-nothing':<12} {baseline:8.2f} us CPU {baseline_wall:8.2f} us wall")
    for strategy in ("split", "bandit", "clustered", "contextual"):
        cost, wall = _microseconds(lambda n, s=strategy: allocation.choose_for(
            s, f"user{n}", audience=audiences[n % len(audiences)]), choices)
        verdict = "ok" if cost <= TARGET_MICROSECONDS else "OVER"
        print(f"  {strategy:<12} {cost:8.2f} us CPU {wall:8.2f} us wall "
              f"({cost / baseline:6.0f} x the do-nothing call; target "
              f"{TARGET_MICROSECONDS:.0f} us: {verdict})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--choices", type=int, default=4000, help="per round (5 rounds)")
    main(parser.parse_args().choices)
