from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from api.deps import EngineDep, SettingsDep
from api.models import ItemList, K, RecommendationList, ScoredItem
from schemas.models import Id

router = APIRouter(tags=["recommendations"])

ModelName = Literal["popular", "cooccurrence", "mf", "hybrid"]


def _items(scored) -> list[ScoredItem]:
    return [ScoredItem(item_id=item, score=score) for item, score in scored]


@router.get("/recommendations", response_model=RecommendationList)
def recommendations(
    engine: EngineDep,
    settings: SettingsDep,
    user_id: Annotated[Id, Query()],
    k: K = 10,
    model: Annotated[ModelName | None, Query(description="Default: the configured model.")]
    = None,
) -> RecommendationList:
    """Top-k for a user, never items they already interacted with.

    Models: ``cooccurrence`` (neighbours of their recent items), ``mf`` (online matrix
    factorisation), ``hybrid`` (a blend of both with popularity), ``popular``. Lists are
    filled with popular items; an unknown user gets popular items from every model, and
    ``model`` in the answer says which model actually ranked the list.
    """
    result = engine.recommend(user_id, k, now=time.time(), model=model or settings.default_model)
    return RecommendationList(
        recommendation_id=uuid.uuid4().hex, user_id=user_id, model=result.model,
        items=_items(result.items),
    )


@router.get("/items/{item_id}/similar", response_model=ItemList)
def similar(engine: EngineDep, item_id: Id, k: K = 10) -> ItemList:
    """Items most often touched together with this one (cosine of decayed co-occurrence)."""
    return ItemList(items=_items(engine.similar(item_id, k)))


@router.get("/popular", response_model=ItemList)
def popular(
    engine: EngineDep, k: K = 10, category: Annotated[str | None, Query(max_length=128)] = None
) -> ItemList:
    """Most popular items now (time-decayed, event-weighted), optionally in one category."""
    return ItemList(items=_items(engine.popular(k, time.time(), category)))
