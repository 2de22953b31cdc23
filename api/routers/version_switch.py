"""Promote and roll back model versions over HTTP, by the rules of ``streamrec promote``
and ``streamrec rollback`` (the same checks: :meth:`Versions.check_promotable`,
:func:`streamrec.version_status.not_promotable`), and their log; the same for the runs of
trained models (``MODEL@N``, :class:`streamrec.storage.trained_runs.TrainedRuns`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ContextDep, SettingsDep
from api.limits import BODY_RESPONSES
from api.routing import GuardedRoute
from api.security import ADMIN, KEY_RESPONSES
from api.shedding import SHED_RESPONSES
from recommender.base import BATCH_MODELS
from streamrec import version_status
from streamrec.storage.model_versions import VersionError, Versions
from streamrec.storage.trained_runs import RunError, parse_run

router = APIRouter(route_class=GuardedRoute, prefix="/admin/versions", tags=["admin"],
                   dependencies=[ADMIN], responses={**KEY_RESPONSES, **SHED_RESPONSES})

VersionName = Annotated[str, Path(min_length=1, max_length=64)]
Author = Annotated[str, Header(alias="X-Streamrec-Author", max_length=128)]
REFUSED = {409: {"description": "Refused: the version is not ready, not live or lags "
                                "(force promotes a ready one anyway); nothing to roll back"}}


def _registry(context) -> Versions:
    return context.versions.registry  # the request's app's


def _kafka(request: Request, settings) -> version_status.KafkaReader:
    state = request.app.state
    if getattr(state, "version_kafka", None) is None:  # shared with GET /admin/versions
        state.version_kafka = version_status.KafkaReader(settings)
    return state.version_kafka


class PromoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: bool = Field(default=False, description=(
        "Promote even a version no worker keeps live or one that lags behind."))


@router.post("/{name}/promote", responses={**BODY_RESPONSES, **REFUSED})
async def promote(name: VersionName, request: Request, settings: SettingsDep,
                  context: ContextDep, body: PromoteBody | None = None,
                  author: Author = "api") -> dict:
    """Serve version ``name`` (every API process follows within a second). Refused (409,
    saying why) unless a worker consumes for it and it is at most
    ``STREAMREC_PROMOTE_MAX_LAG`` events behind, or ``force``; the answer's ``warning``
    says what a forced promote risks."""
    if "@" in name:  # a trained run, MODEL@N: serves MODEL (docs/trainer.md)
        return await run_in_threadpool(_promote_run, context, name, author)
    registry = _registry(context)
    force = body is not None and body.force
    try:
        version = await run_in_threadpool(registry.check_promotable, name)
    except VersionError as error:
        raise HTTPException(409, detail=f"name: {error}") from None
    if await run_in_threadpool(registry.serving) == name:
        return {"serving": name, "previous": None, "changed": False, "warning": None}
    found = await version_status.statuses(settings, registry, {name: version},
                                          0.8 * settings.request_deadline_seconds,
                                          _kafka(request, settings))
    problem = version_status.not_promotable(found[name], settings.promote_max_lag)
    if problem and not force:
        raise HTTPException(409, detail=f"refused: {problem}. Start `streamrec worker "
                                        f"--version {name}` and promote once it is live and "
                                        "caught up, or promote with force")
    try:
        previous = await run_in_threadpool(registry.promote, name, author)
    except VersionError as error:
        raise HTTPException(409, detail=f"name: {error}") from None
    return {"serving": name, "previous": previous, "changed": previous is not None,
            "warning": None if problem is None else f"promoted with force although {problem}"}


def _promote_run(context, name: str, author: str) -> dict:
    try:
        model, number = parse_run(name)
        previous = context.wiring.trained_runs().promote(model, number, author)
    except RunError as error:
        raise HTTPException(409, detail=f"name: {error}") from None
    return {"serving": name, "previous": None if previous in (None, False)
            else f"{model}@{previous}", "changed": previous is not False, "warning": None}


@router.post("/rollback", responses=REFUSED)
async def rollback(context: ContextDep, author: Author = "api",
                   model: Annotated[str | None, Query(
                       description="A trained model (ease, ials): roll back its run "
                                   "instead of the version.")] = None) -> dict:
    """Serve again the version (or ``model``'s run) that served before the last
    promote."""
    if model is not None:
        try:
            number = await run_in_threadpool(context.wiring.trained_runs().rollback, model,
                                             author)
        except RunError as error:
            raise HTTPException(409, detail=str(error)) from None
        return {"serving": None if number is None else f"{model}@{number}"}
    try:
        restored = await run_in_threadpool(_registry(context).rollback, author)
    except VersionError as error:
        raise HTTPException(409, detail=str(error)) from None
    return {"serving": restored}


@router.get("/runs")
def trained_runs(context: ContextDep) -> dict[str, list[dict]]:
    """The runs of each trained model (``streamrec trainer``), oldest first, with their
    lineage and offline metrics; ``serving`` marks the one that serves."""
    runs = context.wiring.trained_runs()
    serving = runs.serving()
    return {model: [{**asdict(run), "name": run.name,
                     "serving": serving.get(model) == run.number}
                    for run in runs.runs(model)] for model in BATCH_MODELS}


@router.get("/log")
def serving_log(context: ContextDep) -> list[dict]:
    """Every promote and rollback, newest first."""
    return _registry(context).log()
