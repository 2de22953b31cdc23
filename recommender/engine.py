"""Learn from a batch, answer a request: the model code the worker, the API and the
offline evaluation all run, over any :class:`~recommender.store.StateStore`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from recommender.base import Category, Interaction, ItemId, Scored, UserId
from recommender.cooccurrence import CoOccurrence
from recommender.decay import ForwardDecay
from recommender.popularity import DecayedPopularity
from recommender.store import StateStore, StateUpdate


@dataclass(frozen=True)
class EngineConfig:
    history_length: int = 200
    window: int = 20
    window_seconds: float = 7 * 86400.0
    max_neighbours: int = 200
    neighbours_per_item: int = 50
    half_life: float = 7 * 86400.0
    epoch: float = 1_735_689_600.0


@dataclass(frozen=True)
class Recommendations:
    model: str
    items: list[Scored]


class Engine:
    """Co-occurrence and popularity over a store.

    Examples
    --------
    >>> from recommender.store import InMemoryStore
    >>> engine = Engine(InMemoryStore(), EngineConfig(epoch=0.0))
    >>> _ = engine.learn_many([
    ...     Interaction("ann", "tea", 1.0, 1.0), Interaction("ann", "cup", 2.0, 1.0),
    ...     Interaction("bob", "tea", 3.0, 1.0),
    ... ])
    >>> result = engine.recommend("bob", k=2, now=3.0)
    >>> result.model, [item for item, _ in result.items]
    ('cooccurrence', ['cup'])
    >>> engine.recommend("new user", k=1, now=3.0).model
    'popular'
    """

    def __init__(self, store: StateStore, config: EngineConfig) -> None:
        self.store = store
        self.config = config
        decay = ForwardDecay(config.half_life, config.epoch)
        self.decay = decay
        self.cooccurrence = CoOccurrence(config.window, config.window_seconds, decay)
        self.popularity = DecayedPopularity(decay)

    def learn_many(self, interactions: Sequence[Interaction]) -> StateUpdate:
        """Apply a batch, in order, as one atomic store update."""
        users = {event.user_id for event in interactions}
        items = {event.item_id for event in interactions}
        windows = self.store.windows(users, self.config.window)
        categories = self.store.item_categories(items)
        pairs = self.cooccurrence.learn_many(interactions, windows)
        popularity = self.popularity.learn_many(interactions, categories)
        update = StateUpdate(
            history_length=self.config.history_length,
            max_neighbours=self.config.max_neighbours,
            popularity=popularity.overall,
            category_popularity=popularity.by_category,
            item_counts=pairs.item_counts,
            pairs=pairs.pairs,
            history=pairs.history,
            events=len(interactions),
        )
        self.store.apply(update)
        return update

    def popular(
        self, k: int, now: float, category: Category | None = None, exclude: Sequence[ItemId] = ()
    ) -> list[Scored]:
        """Most popular items, as decayed weighted counts at ``now``."""
        banned = set(exclude)
        factor = self.decay.factor(now)
        ranked = self.store.popular(k + len(banned), category)
        return [(item, score / factor) for item, score in ranked if item not in banned][:k]

    def similar(self, item_id: ItemId, k: int) -> list[Scored]:
        neighbours = self.store.neighbours([item_id], self.config.neighbours_per_item)[item_id]
        counts = self.store.item_counts([item_id, *(other for other, _ in neighbours)])
        return self.cooccurrence.similar(item_id, neighbours, counts, k)

    def recommend(self, user_id: UserId, k: int, now: float) -> Recommendations:
        """Neighbours of the user's recent items, then popular items, never seen ones."""
        history = self.store.history(user_id, self.config.history_length)
        recent = [item for item, score in history if score > 0][: self.config.window]
        seen = [item for item, _ in history]
        ranked: list[Scored] = []
        if recent:
            neighbours = self.store.neighbours(recent, self.config.neighbours_per_item)
            candidates = {other for pairs in neighbours.values() for other, _ in pairs}
            counts = self.store.item_counts(candidates.union(recent))
            ranked = self.cooccurrence.recommend(recent, neighbours, counts, k, exclude=seen)
        model = "cooccurrence" if ranked else "popular"
        if len(ranked) < k:
            chosen = seen + [item for item, _ in ranked]
            fill = self.popular(k - len(ranked), now, exclude=chosen)
            # A fill item scores 0 in a co-occurrence list: it was not chosen by similarity.
            ranked += fill if model == "popular" else [(item, 0.0) for item, _ in fill]
        return Recommendations(model, ranked)

    def user_history(self, user_id: UserId) -> list[Scored]:
        return self.store.history(user_id, self.config.history_length)

