"""The arena: a streaming variant and a batch variant (an imported list set) under one
bandit placement, judged on the simulator's users through the real stack.

The "batch job" ranks each user's favourite categories' most popular items: the
simulator's ground truth (:meth:`Simulation.favourite_items`), what a good offline model
would approach. The streaming variant is ``popular``. The simulated users click what
matches their hidden tastes, the worker credits those clicks to the variant that showed
the list, and the bandit should move the traffic to the batch variant.
``scripts/arena_run.py`` runs it on a stack of its own; ``tests/api/test_lists_arena.py``
runs a short one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from streamrec.sim.loop import Fetch, Send, run_loop
from streamrec.sim.simulator import Simulation

STREAMING, BATCH = "streaming", "batch"


def truth_lists(simulation: Simulation, k: int = 20) -> Iterator[dict]:
    """The batch job's output, as Personalize would write it: each user's ground truth."""
    for user in range(simulation.users):
        items = simulation.favourite_items(user, k)
        yield {"input": {"userId": simulation.user_id(user)},
               "output": {"recommendedItems": items,
                          "scores": [round(1.0 - n / k, 4) for n in range(len(items))]}}


def arena_placement(set_name: str, streaming_model: str = "popular",
                    floor: float = 0.05) -> dict:
    """The placement's body (PUT /admin/placements/NAME): a bandit of the two."""
    return {"strategy": "bandit", "floor": floor,
            "variants": [{"name": STREAMING, "model": streaming_model},
                         {"name": BATCH, "model": f"lists:{set_name}"}]}


@dataclass
class ArenaRound:
    requests: int  # requests so far
    shares: dict[str, float]  # each variant's share of this round's requests
    rewarded: Counter = field(default_factory=Counter)  # lists rewarded so far


def run_arena(simulation: Simulation, fetch: Fetch, send: Send, placement: str,
              rounds: int, per_round: int, seed: int = 0,
              report: Callable[[ArenaRound], None] = lambda _: None) -> list[ArenaRound]:
    """``rounds`` rounds of ``per_round`` requests; each round's shares and the lists
    rewarded so far, per variant."""
    rewarded: Counter = Counter()
    done: list[ArenaRound] = []
    for number in range(rounds):
        result = run_loop(simulation, fetch, send, per_round, placement, seed=seed + number)
        rewarded.update(result.rewarded)
        done.append(ArenaRound((number + 1) * per_round, result.shares(), Counter(rewarded)))
        report(done[-1])
    return done


def describe(round_: ArenaRound) -> str:
    shares = "  ".join(f"{name} {round_.shares.get(name, 0.0):5.1%}"
                       for name in (STREAMING, BATCH))
    rewards = "  ".join(f"{name} {round_.rewarded.get(name, 0):,}"
                        for name in (STREAMING, BATCH))
    return f"{round_.requests:6,} requests | shares: {shares} | lists rewarded: {rewards}"
