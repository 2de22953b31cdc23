from __future__ import annotations

import asyncio
import os
import time
from functools import partial
from typing import Annotated

import orjson
import redis
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from api.context import CONTEXT_DESCRIPTION, parse_context
from api.deps import (
    ListFilterDep,
    ServingDep,
    SimilarItemsFilterDep,
)
from api.models import (
    ItemList,
    K,
    RecommendationList,
    ScoredItem,
    recommendation_list,
    scored_items,
)
from api.named_filters import invalid
from api.routing import GuardedRoute
from api.security import KEY_RESPONSES, READ
from api.shedding import SHED, SHED_RESPONSES
from recommender.allocation import DEFAULT_PLACEMENT, Audience, read_audience
from recommender.attribution import ROUTE_PLACEMENTS, Impression
from recommender.base import LISTS_PREFIX
from recommender.engine import Recommendations
from schemas.impression import NAME_PATTERN
from schemas.models import Id, ModelName

router = APIRouter(route_class=GuardedRoute, tags=["recommendations"], dependencies=[READ],
                   responses={**KEY_RESPONSES, **SHED_RESPONSES})

def _items(scored, backfill: frozenset = frozenset()) -> list[ScoredItem]:
    return [ScoredItem(item_id=item, score=score, backfill=item in backfill)
            for item, score in scored]


Placement = Annotated[str, Query(max_length=64, pattern=NAME_PATTERN,
                                 description="Where the list is shown (home, item_page ...).")]
FilterUser = Annotated[Id | None, Query(
    description="Whose interactions and properties a filter's Interactions and Users "
                "conditions read, and whose clicks the list's recommendation_id credits "
                "(the list itself is not personalised).")]
FILTERED_RESPONSES: dict[int | str, dict] = {503: {
    "description": "State store unreachable for a filtered list (an unfiltered one falls back "
                   f"to the last known popular items); {SHED}"}}


def _random_ids(per_read: int = 256):
    """128-bit random ids in hex, read from the OS ``per_read`` at a time: ``uuid4``
    reads 16 bytes per call, a system call per list (1.4% of the API's samples)."""
    while True:
        block = os.urandom(16 * per_read)
        for start in range(0, len(block), 16):
            yield block[start:start + 16].hex()


# Called on the event loop only (a generator is not to be advanced by two threads at once).
_new_id = _random_ids().__next__


def _log_impression(producer, settings, placement: str, user_id: str | None, model: str,
                    items, now: float, allocated: bool = True, variant: str | None = None,
                    decision=None) -> str:
    """Log a list as shown (best effort, off the request path), with how its variant was
    chosen; returns its id, which clicks carry back so the list's variant is credited."""
    recommendation_id = _new_id()
    impression = Impression(recommendation_id, user_id, placement,
                            variant or ROUTE_PLACEMENTS[placement], model,
                            tuple(item for item, _ in items), now, allocated, decision)
    # Keyed by the user as the events are; an anonymous list by its own id.
    producer.impressions.send(settings.impressions_topic,
                              (user_id or recommendation_id).encode(),
                              orjson.dumps(impression.to_dict()))
    return recommendation_id


def _refuse_when_impressions_wait(producer, settings) -> None:
    """Back-pressure: a list whose impression could not be recorded would make its clicks
    count as no_impression; shed it like any overload."""
    if producer.impressions.full():
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"overloaded: {settings.impression_buffer} impressions waiting for Kafka "
                   "(impression_buffer); retry later",
            headers={"Retry-After": str(settings.retry_after_seconds)})


def _unreachable(error: Exception) -> HTTPException:
    return HTTPException(503, detail=f"state store unreachable: {error}",
                         headers={"Retry-After": "5"})


@router.get("/recommendations", response_model=RecommendationList,
            responses=FILTERED_RESPONSES)
