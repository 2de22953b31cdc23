"""Named filters, registered at run time and applied per request with ``filter=NAME``."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.deps import FiltersDep
from api.limits import BODY_RESPONSES
from api.named_filters import NAME_PATTERN
from api.routing import GuardedRoute
from api.security import ADMIN, KEY_RESPONSES
from api.shedding import SHED_RESPONSES
from recommender.filters import MAX_LENGTH, FilterError, parse
from streamrec.storage.filter_definitions import TooManyFilters

router = APIRouter(route_class=GuardedRoute, prefix="/admin", tags=["filters"],
                   dependencies=[ADMIN], responses={**KEY_RESPONSES, **SHED_RESPONSES})

FilterName = Annotated[str, Path(min_length=1, max_length=64, pattern=NAME_PATTERN)]


class FilterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expression: str = Field(description=f"At most {MAX_LENGTH} characters, e.g. "
                                        '`EXCLUDE ItemID WHERE Items.categories IN ("Horror")`.')

    @field_validator("expression")
    @classmethod
    def _parses(cls, expression: str) -> str:
        try:
            parse(expression)
        except FilterError as error:
            raise ValueError(str(error)) from None
        return expression


class FilterDefinition(BaseModel):
    name: str
    expression: str
    action: str = Field(description="INCLUDE or EXCLUDE.")
    parameters: list[str] = Field(description="The $PARAMETERS requests must give.")
    version: int
    updated_at: float


@router.get("/filters")
def filters(registry: FiltersDep) -> dict[str, FilterDefinition]:
    """Every registered filter, by name."""
    return registry.definitions.all()


@router.get("/filters/{name}", responses={404: {"description": "No such filter"}})
def get_filter(name: FilterName, registry: FiltersDep) -> FilterDefinition:
    """One registered filter."""
    definition = registry.definitions.get(name)
    if definition is None:
        raise HTTPException(404, detail=f"name: no filter named {name!r}")
    return definition


@router.put("/filters/{name}", responses={**BODY_RESPONSES, 409: {
    "description": "As many filters as allowed are registered already"}})
async def put_filter(name: FilterName, body: FilterBody,
                     registry: FiltersDep) -> FilterDefinition:
    """Register or replace a filter. A list applies it with ``filter=NAME``; every API
    process knows it at once. An expression that does not parse is a 422 naming where."""
    rule = parse(body.expression)
    definition = {"expression": body.expression, "action": rule.action,
                  "parameters": rule.parameters, "updated_at": time.time()}
    try:
        stored = await run_in_threadpool(registry.definitions.put, name, definition)
    except TooManyFilters as error:
        raise HTTPException(409, detail=f"name: {error}") from error
    await run_in_threadpool(registry.refresh)
    return stored


@router.delete("/filters/{name}", status_code=204, responses={
    404: {"description": "No such filter"}})
async def delete_filter(name: FilterName, registry: FiltersDep) -> Response:
    """Remove a filter; requests naming it get 422 (other API processes within
    ``filter_refresh_seconds``)."""
    if not await run_in_threadpool(registry.definitions.delete, name):
        raise HTTPException(404, detail=f"name: no filter named {name!r}")
    await run_in_threadpool(registry.refresh)
    return Response(status_code=204)
