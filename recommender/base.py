"""Vocabulary shared by every model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

UserId = str
ItemId = str
Category = str
Scored = tuple[ItemId, float]

# Split weights of variants and hybrid blend weights are relative; bounded so that sums of
# them stay far from overflowing (weights of 1e308 summed to infinity: every user went to
# one variant and every blended score was NaN, served as null).
MAX_WEIGHT = 1e6

# The models a list can be ranked by: the one place they are named (as a type, for the
# HTTP contract, where FastAPI and pydantic list its values; MODELS is the same as a tuple).
ModelName = Literal["popular", "cooccurrence", "mf", "hybrid"]
MODELS: tuple[str, ...] = get_args(ModelName)


@dataclass(frozen=True, slots=True)
class Interaction:
    """One interaction as the models see it.

    ``weight`` comes from the event type (see :class:`recommender.weights.EventWeights`);
    a weight of 0 marks an item the user has seen but did not like, which is excluded
    from their lists but teaches no model anything.
    """

    user_id: UserId
    item_id: ItemId
    timestamp: float
    weight: float
    event_type: str | None = None  # kept per (user, item) for filters on Interactions
