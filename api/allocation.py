"""The API's view of placements and their variants: configuration and bandit statistics
read from Redis every ``allocation_refresh_seconds``, so a kill switch, a pin or a new
split reaches every replica within that time and requests never wait on Redis for it."""

from __future__ import annotations

import logging

from recommender.allocation import Allocator, ArmStats, Placement, Variant
from recommender.feedback import FeedbackStore

log = logging.getLogger(__name__)

DEFAULT_PLACEMENT = "default"


class Allocation:
    def __init__(self, feedback: FeedbackStore, default_model: str, floor: float,
                 seed: int | None = None) -> None:
        self.feedback = feedback
        self.default_model = default_model
        self.floor = floor
        self.allocator = Allocator(seed)
        self._placements: dict[str, Placement] = {}
        self._stats: dict[str, dict[str, ArmStats]] = {}

    def fallback(self, name: str) -> Placement:
        """An unconfigured placement serves the default model as its only variant."""
        variant = Variant(self.default_model, self.default_model)
        return Placement(name, (variant,), floor=self.floor)

    def placement(self, name: str) -> Placement:
        return self._placements.get(name) or self.fallback(name)

    def configured(self, name: str) -> bool:
        """Whether ``name`` is a configured placement. An unknown name gets the fallback's
        answer and creates no state: its lists count for no variant."""
        return name in self._placements

    def refresh(self) -> None:
        placements = {
            name: Placement.from_dict(config)
            for name, config in self.feedback.placements().items()
        }
        stats = {}
        for name, placement in placements.items():
            if placement.strategy == "bandit":
                counters = self.feedback.variant_counters(name)
                stats[name] = {
                    variant: ArmStats(values.get("impressions", 0),
                                      values.get("lists_rewarded", 0))
                    for variant, values in counters.items()
                }
        self._placements, self._stats = placements, stats

    def stats(self, placement_name: str) -> dict[str, ArmStats]:
        return self._stats.get(placement_name, {})

    def choose(self, placement_name: str, user_id: str) -> tuple[Placement, Variant]:
        placement = self.placement(placement_name)
        variant = self.allocator.choose(placement, user_id, self._stats.get(placement_name, {}))
        return placement, variant
