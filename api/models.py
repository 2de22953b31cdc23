"""Response and request bodies of the HTTP API (events, items and users are in schemas/)."""

from __future__ import annotations

import math
import sys
from typing import Annotated

import orjson
from fastapi import Query
from pydantic import BaseModel, Field, field_validator
from starlette.responses import Response

from schemas.models import Id, Item, User

MAX_K = 500
K = Annotated[int, Query(ge=1, le=MAX_K, description="How many items to return.")]


def finite(score: float) -> float:
    """JSON has no NaN or infinity (they went out as null, against the spec): whatever a
    model computes, the answer carries a number, infinities as the largest float."""
    if math.isfinite(score):
        return score
    return 0.0 if math.isnan(score) else math.copysign(sys.float_info.max, score)


class ScoredItem(BaseModel):
    item_id: str
    score: float = Field(description="Always a finite number.")
    backfill: bool = Field(default=False, description=(
        "True for an item that is not the list's model's own: a popular item filling a "
        "known user's list the model could not make k long (score 0), or a content "
        "neighbour filling a similar-items list. Backfill comes after the model's items."))

    @field_validator("score")
    @classmethod
    def _finite(cls, score: float) -> float:
        return finite(score)


class RecommendationList(BaseModel):
    recommendation_id: str = Field(description="Send it back with clicks and conversions.")
    user_id: str
    placement: str
    variant: str = Field(description="The variant that served this list.")
    model: str = Field(description="The model that ranked it: the variant's (or the "
                                   "forced) model for a user with a history, popular for "
                                   "users nobody knows yet.")
    items: list[ScoredItem]
    degraded: bool = Field(default=False, description="True when the state store was "
                           "unreachable and the list comes from the last known popular items.")
    version: str = Field(description="The model version whose state ranked it "
                                     "(`streamrec promote`).")


def scored_items(scored, backfill: frozenset = frozenset()) -> list[dict]:
    """``(item, score)`` pairs as :class:`ScoredItem` documents, without building one."""
    return [{"item_id": item, "score": finite(float(score)), "backfill": item in backfill}
            for item, score in scored]


def recommendation_list(recommendation_id: str, user_id: str, placement: str, variant: str,
                        model: str, items: list[dict], degraded: bool, version: str
                        ) -> Response:
    """A :class:`RecommendationList` answered as JSON made by orjson. The route declares
    the model for its OpenAPI schema; FastAPI validating and serialising it again cost a
    tenth of the event loop's time per request (tests/unit/test_api_models.py checks that
    both give the same document)."""
    return Response(orjson.dumps({
        "recommendation_id": recommendation_id, "user_id": user_id, "placement": placement,
        "variant": variant, "model": model, "items": items, "degraded": degraded,
        "version": version}), media_type="application/json")


class ItemList(BaseModel):
    recommendation_id: str = Field(description="Send it back with clicks and conversions "
                                   "(credited to the route's placement, popular or similar).")
    items: list[ScoredItem]
    degraded: bool = False
    model: str | None = Field(default=None, description="What ranked the list: popular, "
                              "cooccurrence, or the lists:NAME set asked for.")


class Accepted(BaseModel):
    accepted: int
    event_ids: list[str]


class Queued(BaseModel):
    """A catalog change handed to Kafka; the worker applies it."""

    id: str
    topic: str


class ItemBody(Item):
    """An item's properties; ``item_id`` may be left out (the path names it)."""

    item_id: Id | None = None  # type: ignore[assignment]


class UserBody(User):
    """A user's properties; ``user_id`` may be left out (the path names it)."""

    user_id: Id | None = None  # type: ignore[assignment]
