"""Apps: isolated recommenders on this deployment, created, changed and deleted at run
time (``streamrec/apps.py``). Creating and deleting takes a ``platform`` key; an app's own
admin key may read its app and rotate its keys."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from api.limits import BODY_RESPONSES
from api.producer import KafkaUnavailable
from api.routing import PlatformRoute
from api.security import ADMIN, KEY_RESPONSES, PLATFORM_ONLY
from api.shedding import SHED_RESPONSES
from streamrec.apps import (
    DEFAULT,
    NAME,
    QUOTAS,
    ROLES,
    App,
    AppError,
    AppNotFound,
    Apps,
    check_settings,
    tombstones_of,
)
from streamrec.apps import delete_app as delete_everything
from streamrec.wiring import Wiring

log = logging.getLogger(__name__)

router = APIRouter(route_class=PlatformRoute, prefix="/admin/apps", tags=["apps"],
                   responses={**KEY_RESPONSES, **SHED_RESPONSES})

AppName = Annotated[str, Path(min_length=1, max_length=32, pattern=NAME.pattern)]
UNKNOWN = {404: {"description": "No such app"}}
# Tombstones per produce call: bounded, so an app of a million items is not one request.
TOMBSTONES_PER_SEND = 1000
KAFKA_RECORDS = ("its events in the shared topics cannot be deleted one by one: workers "
                 "drop (and count) those still on the topics from now on, and they age out "
                 "with each topic's retention")


class NewApp(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="1-32 of a-z, 0-9 and '-', starting with a letter.")
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides: model hyperparameters, default_model, event_weights, "
                    f"attribution_window_seconds, and the quotas {', '.join(QUOTAS)}.")


class AppSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    settings: dict[str, Any] = Field(description="Merged into the app's; a null quota "
                                                 "removes it.")


class Rotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str | None = Field(default=None, description=f"One of {list(ROLES)}; none: all.")


def _registry(request: Request) -> Apps:
    return request.app.state.apps.registry


def _described(app: App, registry: Apps) -> dict[str, Any]:
    return {"name": app.name, "settings": app.settings, "created_at": app.created_at,
            "keys": {role: {"created_at": made}
                     for role, made in sorted(registry.key_roles(app.name).items())}}


def _refused(error: AppError) -> HTTPException:
    if isinstance(error, AppNotFound):
        return HTTPException(404, detail=f"app: {error}")
    if "exists already" in str(error):
        return HTTPException(409, detail=str(error))
    return HTTPException(422, detail=str(error))


def _create(registry: Apps, base: Wiring, name: str, settings: dict[str, Any]
            ) -> tuple[App, dict[str, str]]:
    app, made = registry.create(name, settings)
    # The app's event types, from its event_weights (else the deployment's): the API and
    # the worker would seed them on first read; seeded now, GET shows them at once.
    base.for_app(name, app).read_event_types()()
    return app, made


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[PLATFORM_ONLY],
             responses={**BODY_RESPONSES, 409: {"description": "The app exists already"},
                        422: {"description": "A wrong name or setting, named"}})
async def create_app(body: NewApp, request: Request) -> dict[str, Any]:
    """Create an app: its own catalog, events, state, placements, filters, versions,
    metrics and keys, served at once under ``/apps/{name}/...`` by every API process. The
    answer holds its keys, one per role: they are shown this once."""
    registry = _registry(request)
    try:
        app, made = await run_in_threadpool(_create, registry, request.app.state.apps.base,
                                            body.name, body.settings)
    except AppError as error:
        raise _refused(error) from None
    return {**await run_in_threadpool(_described, app, registry), "api_keys": made,
            "routes": f"/apps/{app.name}/"}


@router.get("", dependencies=[PLATFORM_ONLY])
async def list_apps(request: Request) -> list[dict[str, Any]]:
    """Every app (``default`` first) with its settings and the roles that have keys."""
    registry = _registry(request)

    def described() -> list[dict[str, Any]]:
        return [_described(app, registry) for app in registry.all().values()]

    return await run_in_threadpool(described)


@router.get("/{app}", dependencies=[ADMIN], responses=UNKNOWN)
async def get_app(app: AppName, request: Request) -> dict[str, Any]:
    """An app's settings and the roles that have keys (with when each was made); never
    the keys. The app's own admin key may read it."""
    registry = _registry(request)
    try:
        found = await run_in_threadpool(registry.require, app)
    except AppError as error:
        raise _refused(error) from None
    return await run_in_threadpool(_described, found, registry)


@router.patch("/{app}", dependencies=[PLATFORM_ONLY], responses={
    **UNKNOWN, **BODY_RESPONSES, 422: {"description": "A wrong setting, named"}})
