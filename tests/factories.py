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


async def produce_views(bootstrap: str, topic: str, run: str, start: int, count: int,
                        extra: list[bytes] = ()) -> None:
    """Produce views ``start`` to ``start + count - 1`` of 50 users over 80 items, named
    after ``run`` and keyed by user, then the raw ``extra`` values."""
    import orjson
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for n in range(start, start + count):
            user = f"{run}-u{n % 50}"
            await producer.send(topic, orjson.dumps(event(user, f"{run}-i{n % 80}",
                                                          timestamp=1_750_000_000 + n)),
                                key=user.encode())
        for value in extra:
            await producer.send(topic, value, key=run.encode())
        await producer.flush()
    finally:
        await producer.stop()
