"""Test data factories: build inputs by what matters to a test, never by copied literals."""

from __future__ import annotations

import numpy as np

from recommender.base import Interaction
from recommender.store import StateUpdate


def interaction(user: str = "ann", item: str = "tea", timestamp: float = 1.0,
                weight: float = 1.0) -> Interaction:
    return Interaction(user, item, timestamp, weight)


def update(history_length: int = 200, max_neighbours: int = 200, **fields) -> StateUpdate:
    return StateUpdate(history_length=history_length, max_neighbours=max_neighbours, **fields)


def vector(*values: float) -> np.ndarray:
    return np.array(values, np.float32)


def event(user: str = "ann", item: str = "tea", kind: str = "view", **extra) -> dict:
    return {"user_id": user, "item_id": item, "event_type": kind, **extra}
