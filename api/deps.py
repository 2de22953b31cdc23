"""Dependency aliases: handlers declare what they need by type.

The providers are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in
its thread pool, a thread hop per dependency per request for a dictionary lookup.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Annotated, NamedTuple

from fastapi import Depends, HTTPException, Path, Request

from api.apps import AppContext
from api.fallback import LastKnownPopular
from api.metrics_hub import MetricsHub
from api.named_filters import Filters, list_filter, similar_items_filter
from api.producer import AppProducer
from api.serving_version import Served
from recommender.allocation import Allocation
from recommender.engine import Engine
from recommender.filters import BoundFilter
from recommender.weights import EventWeights
from streamrec.apps import NAME
from streamrec.settings import Settings


async def _context(request: Request) -> AppContext:
    """The context of the request's app: ``/apps/{app}/...``, else ``default``."""
    return await request.app.state.apps.of(request)


ContextDep = Annotated[AppContext, Depends(_context)]

APP_PREFIX = "/apps/{app}"
AppName = Annotated[str, Path(min_length=1, max_length=32, pattern=NAME.pattern,
                              description="The app (``default``: the bare routes' app).")]
UNKNOWN_APP: dict[int | str, dict] = {404: {"description": "No such app (or no such "
                                                           "resource of the app)"}}


async def _admit(request: Request) -> None:
    await request.app.state.apps.admit(request)


_admit.admits = True  # type: ignore[attr-defined]  # a GuardedRoute admits before it


async def _admit_app(request: Request, app: AppName) -> None:
    # ``app`` is declared here so the spec documents the path's parameter.
    await request.app.state.apps.admit(request)


# Every route of an app resolves its context first: 404 for an app that does not exist
# (422 for a name no app can have), 429 over its requests_per_second quota. A GuardedRoute
# did so already, before reading the body; these are for the others (metrics).
DEFAULT_APP = Depends(_admit)
THE_APP = Depends(_admit_app)


async def _engine(context: ContextDep) -> Engine:
    return context.versions.engine  # the serving model version's


async def _served(context: ContextDep) -> Served:
    return context.versions.served()


async def _producer(context: ContextDep) -> AppProducer:
    return context.app_producer


async def _settings(context: ContextDep) -> Settings:
    return context.settings


async def _weights(context: ContextDep) -> EventWeights:
    types = context.event_types
    if not types.read:  # the settings' table may hold a type the worker's does not
        settings = context.settings
        raise HTTPException(503, detail="event types not read from Redis yet; nothing was "
                            "accepted", headers={"Retry-After": str(settings.retry_after_seconds)})
    return types.weights


async def _allocation(context: ContextDep) -> Allocation:
    return context.allocation


async def _fallback(context: ContextDep) -> LastKnownPopular:
    return context.fallback


async def _filters(context: ContextDep) -> Filters:
    return context.filters


async def _serving_threads(request: Request) -> Executor:
    return request.app.state.serving_threads


async def _metrics(context: ContextDep) -> MetricsHub:
    return context.metrics


async def _read_metrics(context: ContextDep) -> MetricsHub:
    return context.collect_metrics()  # an app's hub collects from its first reader on


class Serving(NamedTuple):
    """What a list route serves from, resolved as one dependency: FastAPI solves each
    dependency of a request in a nested call of its own (with its own parameter checks),
    and nine of them for one list cost more of the event loop than the handler did
    (py-spy, docs/benchmarks.md)."""

    served: Served  # the serving version and its engine, read together
    settings: Settings
    allocation: Allocation
    producer: AppProducer
    fallback: LastKnownPopular
    metrics: MetricsHub  # to count into
    threads: Executor  # where the handler runs its blocking store calls


async def _serving(request: Request) -> Serving:
    context = await request.app.state.apps.of(request)
    return Serving(context.versions.served(), context.settings, context.allocation,
                   context.app_producer, context.fallback, context.metrics,
                   request.app.state.serving_threads)


ServingDep = Annotated[Serving, Depends(_serving)]
MetricsDep = Annotated[MetricsHub, Depends(_metrics)]  # to count into
ReadMetricsDep = Annotated[MetricsHub, Depends(_read_metrics)]  # to read snapshots from
FallbackDep = Annotated[LastKnownPopular, Depends(_fallback)]
AllocationDep = Annotated[Allocation, Depends(_allocation)]
EngineDep = Annotated[Engine, Depends(_engine)]
ServedDep = Annotated[Served, Depends(_served)]  # the engine with its version's name
# The API's producer, sending as the request's app (its Kafka header and catalog keys).
ProducerDep = Annotated[AppProducer, Depends(_producer)]
SettingsDep = Annotated[Settings, Depends(_settings)]
WeightsDep = Annotated[EventWeights, Depends(_weights)]
FiltersDep = Annotated[Filters, Depends(_filters)]
# Where a handler runs its blocking store calls (api.main's lifespan sizes it).
ServingThreadsDep = Annotated[Executor, Depends(_serving_threads)]
# The request's filter (query ``filter`` and ``filter_values``), bound; None without one.
ListFilterDep = Annotated[BoundFilter | None, Depends(list_filter)]
SimilarItemsFilterDep = Annotated[BoundFilter | None, Depends(similar_items_filter)]
