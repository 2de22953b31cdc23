"""Allocation strategies side by side on the same simulated traffic: each gets a placement
of its own with the same variants, and the same users (same seed) ask each for lists and
react by their segment's known rates (:class:`~streamrec.sim.simulator.Segments`). Used by
``scripts/bandit_compare.py`` and its short version in the tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streamrec.sim.loop import Fetch, LoopResult, Send, run_loop
from streamrec.sim.simulator import Segments, Simulation

Configure = Callable[[str, dict[str, Any]], None]  # (placement, body) -> PUT /admin/placements


def placement_body(strategy: str, segments: Segments, models: Mapping[str, str],
                   floor: float = 0.05) -> dict[str, Any]:
    """The placement of one strategy over ``models`` (variant -> model): the plain bandit,
    ``contextual`` on the segment's context key, ``clustered`` by the user property of
    the same name (one segment per value).

    >>> placement_body("clustered", Segments(), {"popular": "popular"})["segment_values"]
    ['mobile', 'desktop']
    """
    body: dict[str, Any] = {"strategy": strategy, "floor": floor, "variants": [
        {"name": name, "model": model} for name, model in models.items()]}
    if strategy == "contextual":
        body["features"] = [segments.key]
    elif strategy == "clustered":
        body.update(segment_by=f"user.{segments.key}", segment_values=list(segments.shares))
    return body


@dataclass
class Comparison:
    results: dict[str, LoopResult] = field(default_factory=dict)

    def reward(self, strategy: str) -> float:
        """Rewarded lists per list served."""
        rewards = self.results[strategy].rewards
        return sum(rewards) / len(rewards) if rewards else 0.0

    def expected_reward(self, strategy: str, segments: Segments, last: int | None = None
                        ) -> float:
        """The reward per list the choices were worth (each list's known rate for its
        segment and variant): what the strategy chose, without the luck of the clicks.

        >>> comparison = Comparison({"a": LoopResult(served=["popular", "hybrid"],
        ...                                          segments=["mobile", "mobile"])})
        >>> round(comparison.expected_reward("a", Segments()), 3)
        0.2
        """
        result = self.results[strategy]
        pairs = list(zip(result.segments, result.served, strict=True))[-(last or 0):]
        return sum(segments.rate(s, v) for s, v in pairs) / len(pairs) if pairs else 0.0

    def margin(self, strategy: str, baseline: str) -> int:
        """How many more lists ``strategy`` got rewarded than ``baseline``."""
        return sum(self.results[strategy].rewards) - sum(self.results[baseline].rewards)

    def leads_from(self, strategy: str, baseline: str) -> int | None:
        """The request from which ``strategy``'s cumulative reward stays above
        ``baseline``'s to the end (None: it is not ahead at the end).

        >>> comparison = Comparison({"a": LoopResult(rewards=[0, 1, 1, 1]),
        ...                          "b": LoopResult(rewards=[1, 0, 0, 1])})
        >>> comparison.leads_from("a", "b")
        3
        """
        ahead = [a - b for a, b in zip(self.results[strategy].cumulative(),
                                       self.results[baseline].cumulative(), strict=True)]
        if not ahead or ahead[-1] <= 0:
            return None
        last_behind = max((n for n, lead in enumerate(ahead) if lead <= 0), default=-1)
        return last_behind + 2  # 1-based: the first request of the lead that lasts

    def segment_shares(self, strategy: str, last: int | None = None
                       ) -> dict[str, dict[str, float]]:
        """Each segment's share of lists per variant (over the ``last`` requests)."""
        result = self.results[strategy]
        pairs = list(zip(result.segments, result.served, strict=True))[-(last or 0):]
        shares: dict[str, dict[str, float]] = {}
        for segment in sorted({s for s, _ in pairs if s is not None}):
            served = [variant for s, variant in pairs if s == segment]
            shares[segment] = {v: round(served.count(v) / len(served), 3)
                               for v in sorted(set(served))}
        return shares


def compare(simulation: Simulation, fetch: Fetch, send: Send, configure: Configure,
            strategies: list[str], prefix: str, requests: int,
            models: Mapping[str, str], floor: float = 0.05, seed: int = 3) -> Comparison:
    """Run ``requests`` requests per strategy, one after the other, each on its own
    placement ``{prefix}-{strategy}``; the same users ask in the same order."""
    if simulation.segments is None:
        raise ValueError("simulation: a comparison needs segments (Simulation(segments=...))")
    comparison = Comparison()
    for strategy in strategies:
        placement = f"{prefix}-{strategy}"
        configure(placement, placement_body(strategy, simulation.segments, models, floor))
        comparison.results[strategy] = run_loop(simulation, fetch, send, requests, placement,
                                                seed=seed)
    return comparison
