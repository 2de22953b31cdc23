"""A filter expression checked and tried before it is saved: the console's filter editor
validates as one types and previews the list a filter would give."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from api.deps import EngineDep, SettingsDep
from api.limits import BODY_RESPONSES
from api.models import ScoredItem
from api.routing import GuardedRoute
from api.security import ADMIN, KEY_RESPONSES
from api.shedding import SHED_RESPONSES
from recommender.filters import MAX_LENGTH, FilterError, check, parse
from schemas.models import Id, ModelName

router = APIRouter(route_class=GuardedRoute, prefix="/admin/filters", tags=["filters"],
                   dependencies=[ADMIN], responses={**KEY_RESPONSES, **SHED_RESPONSES})

Expression = Annotated[str, Field(max_length=2 * MAX_LENGTH, description=(
    f"A filter expression (at most {MAX_LENGTH} characters parse), e.g. "
    '`EXCLUDE ItemID WHERE Items.categories IN ("Horror")`.'))]


class ValidateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expression: Expression


class Validity(BaseModel):
    valid: bool
    message: str | None = Field(description="The parser's message (null when valid).")
    position: int | None = Field(description="Where the parser stopped, characters from 1.")
    action: str | None = Field(description="INCLUDE or EXCLUDE, when valid.")
    parameters: list[str] = Field(description="The $PARAMETERS a request must give.")
    uses_current_item: bool


@router.post("/validate", responses=BODY_RESPONSES)
def validate(body: ValidateBody) -> Validity:
    """Whether the expression parses, with the parser's message and position: a 200
    either way (a bad expression is the answer, not an error)."""
    return Validity(**check(body.expression))


class PreviewBody(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    expression: Expression
    user_id: Id | None = Field(default=None, description="Whose list (none: popular items).")
    item_id: Id | None = Field(default=None, description=(
        "The current item: previews its similar items (needed for CurrentItem)."))
    values: dict[str, Any] = Field(default_factory=dict, description="The $PARAMETERS.")
    k: int = Field(default=10, ge=1, le=100)
    model: ModelName | None = Field(default=None, description="Default: the settings'.")


class Preview(BaseModel):
    model: str
    items: list[ScoredItem]


@router.post("/preview", responses={**BODY_RESPONSES, 422: {
    "description": "The expression does not parse, or its values do not fit"}})
async def preview(body: PreviewBody, engine: EngineDep, settings: SettingsDep) -> Preview:
    """The list the filter would give now: the user's (their model's list, or
    ``model``'s), or with ``item_id`` that item's similar items. Nothing is saved or
    logged as shown."""
    try:
        rule = parse(body.expression)
        bound = rule.bind(body.values)
    except FilterError as error:
        field = "values" if str(error).startswith("filter_values") else "expression"
        raise HTTPException(422, detail=f"{field}: {error}") from None
    if rule.uses_current_item and body.item_id is None:
        raise HTTPException(422, detail="item_id: the filter uses CurrentItem, which only "
                                        "a preview of an item's similar items has")
    now = time.time()
    if body.item_id is not None:
        found = await run_in_threadpool(engine.similar_items, body.item_id, body.k, now,
                                        bound, body.user_id)
    else:
        model = body.model or (settings.default_model if body.user_id else "popular")
        found = await run_in_threadpool(engine.recommend, body.user_id or "", body.k, now,
                                        model, None, bound)
    return Preview(model=found.model, items=[
        ScoredItem(item_id=item, score=score, backfill=item in found.backfill)
        for item, score in found.items])
