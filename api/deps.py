"""Dependency aliases: handlers declare what they need by type.

The providers are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in
its thread pool, a thread hop per dependency per request for a dictionary lookup.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from api.fallback import LastKnownPopular
from api.metrics_hub import MetricsHub
from api.named_filters import Filters, list_filter, similar_items_filter
from api.producer import EventProducer
from api.serving_version import Served
from recommender.allocation import Allocation
from recommender.engine import Engine
from recommender.filters import BoundFilter
from recommender.weights import EventWeights
from streamrec.settings import Settings


async def _engine(request: Request) -> Engine:
    return request.app.state.versions.engine  # the serving model version's


async def _served(request: Request) -> Served:
    return request.app.state.versions.served()


async def _producer(request: Request) -> EventProducer:
    return request.app.state.producer


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _weights(request: Request) -> EventWeights:
    types = request.app.state.event_types
    if not types.read:  # the settings' table may hold a type the worker's does not
        settings = request.app.state.settings
        raise HTTPException(503, detail="event types not read from Redis yet; nothing was "
                            "accepted", headers={"Retry-After": str(settings.retry_after_seconds)})
    return types.weights


async def _allocation(request: Request) -> Allocation:
    return request.app.state.allocation


async def _fallback(request: Request) -> LastKnownPopular:
    return request.app.state.fallback


async def _filters(request: Request) -> Filters:
    return request.app.state.filters


async def _serving_threads(request: Request) -> Executor:
    return request.app.state.serving_threads


async def _metrics(request: Request) -> MetricsHub:
    return request.app.state.metrics


MetricsDep = Annotated[MetricsHub, Depends(_metrics)]
FallbackDep = Annotated[LastKnownPopular, Depends(_fallback)]
AllocationDep = Annotated[Allocation, Depends(_allocation)]
EngineDep = Annotated[Engine, Depends(_engine)]
ServedDep = Annotated[Served, Depends(_served)]  # the engine with its version's name
ProducerDep = Annotated[EventProducer, Depends(_producer)]
SettingsDep = Annotated[Settings, Depends(_settings)]
WeightsDep = Annotated[EventWeights, Depends(_weights)]
FiltersDep = Annotated[Filters, Depends(_filters)]
# Where a handler runs its blocking store calls (api.main's lifespan sizes it).
ServingThreadsDep = Annotated[Executor, Depends(_serving_threads)]
# The request's filter (query ``filter`` and ``filter_values``), bound; None without one.
ListFilterDep = Annotated[BoundFilter | None, Depends(list_filter)]
SimilarItemsFilterDep = Annotated[BoundFilter | None, Depends(similar_items_filter)]
