"""The event types every role accepts, and their weights: one table in Redis, changed here
(or with ``streamrec event-types``) and read by the API, import, worker and rebuild."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ContextDep
from api.limits import BODY_RESPONSES
from api.routing import GuardedRoute
from api.security import ADMIN, KEY_RESPONSES
from api.shedding import SHED_RESPONSES
from recommender.base import MAX_WEIGHT
from schemas.impression import NAME_PATTERN
from streamrec.storage.event_weights import EventTypeError

router = APIRouter(route_class=GuardedRoute, prefix="/admin", tags=["event types"],
                   dependencies=[ADMIN], responses={**KEY_RESPONSES, **SHED_RESPONSES})

EventTypeName = Annotated[str, Path(min_length=1, max_length=64, pattern=NAME_PATTERN)]


class EventTypeBody(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    weight: float = Field(ge=0, le=MAX_WEIGHT, description="How much one event of this type "
                          "says about a user's taste (view 1, purchase 8 by default); 0: "
                          "recorded as seen, never a positive.")


@router.get("/event-types")
def event_types(context: ContextDep) -> dict[str, float]:
    """Every accepted event type with its weight."""
    return context.event_types.shared.read()


@router.put("/event-types/{name}", responses=BODY_RESPONSES)
async def put_event_type(name: EventTypeName, body: EventTypeBody,
                         context: ContextDep) -> dict[str, float]:
    """Add an event type or change its weight, for every role: this API process at once,
    the others within ``STREAMREC_EVENT_TYPES_REFRESH_SECONDS``, the worker from its next
    batch. Answers the whole table."""
    types = context.event_types
    table = await run_in_threadpool(types.shared.put, name, body.weight)
    types.use(table)
    return table


@router.delete("/event-types/{name}", status_code=200,
               responses={404: {"description": "Not an event type"},
                          422: {"description": "The only event type"}})
async def delete_event_type(name: EventTypeName, context: ContextDep) -> dict[str, float]:
    """Stop accepting an event type. Events of it that an API process accepted before it
    re-read the table (within ``STREAMREC_EVENT_TYPES_REFRESH_SECONDS``) reach the worker
    after the change and are dead-lettered, with their bytes, to ``events.dlq``."""
    types = context.event_types
    try:
        table = await run_in_threadpool(types.shared.remove, name)
    except EventTypeError as error:
        raise HTTPException(422, detail=str(error)) from None
    if table is None:
        raise HTTPException(404, detail=f"name: {name!r} is not an event type")
    types.use(table)
    return table
