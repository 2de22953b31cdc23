"""A synthetic but realistic event stream: popularity skew, users with stable tastes,
sessions. Deterministic for a seed, so tests and benchmarks can rely on it."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Segments:
    """Users split by one context value (``key``: a device, say) whose best variant
    differs: a list served by variant V to a user of segment S earns a reward with
    probability ``rates[S][V]`` (``other`` for a variant the table does not name), whatever
    its items. The truth is then known exactly, so an allocation's regret and an
    off-policy estimate can be judged against it. The segment is sent as a context key of
    each request and kept as a user property of the same name.

    Examples
    --------
    >>> segments = Segments()
    >>> segments.best("mobile"), segments.best("desktop")
    ('popular', 'hybrid')
    """

    key: str = "device"
    shares: Mapping[str, float] = field(
        default_factory=lambda: {"mobile": 0.5, "desktop": 0.5})
    rates: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: {
        "mobile": {"popular": 0.30, "hybrid": 0.10, "mf": 0.10},
        "desktop": {"popular": 0.10, "hybrid": 0.30, "mf": 0.10}})
    other: float = 0.05

    def rate(self, segment: str, variant: str) -> float:
        return self.rates.get(segment, {}).get(variant, self.other)

    def best(self, segment: str) -> str:
        table = self.rates[segment]
        return max(table, key=lambda variant: table[variant])


# Variants whose lists earn the same in every segment: an allocation must keep them balanced.
EQUAL_SEGMENTS = Segments(rates={"mobile": {"left": 0.2, "right": 0.2},
                                 "desktop": {"left": 0.2, "right": 0.2}})


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
        zipf: float = 1.1, prefix: str = "", segments: Segments | None = None,
    ) -> None:
        self.users = users
        self.seed = seed
        self.prefix = prefix
        self.segments = segments
        # A generator of its own: the stream and the tastes stay what they were without.
        names = list(segments.shares) if segments else []
        weights = np.array([segments.shares[n] for n in names]) if segments else None
        self._segment_of = [] if segments is None else [
            names[int(i)] for i in np.random.default_rng(seed + 1).choice(
                len(names), size=users, p=weights / weights.sum())]
        if not 1 <= categories <= items:
            raise ValueError(f"categories: {categories} categories need between 1 and "
                             f"{items} (the number of items): each holds at least one item")
        self._rng = np.random.default_rng(seed)
        rng = self._rng
        category_of = rng.integers(0, categories, size=items)
        # A category the draw left empty takes an item from the largest one (a session in
        # it must find something); a draw that filled every category is kept as it is.
        for empty in np.setdiff1d(np.arange(categories), category_of):
            largest = np.bincount(category_of, minlength=categories).argmax()
            category_of[np.flatnonzero(category_of == largest)[0]] = empty
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

    def segment(self, user: int) -> str | None:
        """The user's segment (None without :class:`Segments`)."""
        return self._segment_of[user] if self._segment_of else None

    def context(self, user: int) -> dict[str, str]:
        """What a request of the user says about them: their segment as a context key.

        >>> Simulation(users=3, items=10, categories=2, seed=1, segments=Segments()
        ...            ).context(0)
        {'device': 'mobile'}
        """
        if self.segments is None:
            return {}
        return {self.segments.key: self._segment_of[user]}

    def user_documents(self) -> Iterator[dict]:
        """Each user's document (``PUT /users``, the users topic): the segment as a
        property, for allocations that read properties rather than the request."""
        for user in range(self.users):
            yield {"user_id": self.user_id(user), "properties": self.context(user)}

    def react(self, user: int, items: list[str], rng: np.random.Generator,
              liked: float = 0.35, other: float = 0.02, purchase: float = 0.1,
              variant: str | None = None) -> list[tuple[str, str]]:
        """What a user does with a list shown to them, by their hidden tastes: each item in
        a favourite category is clicked with ``liked`` probability (``other`` otherwise),
        discounted by position; some clicks turn into purchases. With :class:`Segments`
        and the list's ``variant``, the list earns a click (on its first item) with its
        segment's rate for that variant instead.

        >>> sim = Simulation(users=2, items=10, categories=2, seed=1)
        >>> rng = np.random.default_rng(0)
        >>> reactions = sim.react(0, sim.catalog.item_ids, rng, liked=1.0, other=0.0)
        >>> {kind for _, kind in reactions} <= {"click", "purchase"}
        True
        """
        if self.segments is not None and variant is not None:
            if not items or rng.random() >= self.segments.rate(self._segment_of[user],
                                                               variant):
                return []
            clicked = [(items[0], "click")]
            return clicked + ([(items[0], "purchase")] if rng.random() < purchase else [])
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


# Synthetic datasets for `streamrec evaluate` and `streamrec tune`: each regime stresses
# what a different kind of deployment needs, so that defaults are not fitted to one file.
REGIMES = {
    "stable": "long-term tastes: users keep 1-3 favourite categories for the whole run; "
              "sessions browse one of them by popularity (a catalogue shop, films)",
    "sessions": "sessions: each visit explores one small theme of related items, chosen "
                "mostly at random, so what a user does now says more than their past",
    "trending": "news: new items arrive all the time and interest in each halves every "
                "six hours; readers follow their topics among what is fresh",
    "longtail": "long-tail shop: a large catalogue with a flat popularity curve, niche "
                "tastes, few events per user",
}


