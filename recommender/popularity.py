"""Time-decayed popularity, global and per category."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from recommender.base import Category, Interaction, ItemId
from recommender.decay import ForwardDecay


@dataclass
class PopularityUpdate:
    """Increments from one batch, in the batch's frame (relative to ``reference``)."""

    overall: dict[ItemId, float] = field(default_factory=lambda: defaultdict(float))
    by_category: dict[Category, dict[ItemId, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )


class DecayedPopularity:
    """A forward-decayed, event-weighted counter per item.

    Examples
    --------
    >>> from recommender.base import Interaction
    >>> model = DecayedPopularity(ForwardDecay(half_life=10.0))
    >>> update = model.learn_many(
    ...     [Interaction("u", "a", 0.0, 1.0), Interaction("v", "a", 10.0, 2.0)],
    ...     {"a": ["books"]}, reference=10.0,
    ... )
    >>> update.overall["a"], update.by_category["books"]["a"]
    (2.5, 2.5)
    >>> model.decay.value_at(update.overall["a"], landmark=10.0, now=20.0)
    1.25
    """

    def __init__(self, decay: ForwardDecay) -> None:
        self.decay = decay

    def learn_many(
        self,
        interactions: Iterable[Interaction],
        categories: Mapping[ItemId, Sequence[Category]],
        reference: float,
    ) -> PopularityUpdate:
        """Each positive event's weight, decayed to ``reference`` (the batch's latest
        event time, where the increments are at most the weights)."""
        update = PopularityUpdate()
        factor = self.decay.factor
        for event in interactions:
            if event.weight <= 0:
                continue
            increment = event.weight * factor(event.timestamp, reference)
            update.overall[event.item_id] += increment
            for category in categories.get(event.item_id, ()):
                update.by_category[category][event.item_id] += increment
        return update


def category_moves(
    before: Mapping[ItemId, Iterable[Category]],
    after: Mapping[ItemId, Mapping[str, Any] | None],
) -> dict[ItemId, tuple[list[Category], list[Category]]]:
    """For each item of a catalog batch, the categories it is in now and those it left.

    A category's popularity is its current members' overall popularity: a view learned
    before the item's document arrived (items and events travel on two topics), or before
    the item moved into a category, counts there as soon as the document says so. The
    stores set each item's score in the categories it is in now to its overall score and
    remove it from those it left; a batch applied twice gives the same state.
    ``before`` holds the stored documents' categories; ``after`` the batch's documents (the
    last of an item's wins; None deletes the item, which leaves every category).

    >>> category_moves({"tea": ["drinks", "hot"]},
    ...                {"tea": {"categories": ["drinks"]}, "cup": {}, "old": None})
    {'tea': (['drinks'], ['hot']), 'cup': ([], []), 'old': ([], [])}
    """
    moves = {}
    for item, document in after.items():
        now = list(dict.fromkeys(() if document is None else document.get("categories", ())))
        moves[item] = now, [category for category in dict.fromkeys(before.get(item, ()))
                            if category not in now]
    return moves
