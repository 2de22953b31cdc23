"""What operators look at: the catalog's items and the users, searched and paged, and why
a user gets each item of every model's list (the console's catalog and user pages)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.deps import EngineDep
from api.routing import GuardedRoute
from api.security import ADMIN, KEY_RESPONSES
from api.shedding import SHED_RESPONSES
from recommender.explain import explain
from schemas.models import Id
from streamrec.storage.catalog_listing import CatalogListing

router = APIRouter(route_class=GuardedRoute, prefix="/admin", tags=["browse"],
                   dependencies=[ADMIN], responses={**KEY_RESPONSES, **SHED_RESPONSES})

Search = Annotated[str, Query(max_length=256, description="Part of the id (or an item's "
                                                           "title), any case; empty: all.")]
# Redis takes 64-bit cursors and ranks; a page's end (cursor + limit) stays below them.
Cursor = Annotated[int, Query(ge=0, le=2**62, description=(
    "Where the page starts: the previous page's next_cursor (0: the first page)."))]
Limit = Annotated[int, Query(ge=1, le=200, description="Entries per page.")]


class Page(BaseModel):
    entries: list[dict] = Field(description="This page's entries.")
    next_cursor: int | None = Field(description="The next page's cursor; null at the end.")


@router.get("/items")
def items(engine: EngineDep, query: Search = "", cursor: Cursor = 0, limit: Limit = 20) -> Page:
    """Catalog items whose id or title holds ``query``, newest change first (deleted
    ones have a null document)."""
    found, after = CatalogListing(engine.store).items(query, cursor, limit)
    return Page(entries=found, next_cursor=after)


@router.get("/users")
def users(engine: EngineDep, query: Search = "", cursor: Cursor = 0, limit: Limit = 20) -> Page:
    """Users with a history whose id holds ``query``, with their history's length and
    document. A page may hold a few more than ``limit`` (Redis SCAN's steps)."""
    found, after = CatalogListing(engine.store).users(query, cursor, limit)
    return Page(entries=found, next_cursor=after)


@router.get("/users/{user_id}/explain")
async def explain_user(user_id: Id, engine: EngineDep,
                       k: Annotated[int, Query(ge=1, le=100)] = 10) -> dict:
    """The user's history and every model's ``k`` items side by side, each with why:
    which recent items' neighbour lists gave its co-occurrence score and how much, its MF
    score, its popularity and rank, and where each of the hybrid's sources ranked it."""
    return await run_in_threadpool(explain, engine, user_id, k, time.time())
