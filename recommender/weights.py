"""How much each event type says about a user's taste."""

from __future__ import annotations

from collections.abc import Mapping


class EventWeights:
    """Map an event type (and its value) to a weight.

    ``rating`` events count only at or above ``rating_threshold``; below it the item is
    marked seen with weight 0.

    Examples
    --------
    >>> weights = EventWeights({"view": 1.0, "purchase": 8.0, "rating": 3.0}, 3.5)
    >>> weights.weight("purchase", None)
    8.0
    >>> weights.weight("rating", 2.0), weights.weight("rating", 4.5)
    (0.0, 3.0)
    >>> weights.use({"view": 1.0, "like": 3.0})
    >>> "like" in weights, sorted(weights)
    (True, ['like', 'view'])
    """

    def __init__(self, weights: Mapping[str, float], rating_threshold: float = 3.5) -> None:
        self.weights = dict(weights)
        self.rating_threshold = rating_threshold

    def use(self, weights: Mapping[str, float]) -> None:
        """Take another table (the shared one, re-read): one assignment, so a reader sees
        the old table or the new one, never a mix."""
        self.weights = dict(weights)

    def __contains__(self, event_type: object) -> bool:
        return event_type in self.weights

    def __iter__(self):
        return iter(self.weights)

    def weight(self, event_type: str, value: float | None) -> float:
        weight = self.weights[event_type]
        if event_type == "rating" and (value is None or value < self.rating_threshold):
            return 0.0
        return weight