def synthetic(regime: str, events: int, seed: int = 42, start: float = 1_700_000_000.0
              ) -> Iterator[dict]:
    """``events`` interaction events of a regime (:data:`REGIMES`), in time order, as
    event documents (``user_id``, ``item_id``, ``event_type``, ``timestamp``).

    >>> first = list(synthetic("trending", 5, seed=1))
    >>> len(first), sorted(first[0])
    (5, ['event_type', 'item_id', 'timestamp', 'user_id'])
    >>> [e["timestamp"] for e in first] == sorted(e["timestamp"] for e in first)
    True
    """
    if regime not in REGIMES:
        raise ValueError(f"regime: {regime!r} is not one of {sorted(REGIMES)}")
    rng = np.random.default_rng(seed)
    if regime == "stable":
        sessions = Simulation(users=2000, items=5000, categories=20, seed=seed).sessions(start)
    elif regime == "sessions":
        sessions = _theme_sessions(rng, start)
    elif regime == "trending":
        sessions = _news_sessions(rng, start)
    else:
        sessions = _longtail_sessions(rng, start)
    produced = 0
    for session in sessions:
        for event in session:
            if produced >= events:
                return
            produced += 1
            yield event


def _funnel(rng: np.random.Generator, user: str, item: str, now: float,
            gap: float = 5.0) -> tuple[list[dict], float]:
    """A view of ``item`` and whatever of the funnel (click, cart, purchase) follows."""
    out = []
    for event_type, probability in SESSION_FUNNEL:
        if rng.random() >= probability:
            break
        now += float(rng.exponential(gap))
        out.append({"user_id": user, "item_id": item, "event_type": event_type,
                    "timestamp": round(now, 3)})
    return out, now


def _theme_sessions(rng: np.random.Generator, start: float) -> Iterator[list[dict]]:
    users, themes, size = 5000, 400, 15
    members = rng.permutation(themes * size).reshape(themes, size)
    liked = [rng.choice(themes, size=3, replace=False) for _ in range(users)]
    now = start
    while True:
        user = int(rng.integers(users))
        theme = int(rng.choice(liked[user])) if rng.random() < 0.3 else int(
            rng.integers(themes))
        # Within a theme items follow one another (a series, a look, an outfit).
        position = int(rng.integers(size))
        session: list[dict] = []
        now += float(rng.exponential(20.0))
        for _ in range(int(rng.integers(2, 9))):
            position = (position + int(rng.integers(1, 3))) % size
            events, now = _funnel(rng, f"user-{user}", f"item-{members[theme, position]}", now)
            session += events
        yield session


def _news_sessions(rng: np.random.Generator, start: float) -> Iterator[list[dict]]:
    users, topics, per_hour, half_life = 3000, 12, 40, 6 * 3600.0
    taste = rng.random((users, topics)) < 2 / topics  # about two topics each
    # Stories for the whole run up front (a year at most), in publication order.
    count = per_hour * 24 * 365
    published = start - 86400.0 + np.cumsum(rng.exponential(3600.0 / per_hour, count))
    topic = rng.integers(topics, size=count)
    appeal = rng.pareto(2.0, count)  # a few stories take off
    window = per_hour * 48  # two days of stories: older ones have faded to nothing
    now = start
    while True:
        last = int(np.searchsorted(published, now, side="right"))
        first = max(0, last - window)
        user = int(rng.integers(users))
        weights = (2.0 ** ((published[first:last] - now) / half_life) * appeal[first:last]
                   * np.where(taste[user, topic[first:last]], 4.0, 1.0))
        chosen = first + rng.choice(last - first, size=min(last - first, int(rng.integers(1, 6))),
                                    replace=False, p=weights / weights.sum())
        session: list[dict] = []
        for item in chosen:
            events, now = _funnel(rng, f"user-{user}", f"item-{item}", now, 20.0)
            session += events
        now += float(rng.exponential(8.0))
        yield session


def _longtail_sessions(rng: np.random.Generator, start: float) -> Iterator[list[dict]]:
    users, items, niches = 20000, 20000, 400
    niche_of = rng.integers(niches, size=items)
    members = [np.flatnonzero(niche_of == niche) for niche in range(niches)]
    weights = [1.0 / (rng.permutation(len(m)) + 1) ** 0.6 for m in members]
    weights = [w / w.sum() for w in weights]
    liked = [rng.choice(niches, size=2, replace=False) for _ in range(users)]
    now = start
    while True:
        user = int(rng.integers(users))
        niche = int(rng.choice(liked[user])) if rng.random() < 0.8 else int(
            rng.integers(niches))
        session: list[dict] = []
        now += float(rng.exponential(30.0))
        for _ in range(int(rng.integers(1, 5))):
            item = int(rng.choice(members[niche], p=weights[niche]))
            events, now = _funnel(rng, f"user-{user}", f"item-{item}", now)
            session += events
        yield session