async def change_app(app: AppName, body: AppSettings, request: Request) -> dict[str, Any]:
    """Change an app's settings. This process serves with them at once, the others within
    ``STREAMREC_APP_REFRESH_SECONDS``. ``event_weights`` adds or changes event types of the
    app (``/apps/{app}/admin/event-types`` removes one). The ``default`` app takes only
    quotas here: its other settings are the ``STREAMREC_*`` variables."""
    registry, contexts = _registry(request), request.app.state.apps
    try:
        if app == DEFAULT:
            for name in body.settings:
                if name not in QUOTAS:
                    raise AppError(f"settings.{name}: the default app's settings are the "
                                   "STREAMREC_* variables; only quotas may be set here")
        checked = check_settings(body.settings)
        changed = await run_in_threadpool(registry.update, app, checked)
    except AppError as error:
        raise _refused(error) from None
    if "event_weights" in checked:
        types = contexts.base.for_app(app, changed).event_types()
        for name, weight in checked["event_weights"].items():
            await run_in_threadpool(types.put, name, weight)
    await contexts.follow_registry()  # this process at once
    return await run_in_threadpool(_described, changed, registry)


@router.post("/{app}/keys", dependencies=[ADMIN], responses={
    **UNKNOWN, **BODY_RESPONSES, 422: {"description": "Not a role"}})
async def rotate_keys(app: AppName, body: Rotation, request: Request) -> dict[str, Any]:
    """New keys for the app, for every role or ``role``: the previous keys of those roles
    stop working at once on this process, within ``STREAMREC_APP_KEY_CACHE_SECONDS`` on
    the others. The app's own admin key may rotate its keys (its own included). The new
    keys are shown this once."""
    registry = _registry(request)
    roles = ROLES if body.role is None else (body.role,)
    try:
        made = await run_in_threadpool(registry.rotate_keys, app, roles)
    except AppError as error:
        raise _refused(error) from None
    request.app.state.app_keys.forget()
    return {"name": app, "api_keys": made}


async def _sweep_again(registry: Apps, name: str, after: float) -> None:
    """Remove what a process still serving or applying the app wrote after the first
    sweep (another API process's refresher re-seeds its event types; a worker's batch in
    flight), once every process has read the app's deletion."""
    await asyncio.sleep(after)
    try:
        late = await asyncio.to_thread(registry.remove_state, name)
    except Exception as error:  # noqa: BLE001 - logged; the answer was given already
        log.warning("the second sweep of deleted app %r failed: %s", name, error)
        return
    if late:
        log.info("removed %d Redis keys of deleted app %r written after it was deleted",
                 late, name)


@router.delete("/{app}", dependencies=[PLATFORM_ONLY], responses={
    **UNKNOWN, 422: {"description": "The default app cannot be deleted"}})
async def delete_app(app: AppName, request: Request) -> dict[str, Any]:
    """Delete an app: its registration and keys at once (its routes answer 404, its keys
    401), then every Redis key of its state (catalog, events' state, versions,
    placements, filters, metrics). Answers what was removed, and what happens to its
    Kafka records."""
    registry, contexts = _registry(request), request.app.state.apps
    try:
        # Unregistered, marked deleted (workers drop its records still on the topics),
        # then its state unlinked: as `streamrec apps delete` does.
        done = await run_in_threadpool(delete_everything, registry, app)
    except AppError as error:
        raise _refused(error) from None
    request.app.state.app_keys.forget()
    await contexts.drop(app)
    producer, settings = request.app.state.producer, contexts.base.settings
    tombstones = tombstones_of(settings, app, done)
    try:
        for topic, records in tombstones:
            for start in range(0, len(records), TOMBSTONES_PER_SEND):
                await producer.send_all(topic, records[start:start + TOMBSTONES_PER_SEND],
                                        app=app)
        catalog_records = f"{sum(len(r) for _, r in tombstones)} tombstoned"
    except KafkaUnavailable as error:
        catalog_records = (f"not all tombstoned ({error}): the rest stay on the compacted "
                           "topics, and workers drop them")
    again = 2 * contexts.base.settings.app_refresh_seconds + 1.0
    task = asyncio.ensure_future(_sweep_again(registry, app, again))
    contexts.background.add(task)
    task.add_done_callback(contexts.background.discard)
    return {"name": app, "deleted": True, "redis_keys_removed": done["redis_keys_removed"],
            "api_keys_revoked": done["keys_revoked"],
            "kafka_records": KAFKA_RECORDS, "catalog_records": catalog_records,
            "second_sweep_seconds": again}