async def recommendations(
    request: Request,
    serving: ServingDep,
    item_filter: ListFilterDep,
    user_id: Annotated[Id, Query()],
    k: K = 10,
    placement: Placement = DEFAULT_PLACEMENT,
    model: Annotated[ModelName | None, Query(
        description="Force a model and skip allocation; default: the placement's variant.")]
    = None,
    category: Annotated[str | None, Query(
        max_length=128, description="A theme the user chose (onboarding, a tab): where "
        "popular items come from while the models know nothing about the user yet.")] = None,
    context: Annotated[str | None, Query(max_length=2048, description=CONTEXT_DESCRIPTION)]
    = None,
) -> Response:
    """Top-k for a user, never items they already interacted with.

    The placement's allocation (A/B split or bandit) picks a variant: a model with its
    parameters. Models: ``cooccurrence`` (neighbours of recent items), ``mf`` (online
    matrix factorisation), ``hybrid`` (a blend of both with popularity), ``popular``.
    A user nobody knows gets popular items (``model: popular``); a known user gets the
    model's own items, and popular items flagged ``backfill`` fill what it could not
    (README, "Short lists"). Send ``recommendation_id`` back with clicks and conversions
    (``POST /events``) so the variant is credited. ``filter`` applies a registered filter
    (see the README's Filters); one that leaves nothing gives an empty list.
    """
    served, settings, allocation, producer, fallback, metrics, serving_threads = serving
    _refuse_when_impressions_wait(producer, settings)
    engine = served.engine
    if model is not None and model.startswith(LISTS_PREFIX):
        await _refuse_missing_list_set(engine, model)
    request_context = parse_context(context, request.query_params)
    now = time.time()
    audience = None
    reads = allocation.reads(placement) if model is None else frozenset()
    if reads:  # the hop only where reads are due
        try:
            audience = await asyncio.get_running_loop().run_in_executor(
                serving_threads, partial(read_audience, engine.store, reads, user_id,
                                         request_context, now))
        except redis.RedisError:  # choose without what could not be read: it still serves
            audience = Audience(request_context, now=now)
    elif model is None:  # the time, for a contextual placement that reads nothing more
        audience = Audience(request_context, now=now)
    # Only the allocation's choice on a configured placement may count for its variants
    # (and move its bandit): a forced model or an unknown name is logged, never credited.
    choice = allocation.choose_for(placement, user_id, model, audience)
    name, chosen, params, allocated = (choice.variant, choice.model, choice.params,
                                       choice.allocated)
    try:
        # Off the event loop, filtered or not: a Redis that hangs must cost this request
        # its deadline (api.shedding), not stall every route of the process. The hop
        # costs CPU (measured on popular: 1.6 -> 2.6 ms a request), which async Redis I/O
        # would save.
        result = await asyncio.get_running_loop().run_in_executor(serving_threads, partial(
            engine.recommend, user_id, k, now, chosen, params, item_filter, category))
        degraded = False
    except redis.RedisError as error:
        if item_filter is not None:  # the last known items were never filtered
            raise _unreachable(error) from error
        # Redis is away: answer from what this process last read, and say so.
        result, degraded = Recommendations("popular", fallback.top(k)), True
    metrics.serve(placement, name, result.model, allocated)
    recommendation_id = _log_impression(producer, settings, placement, user_id, result.model,
                                        result.items, now, allocated, name, choice.decision)
    return recommendation_list(recommendation_id, user_id, placement, name, result.model,
                               scored_items(result.items, result.backfill), degraded,
                               served.version)


async def _refuse_missing_list_set(engine, model: str) -> None:
    """A forced ``lists:NAME`` of a set never imported (or deleted) is a mistake worth a
    422; a placement's variant naming one serves its popular backfill instead."""
    if engine.external_models is None:
        return
    try:
        found = await run_in_threadpool(engine.external_models, model)
    except redis.RedisError:
        return  # the request itself meets the outage and answers for it
    if found is None:
        raise invalid("model", f"no list set {model.removeprefix(LISTS_PREFIX)!r} in this "
                      "app (streamrec lists list; streamrec lists import NAME FILE)", model)


@router.get("/items/{item_id}/similar", response_model=ItemList)
async def similar(serving: ServingDep, item_filter: SimilarItemsFilterDep,
                  item_id: Id, k: K = 10, user_id: FilterUser = None,
                  model: Annotated[ModelName, Query(description=SIMILAR_MODEL)]
                  = "cooccurrence") -> ItemList:
    """Items most often touched together with this one (cosine of decayed co-occurrence);
    when fewer than k, items whose catalog document resembles it follow, flagged
    ``backfill``. ``filter`` may compare with this item's properties
    (``CurrentItem.<name>``). Send ``recommendation_id`` back with clicks (placement
    ``similar``)."""
    engine, settings, producer = serving.served.engine, serving.settings, serving.producer
    _refuse_when_impressions_wait(producer, settings)
    if model != "cooccurrence":
        if not model.startswith(LISTS_PREFIX):
            raise invalid("model", f"{model!r} ranks no similar items (cooccurrence, or "
                          "lists:NAME of a set imported with --similar)", model)
        await _refuse_missing_list_set(engine, model)
    now = time.time()
    result = await asyncio.get_running_loop().run_in_executor(serving.threads, partial(
        engine.similar_items, item_id, k, now, item_filter, user_id, model))
    return ItemList(recommendation_id=_log_impression(producer, settings, "similar", user_id,
                                                      result.model, result.items, now),
                    items=_items(result.items, result.backfill), model=result.model)


SIMILAR_MODEL = ("What ranks the list: `cooccurrence`, or `lists:NAME`, a set of similar-item "
                 "lists imported with `streamrec lists import NAME FILE --similar` (an item "
                 "the set has no list for is ranked by co-occurrence; `model` in the answer "
                 "says which).")


@router.get("/popular", response_model=ItemList, responses={
    503: {"description": "State store unreachable, for a category or a filter (the overall "
                         f"list falls back to the last known popular items); {SHED}"}})
async def popular(
    serving: ServingDep,
    item_filter: ListFilterDep,
    k: K = 10,
    category: Annotated[str | None, Query(max_length=128)] = None,
    user_id: FilterUser = None,
) -> ItemList:
    """Most popular items now (time-decayed, event-weighted), optionally in one category
    and through a registered ``filter``. Send ``recommendation_id`` back with clicks
    (placement ``popular``)."""
    engine, settings, producer = serving.served.engine, serving.settings, serving.producer
    _refuse_when_impressions_wait(producer, settings)
    now = time.time()
    try:
        items = await asyncio.get_running_loop().run_in_executor(serving.threads, partial(
            engine.popular, k, now, category, item_filter=item_filter, user_id=user_id))
        degraded = False
    except redis.RedisError as error:
        if category is not None or item_filter is not None:  # only the overall list is kept
            raise _unreachable(error) from error
        items, degraded = serving.fallback.top(k), True
    return ItemList(recommendation_id=_log_impression(producer, settings, "popular", user_id,
                                                      "popular", items, now),
                    items=_items(items), degraded=degraded, model="popular")
