"""Test data factories: build inputs by what matters to a test, never by copied literals."""

from __future__ import annotations

import numpy as np

from recommender.base import Interaction
from recommender.store import StateUpdate


def interaction(user: str = "ann", item: str = "tea", timestamp: float = 1.0,
                weight: float = 1.0) -> Interaction:
    return Interaction(user, item, timestamp, weight)


def update(history_length: int = 200, max_neighbours: int = 200, reference: float = 0.0,
           half_life: float = 1.0, **fields) -> StateUpdate:
    """A batch; its decayed increments are in the frame of time ``reference`` (so batches
    with the same reference add up as plain numbers)."""
    return StateUpdate(history_length=history_length, max_neighbours=max_neighbours,
                       reference=reference, half_life=half_life, **fields)


def vector(*values: float) -> np.ndarray:
    return np.array(values, np.float32)


def event(user: str = "ann", item: str = "tea", kind: str = "view", **extra) -> dict:
    return {"user_id": user, "item_id": item, "event_type": kind, **extra}


async def produce_events(bootstrap: str, topic: str, events: list[dict]) -> None:
    """Produce ``events`` as JSON, keyed by user, and wait until Kafka has them all."""
    import orjson
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for one in events:
            await producer.send(topic, orjson.dumps(one), key=one["user_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()


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


def decayed_batches(years: float, batch_hours: float, users: int = 4, items: int = 6,
                    per_batch: int = 3, start: float = 1_800_000_000.0, seed: int = 0
                    ) -> list[list[Interaction]]:
    """Batches spanning ``batch_hours`` of event time each, for ``years``: ``per_batch``
    positive events (weights 1 to 3) at random moments of each span, in time order. Each
    user goes round all ``items`` in an order of their own, so an event's item is never in
    a window of fewer than ``items`` of the user's latest items (every event is a first
    touch and pairs with the user's previous ones)."""
    import random

    rng = random.Random(seed)
    orders = [rng.sample([f"i{n}" for n in range(items)], items) for _ in range(users)]
    turns = [0] * users
    span = batch_hours * 3600.0
    batches = []
    for number in range(int(years * 365 * 24 / batch_hours)):
        at = sorted(round(start + (number + rng.random()) * span, 3) for _ in range(per_batch))
        batch = []
        for moment in at:
            user = rng.randrange(users)
            item = orders[user][turns[user] % items]
            turns[user] += 1
            batch.append(Interaction(f"u{user}", item, moment, float(rng.randint(1, 3))))
        batches.append(batch)
    return batches


def personalize_row(user: str = "ann", items: tuple[str, ...] = ("tea", "cup"),
                    scores: tuple[float, ...] | None = None, similar: bool = False) -> dict:
    """One line of Amazon Personalize's batch-inference output, as it writes it (its
    documentation's examples: ``"error": null`` on every row it ranked)."""
    output: dict = {"recommendedItems": list(items)}
    if scores is not None:
        output["scores"] = list(scores)
    return {"input": {"itemId" if similar else "userId": user}, "output": output,
            "error": None}


def list_rows(users: list[str], items: list[str], start: int = 0, k: int = 5) -> list[dict]:
    """Plain JSONL lists: user n gets ``k`` of ``items`` from place ``start + n``, scored
    by rank (distinct lists for distinct ``start``s)."""
    return [{"user_id": user,
             "items": [items[(start + n + m) % len(items)] for m in range(k)],
             "scores": [float(k - m) for m in range(k)]}
            for n, user in enumerate(users)]
def taste_groups(groups: int = 3, users: int = 12, items: int = 6, per_user: int = 4,
                 start: float = 1000.0, seed: int = 0) -> list[Interaction]:
    """Positive interactions of ``groups`` groups of ``users`` users (``g{n}-u{m}``), each
    user touching ``per_user`` of their group's ``items`` items (``g{n}-i{m}``), one a
    second from ``start``: a log in which a user's next item is their group's."""
    rng = np.random.default_rng(seed)
    found = []
    for group in range(groups):
        for user in range(users):
            for item in rng.choice(items, size=min(per_user, items), replace=False):
                found.append((f"g{group}-u{user}", f"g{group}-i{item}"))
    order = rng.permutation(len(found))
    return [Interaction(*found[n], start + t, 1.0) for t, n in enumerate(order)]
