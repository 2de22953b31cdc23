"""Why a user gets each item: every model's list for the user, side by side, with what
each item's score is made of (the console's user page, ``GET /admin/users/{id}/explain``).

It reads through the engine's own store and models, so what it explains is what the
engine serves: the lists come from :meth:`Engine.recommend_many`; the reasons are the
same reads taken apart (co-occurrence by the recent item whose neighbour list gave the
score, and what content similarity added for recent items nobody else touched; the MF
score of the user's and the item's factors; the item's decayed popularity and rank; and
the hybrid's fusion: where each source ranked the item and the points that rank earned).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from recommender.base import MODELS, ItemId, Scored, UserId
from recommender.blend import HYBRID, SOURCES
from recommender.engine import Engine


def explain(engine: Engine, user_id: UserId, k: int, now: float,
            models: Sequence[str] = MODELS) -> dict[str, Any]:
    """Every model's ``k`` items for ``user_id`` at ``now`` with the reasons behind each.

    Examples
    --------
    >>> from recommender.base import Interaction
    >>> from recommender.hyperparameters import EngineConfig
    >>> from recommender.store import InMemoryStore
    >>> engine = Engine(InMemoryStore(), EngineConfig())
    >>> _ = engine.learn_many([Interaction("ann", "tea", 1.0, 1.0),
    ...                        Interaction("ann", "cup", 2.0, 1.0),
    ...                        Interaction("bob", "tea", 3.0, 1.0)])
    >>> found = explain(engine, "bob", k=2, now=3.0)
    >>> [entry["item_id"] for entry in found["history"]]
    ['tea']
    >>> first = found["lists"]["cooccurrence"]["items"][0]
    >>> first["item_id"], [source["item_id"] for source in first["why"]["cooccurrence"]["from"]]
    ('cup', ['tea'])
    """
    config = engine.config
    if engine.item_index.cursor is None:  # the serving copy of the factors, as recommend
        engine.refresh()
    history, vector = engine.store.user_state(user_id, config.history_length)
    types = engine.store.interaction_types(user_id)
    seen = [item for item, _ in history]
    recent = [item for item, score in history if score > 0][: config.window]
    lists = engine.recommend_many(user_id, k, now, models)
    shown = {item for found in lists.values() for item, _ in found.items}
    size = max(config.hybrid_candidates, k)

    neighbours = engine.store.neighbours(recent, config.neighbours_per_item) if recent else {}
    counts = engine.store.item_counts(set(recent) | shown)
    given = engine.cooccurrence.contributions(recent, neighbours, counts, shown)
    cooccurrence = engine.cooccurrence_candidates(recent, size, seen)

    popular = engine.store.popular(size + len(seen))
    popular_values = engine.popularity_decay.values_at(popular, now)
    unseen_popular = [item for item, _ in popular.scores if item not in set(seen)][:size]

    mf_scores: dict[ItemId, float] = {}
    mf_ranked: list[Scored] = []
    if vector is not None:
        vectors = engine.item_index.vectors(shown)
        mf_scores = {item: float(np.dot(row, vector)) for item, row in vectors.items()}
        mf_ranked = engine.item_index.top(vector, size, exclude=seen)

    weights, leader = engine.fusion()
    sources = {"cooccurrence": [item for item, _ in cooccurrence], "popular": unseen_popular,
               "mf": [item for item, _ in mf_ranked]}
    reasons = {item: _why(item, given, cooccurrence, mf_scores, popular_values, sources,
                          weights, leader, config.hybrid_rank_constant) for item in shown}
    return {
        "user_id": user_id, "k": k, "now": now,
        "history": [{"item_id": item, "time": abs(at), "positive": at > 0,
                     "event_types": sorted(types.get(item, ()))} for item, at in
                    sorted(history, key=lambda pair: -abs(pair[1]))],
        "recent": recent,
        "has_factors": vector is not None,
        "fusion": {"weights": weights, "leader": leader,
                   "rank_constant": config.hybrid_rank_constant,
                   "candidates": size},
        "lists": {name: {"model": found.model, "items": [
            {"item_id": item, "score": score, "backfill": item in found.backfill,
             "why": reasons[item]} for item, score in found.items]}
            for name, found in lists.items()},
    }


def _why(item: ItemId, given: Mapping[ItemId, list[Scored]], cooccurrence: list[Scored],
         mf: Mapping[ItemId, float], popular: list[Scored],
         sources: Mapping[str, list[ItemId]], weights: Mapping[str, float], leader: str,
         constant: float) -> dict[str, Any]:
    """One item's reasons, by model."""
    amounts = given.get(item, [])
    from_neighbours = sum(amount for _, amount in amounts)
    # What the item's content adds for a recent item nobody else touched yet (the engine
    # scores those by their documents' similarity): the rest of its co-occurrence score.
    scored = dict(cooccurrence).get(item)
    content = 0.0 if scored is None else max(0.0, scored - from_neighbours)
    popular_rank = _rank(item, [other for other, _ in popular])
    ranks = {source: _rank(item, sources[source]) for source in SOURCES}
    # The fusion's points per source (recommender.blend.fuse); a leader other than the
    # fusion means the hybrid serves that source's ranking alone.
    used = weights if leader == HYBRID else {s: float(s == leader) for s in SOURCES}
    return {
        "cooccurrence": {
            "score": from_neighbours + content,
            "rank": _rank(item, [other for other, _ in cooccurrence]),
            "from": [{"item_id": source, "amount": amount} for source, amount in amounts],
            "content": content},
        "mf": {"score": mf.get(item), "rank": ranks["mf"]},
        "popular": {"score": None if popular_rank is None else popular[popular_rank - 1][1],
                    "rank": popular_rank},
        "hybrid": {
            "leader": leader,
            "sources": {source: {"rank": rank, "weight": used[source],
                                 "points": 0.0 if rank is None or used[source] <= 0
                                 else used[source] / (constant + rank)}
                        for source, rank in ranks.items()}},
    }


def _rank(item: ItemId, ranking: list[ItemId]) -> int | None:
    """1-based place of ``item`` in ``ranking``; None when it is not there."""
    try:
        return ranking.index(item) + 1
    except ValueError:
        return None
