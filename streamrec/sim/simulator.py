"""A synthetic but realistic event stream: popularity skew, users with stable tastes,
sessions. Deterministic for a seed, so tests and benchmarks can rely on it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# Each step happens with its probability given the previous one did.
SESSION_FUNNEL = (("view", 1.0), ("click", 0.35), ("add_to_cart", 0.25), ("purchase", 0.4))


@dataclass(frozen=True)
class Catalog:
    item_ids: list[str]
    categories: np.ndarray  # category index per item
    category_names: list[str]
    popularity: np.ndarray  # Zipf weights per item, summing to 1 within each category

    def items(self) -> Iterator[dict]:
        for index, item_id in enumerate(self.item_ids):
            yield {
                "item_id": item_id,
                "categories": [self.category_names[self.categories[index]]],
                "price": round(float(5 + (index * 7919) % 200), 2),
                "available": True,
            }


class Simulation:
    """Users hold 1-3 favourite categories; a session picks one (90%) or any category,
    views a few items chosen by Zipf popularity inside it, and some views turn into
    clicks, carts and purchases.

    Examples
    --------
    >>> sim = Simulation(users=5, items=20, categories=2, seed=1)
    >>> events = list(sim.events(10, start=1_700_000_000.0))
    >>> len(events), sorted(events[0])
    (10, ['event_type', 'item_id', 'timestamp', 'user_id'])
    """

    def __init__(
        self, users: int = 1000, items: int = 5000, categories: int = 20, seed: int = 42,
        zipf: float = 1.1, prefix: str = "",
    ) -> None:
        self.users = users
        self.seed = seed
        self.prefix = prefix
        self._rng = np.random.default_rng(seed)
        rng = self._rng
        category_of = rng.integers(0, categories, size=items)
        popularity = np.zeros(items)
        self._members: list[np.ndarray] = []
        for category in range(categories):
            members = np.flatnonzero(category_of == category)
            ranks = rng.permutation(len(members)) + 1
            weights = 1.0 / ranks**zipf
            popularity[members] = weights / weights.sum() if len(members) else weights
            self._members.append(members)
        self.catalog = Catalog(
            item_ids=[f"{prefix}item-{i}" for i in range(items)],
            categories=category_of,
            category_names=[f"category-{c}" for c in range(categories)],
            popularity=popularity,
        )
        self.tastes = [
            rng.choice(categories, size=min(int(rng.integers(1, 4)), categories), replace=False)
            for _ in range(users)
        ]

    def user_id(self, user: int) -> str:
        return f"{self.prefix}user-{user}"

    def react(self, user: int, items: list[str], rng: np.random.Generator,
              liked: float = 0.35, other: float = 0.02, purchase: float = 0.1
              ) -> list[tuple[str, str]]:
        """What a user does with a list shown to them, by their hidden tastes: each item in
        a favourite category is clicked with ``liked`` probability (``other`` otherwise),
        discounted by position; some clicks turn into purchases.

        >>> sim = Simulation(users=2, items=10, categories=2, seed=1)
        >>> rng = np.random.default_rng(0)
        >>> reactions = sim.react(0, sim.catalog.item_ids, rng, liked=1.0, other=0.0)
        >>> {kind for _, kind in reactions} <= {"click", "purchase"}
        True
        """
        taste = set(int(c) for c in self.tastes[user])
        index = {item: n for n, item in enumerate(self.catalog.item_ids)}
        reactions = []
        for position, item in enumerate(items):
            row = index.get(item)
            if row is None:
                continue
            chance = liked if int(self.catalog.categories[row]) in taste else other
            if rng.random() < chance / (1 + 0.2 * position):
                reactions.append((item, "click"))
                if rng.random() < purchase:
                    reactions.append((item, "purchase"))
        return reactions

    def favourite_items(self, user: int, count: int) -> list[str]:
        """The most popular items in the user's favourite categories (their ground truth)."""
        members = np.concatenate([self._members[c] for c in self.tastes[user]])
        best = members[np.argsort(-self.catalog.popularity[members])][:count]
        return [self.catalog.item_ids[i] for i in best]

    def _pick_item(self, category: int) -> int:
        members = self._members[category]
        return int(self._rng.choice(members, p=self.catalog.popularity[members]))

    def sessions(self, start: float) -> Iterator[list[dict]]:
        rng = self._rng
        categories = len(self.catalog.category_names)
        now = start
        while True:
            user = int(rng.integers(self.users))
            taste = self.tastes[user]
            category = int(rng.choice(taste)) if rng.random() < 0.9 else int(
                rng.integers(categories))
            session = []
            for _ in range(int(rng.integers(2, 8))):
                item = self.catalog.item_ids[self._pick_item(category)]
                for event_type, probability in SESSION_FUNNEL:
                    if rng.random() >= probability:
                        break
                    now += float(rng.exponential(5.0))
                    session.append({"user_id": self.user_id(user), "item_id": item,
                                    "event_type": event_type, "timestamp": round(now, 3)})
            yield session

    def events(self, count: int | None = None, start: float | None = None) -> Iterator[dict]:
        """``count`` events (forever if None), timestamps from ``start`` (now if None)."""
        produced = 0
        for session in self.sessions(time.time() if start is None else start):
            for event in session:
                if count is not None and produced >= count:
                    return
                produced += 1
                yield event
