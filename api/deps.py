"""Dependency aliases: handlers declare what they need by type."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.allocation import Allocation
from api.producer import EventProducer
from recommender.engine import Engine
from recommender.weights import EventWeights
from streamrec.settings import Settings


def _engine(request: Request) -> Engine:
    return request.app.state.engine


def _producer(request: Request) -> EventProducer:
    return request.app.state.producer


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _weights(request: Request) -> EventWeights:
    return request.app.state.weights


def _allocation(request: Request) -> Allocation:
    return request.app.state.allocation


AllocationDep = Annotated[Allocation, Depends(_allocation)]
EngineDep = Annotated[Engine, Depends(_engine)]
ProducerDep = Annotated[EventProducer, Depends(_producer)]
SettingsDep = Annotated[Settings, Depends(_settings)]
WeightsDep = Annotated[EventWeights, Depends(_weights)]
