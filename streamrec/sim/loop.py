"""The simulator's closed loop: synthetic users with hidden tastes ask for recommendations,
react to what they are shown (clicks and purchases carrying the ``recommendation_id``), and
so let the bandit and the A/B report be shown, and tested, on one machine."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from recommender.allocation import Placement, Variant
from recommender.feedback import FeedbackStore
from streamrec.sim.simulator import Simulation

# (user_id, placement[, context]) -> GET /recommendations body; the context (a segment)
# is passed only when the simulation has segments.
Fetch = Callable[..., dict]
Send = Callable[[list[dict]], None]  # events -> POST /events


DEMO_MODELS = ("hybrid", "mf", "popular")  # the README's demo: a bandit among these


def ensure_demo_placement(feedback: FeedbackStore, name: str, author: str, now: float
                          ) -> bool:
    """Configure ``name`` as the demo's bandit (one variant per model of
    :data:`DEMO_MODELS`, exploration floor 0.05) unless it is configured; True if it was
    created. Whoever starts the loop (``streamrec up``, compose's simulator) gets the
    placement the README describes, and a placement an admin configured is never touched."""
    placement = Placement(name, tuple(Variant(model, model) for model in DEMO_MODELS),
                          strategy="bandit", floor=0.05)
    return feedback.create_placement(placement.to_dict(), author, now)


@dataclass
class LoopResult:
    requests: int = 0
    served: list[str] = field(default_factory=list)  # the variant of each request, in order
    rewarded: Counter = field(default_factory=Counter)  # variant -> lists with a click
    rewards: list[int] = field(default_factory=list)  # 1 where the request's list earned one
    segments: list[str | None] = field(default_factory=list)  # each request's user's segment

    def cumulative(self) -> list[int]:
        """Rewarded lists after each request."""
        return np.cumsum(self.rewards).tolist() if self.rewards else []

    def shares(self, last: int | None = None) -> dict[str, float]:
        window = self.served[-last:] if last else self.served
        counts = Counter(window)
        return {name: count / len(window) for name, count in sorted(counts.items())}


def run_loop(simulation: Simulation, fetch: Fetch, send: Send, requests: int,
             placement: str, rate: float = 0.0, seed: int = 0) -> LoopResult:
    """``requests`` list requests from random users, each followed by their reaction."""
    rng = np.random.default_rng(seed)
    result = LoopResult()
    started = time.monotonic()
    for number in range(requests):
        user = int(rng.integers(simulation.users))
        if simulation.segments is None:
            shown = fetch(simulation.user_id(user), placement)
        else:
            shown = fetch(simulation.user_id(user), placement, simulation.context(user))
        result.requests += 1
        result.served.append(shown["variant"])
        result.segments.append(simulation.segment(user))
        reactions = simulation.react(user, [item["item_id"] for item in shown["items"]], rng,
                                     variant=shown["variant"])
        result.rewards.append(int(bool(reactions)))
        if reactions:
            result.rewarded[shown["variant"]] += 1
            send([{"user_id": shown["user_id"], "item_id": item, "event_type": kind,
                   "recommendation_id": shown["recommendation_id"]}
                  for item, kind in reactions])
        if rate > 0:
            ahead = (number + 1) / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    return result
