"""Learn from a batch, answer a request: the model code the worker, the API and the
offline evaluation all run, over any :class:`~recommender.store.StateStore`."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from recommender.base import Category, Interaction, ItemId, Scored, UserId
from recommender.cooccurrence import CoOccurrence
from recommender.decay import ForwardDecay
from recommender.mf import ItemFactorIndex, OnlineBPR
from recommender.popularity import DecayedPopularity
from recommender.store import StateStore, StateUpdate

MODELS = ("popular", "cooccurrence", "mf", "hybrid")
HYBRID_PARAMS = ("hybrid_mf", "hybrid_cooccurrence", "hybrid_popular")


@dataclass(frozen=True)
class EngineConfig:
    history_length: int = 200
    window: int = 20
    window_seconds: float = 7 * 86400.0
    max_neighbours: int = 200
    neighbours_per_item: int = 50
    half_life: float = 7 * 86400.0
    epoch: float = 1_735_689_600.0
    mf_dim: int = 32
    mf_learning_rate: float = 0.05
    mf_regularization: float = 0.002
    mf_negatives: int = 4
    mf_negative_pool: int = 256
    seed: int = 0
    # hybrid: a blend of each source's scores, each scaled to [0, 1] over the candidates
    hybrid_mf: float = 1.0
    hybrid_cooccurrence: float = 1.0
    hybrid_popular: float = 0.2
    hybrid_candidates: int = 100


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
        self.mf = OnlineBPR(config.mf_dim, config.mf_learning_rate, config.mf_regularization,
                            config.mf_negatives, seed=config.seed)
        # The serving copy of the item factors: filled on first use, then kept fresh by
        # refresh() (the API's background task) or by learn_many in the same process.
        self.item_index = ItemFactorIndex()
        self._refreshing = threading.Lock()

    def learn_many(
        self, interactions: Sequence[Interaction], offsets: Mapping[str, int] | None = None
    ) -> StateUpdate:
        """Apply a batch, in order, as one atomic store update, together with the source
        ``offsets`` it brings the state up to (``"topic:partition" -> offset``)."""
        users = {event.user_id for event in interactions}
        items = {event.item_id for event in interactions}
        windows = self.store.windows(users, self.config.window)
        categories = self.store.item_categories(items)
        pairs = self.cooccurrence.learn_many(interactions, windows)
        popularity = self.popularity.learn_many(interactions, categories)
        factors = self._learn_factors(interactions)
        update = StateUpdate(
            history_length=self.config.history_length,
            max_neighbours=self.config.max_neighbours,
            popularity=popularity.overall,
            category_popularity=popularity.by_category,
            item_counts=pairs.item_counts,
            pairs=pairs.pairs,
            history=pairs.history,
            user_factors=factors.users,
            item_factors=factors.items,
            events=len(interactions),
            offsets=offsets or {},
        )
        self.store.apply(update)
        if self.item_index.cursor is not None:
            self.item_index.upsert(factors.items)
        return update

    def _learn_factors(self, interactions: Sequence[Interaction]):
        positives = [event for event in interactions if event.weight > 0]
        pool = self.store.sample_items(self.config.mf_negative_pool)
        users = self.store.user_factors({event.user_id for event in positives})
        items = self.store.item_factors({e.item_id for e in positives}.union(pool))
        return self.mf.learn_many(positives, users, items, pool)

    def refresh(self) -> int:
        """Bring the in-memory item factors up to date; returns how many rows changed."""
        with self._refreshing:
            cursor, changed = self.store.changed_items(self.item_index.cursor)
            self.item_index.upsert(changed)
            self.item_index.cursor = cursor
        return len(changed)

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

    def recommend(
        self, user_id: UserId, k: int, now: float, model: str = "cooccurrence",
        params: Mapping[str, float] | None = None,
    ) -> Recommendations:
        """Top-k by the named model, never items the user already interacted with.

        ``model`` is one of :data:`MODELS`; ``params`` override the hybrid blend
        (``hybrid_mf``, ``hybrid_cooccurrence``, ``hybrid_popular``) for this request. The
        result names the model that actually ranked the list: an unknown user gets
        ``popular`` from every model.
        """
        if model not in MODELS:
            raise ValueError(f"model: {model!r} is not one of {list(MODELS)}")
        unknown = set(params or ()) - set(HYBRID_PARAMS)
        if unknown:
            raise ValueError(f"params: {sorted(unknown)} are not among {list(HYBRID_PARAMS)}")
        history = self.store.history(user_id, self.config.history_length)
        seen = [item for item, _ in history]
        if model == "popular":
            return Recommendations("popular", self.popular(k, now, exclude=seen))
        recent = [item for item, score in history if score > 0][: self.config.window]
        if model == "cooccurrence":
            ranked = self._cooccurrence(recent, k, seen)
        elif model == "mf":
            ranked = self._factors(user_id, k, seen)
        else:
            ranked = self._hybrid(user_id, recent, k, seen, now, params or {})
        used = model if ranked else "popular"
        if len(ranked) < k:
            chosen = seen + [item for item, _ in ranked]
            fill = self.popular(k - len(ranked), now, exclude=chosen)
            # A fill item scores 0 in a personalised list: its model did not choose it.
            ranked += fill if used == "popular" else [(item, 0.0) for item, _ in fill]
        return Recommendations(used, ranked)

    def _cooccurrence(self, recent: list[ItemId], k: int, seen: list[ItemId]) -> list[Scored]:
        if not recent:
            return []
        neighbours = self.store.neighbours(recent, self.config.neighbours_per_item)
        candidates = {other for pairs in neighbours.values() for other, _ in pairs}
        counts = self.store.item_counts(candidates.union(recent))
        return self.cooccurrence.recommend(recent, neighbours, counts, k, exclude=seen)

    def _user_vector(self, user_id: UserId):
        if self.item_index.cursor is None:
            self.refresh()
        return self.store.user_factors([user_id]).get(user_id)

    def _factors(self, user_id: UserId, k: int, seen: list[ItemId]) -> list[Scored]:
        vector = self._user_vector(user_id)
        return [] if vector is None else self.item_index.top(vector, k, exclude=seen)

    def _hybrid(
        self, user_id: UserId, recent: list[ItemId], k: int, seen: list[ItemId], now: float,
        params: Mapping[str, float],
    ) -> list[Scored]:
        """Blend MF, co-occurrence and popularity over the union of their candidates."""
        config = dataclasses.replace(self.config, **params) if params else self.config
        size = max(config.hybrid_candidates, k)
        sources = {
            "cooccurrence": dict(self._cooccurrence(recent, size, seen)),
            "popular": dict(self.popular(size, now, exclude=seen)),
        }
        vector = self._user_vector(user_id)
        if vector is not None:
            sources["mf"] = dict(self.item_index.top(vector, size, exclude=seen))
        if vector is None and not sources["cooccurrence"]:
            return []
        weights = {"mf": config.hybrid_mf, "cooccurrence": config.hybrid_cooccurrence,
                   "popular": config.hybrid_popular}
        blended: dict[ItemId, float] = {}
        for name, scores in sources.items():
            if not scores or weights[name] == 0:
                continue
            low, high = min(scores.values()), max(scores.values())
            span = (high - low) or 1.0
            for item, score in scores.items():
                blended[item] = blended.get(item, 0.0) + weights[name] * (score - low) / span
        ranked = sorted(blended.items(), key=lambda pair: (-pair[1], pair[0]))
        return ranked[:k]

    def user_history(self, user_id: UserId) -> list[Scored]:
        return self.store.history(user_id, self.config.history_length)

