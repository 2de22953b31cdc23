"""Builds the FastAPI app; the lifespan owns the Redis and Kafka clients.

``streamrec api`` serves ``create_app()`` through uvicorn's factory: nothing reads the
settings or builds anything when this module is imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.routing import Mount

import streamrec
from api.apps import AppContext, AppContexts
from api.deps import APP_PREFIX, DEFAULT_APP, THE_APP, UNKNOWN_APP
from api.errors import http_error, validation_failed
from api.limits import BodyLimit
from api.producer import EventProducer
from api.quotas import QUOTA_RESPONSES
from api.routers import (
    admin,
    apps,
    browse,
    catalog,
    console,
    docs,
    event_types,
    events,
    filter_checks,
    filters,
    health,
    metrics,
    recommendations,
    version_switch,
)
from api.security import READ, AppKeys
from api.shedding import LoadShedding
from streamrec import collector, logs, shutdown
from streamrec.apps import DEFAULT, App
from streamrec.settings import Settings, get_settings
from streamrec.wiring import Wiring

log = logging.getLogger(__name__)


class RequestTimer:
    """Times and counts each request (by status) into the metrics hub, by route template.
    Pure ASGI: the ``@app.middleware("http")`` form costs a task and a stream per request."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers if the app raises before it starts one

        async def noting_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            route = scope.get("route")
            hub = getattr(scope["app"].state, "metrics", None)
            if hub is not None and not scope["path"].startswith("/metrics"):
                if route is None:  # no route: the path is whatever the client sent
                    hub.count("unmatched", status)
                else:
                    path = route.path
                    if "app" in scope.get("path_params", ()) and "{app}" not in path:
                        path = APP_PREFIX + path  # a mounted app route's own is the bare one
                    hub.observe(path, time.perf_counter() - started, status)


def _default_app(wiring: Wiring) -> App:
    try:
        return wiring.apps().require(DEFAULT)
    except Exception:  # noqa: BLE001 - Redis away at start: no quotas until it answers
        return App(DEFAULT, created_at=0.0)


def served_app() -> FastAPI:
    """The app as ``streamrec api`` serves it, in processes of its own: there the
    collector is settled once the app is built (:mod:`streamrec.collector`), which
    an app made inside another program (a test's client) must not do to its host."""
    return create_app(settle_garbage=True)


def create_app(settings: Settings | None = None, settle_garbage: bool = False) -> FastAPI:
    logs.install()  # each API process, however uvicorn started it
    settings = settings or get_settings()
    api_keys = settings.load_api_keys()  # refuses to build an unsafe production app

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Inside uvicorn's signal handling: its graceful stop, then an exit within a bound.
        shutdown.bound_signals()
        # A wrong Redis password or an untrusted certificate stops the API here, saying
        # why; a Redis that is down is retried. Kafka's are checked by `streamrec api`
        # before uvicorn starts: a probe connection made on this event loop, before the
        # producer's, kept the producer from reconnecting after a broker restart
        # (tests/integration/test_kafka_restart.py).
        wiring = Wiring.connect(settings, "API")
        producer = EventProducer(settings, settings.produce_timeout_seconds,
                                 settings.impression_buffer)
        producer.start()
        app.state.settings = settings
        app.state.api_keys = api_keys
        app.state.app_keys = AppKeys(wiring.apps(), settings.app_key_cache_seconds)
        app.state.producer = producer
        # The default app's registry entry holds only what was set over HTTP (its quotas).
        registered = await asyncio.to_thread(_default_app, wiring)
        default = AppContext(registered, wiring.for_app(DEFAULT, registered), producer)
        # Read before serving when Redis answers, so POST /events need not wait for the
        # refresher; a Redis that is away leaves it to the refresher (503 meanwhile).
        with contextlib.suppress(Exception):
            await asyncio.to_thread(default.event_types.refresh)
        default.start_refreshing()
        contexts = AppContexts(wiring, producer, default)
        contexts.start()
        app.state.apps = contexts
        # The default app's parts, where they were before apps (tests and tools read them).
        app.state.versions = default.versions
        app.state.event_types = default.event_types
        app.state.allocation = default.allocation
        app.state.fallback = default.fallback
        app.state.filters = default.filters
        app.state.metrics = default.metrics  # request latency of every app's routes, too
        # Where GET /recommendations waits on Redis, so the event loop never does (a Redis
        # that hangs would stall every route, /healthz too). Few threads: the work is
        # Python under one GIL, and each more thread cost CPU per request (measured).
        # Shared by every app: the GIL is too.
        serving_threads = ThreadPoolExecutor(settings.serving_threads,
                                             thread_name_prefix="serving")
        app.state.serving_threads = serving_threads
        if settle_garbage:
            collector.settle()
        try:
            yield
        finally:
            await contexts.close()
            serving_threads.shutdown(wait=False, cancel_futures=True)
            await default.metrics.close()
            if getattr(app.state, "version_kafka", None) is not None:  # GET /admin/versions
                await app.state.version_kafka.close()
            await producer.stop()
            wiring.close()

    app = FastAPI(
        title="streamrec",
        version=streamrec.__version__,
        description="Real-time recommendations from a Kafka event stream.",
        lifespan=lifespan,
        # /docs from vendored assets (api/routers/docs.py); ReDoc would load from a CDN.
        docs_url=None, redoc_url=None,
    )
    # Every app's routes: bare for the default app (as before apps), and under /apps/{app}
    # for any app, resolved by api.deps from the path's app. FastAPI tries routes in turn,
    # 3-7 us each: an app's are served by a sub-application mounted at /apps/{app}, tried
    # first (one prefix test for every other path), which tries its own routes only
    # (found after the bare ones, they took 300-400 us to match); the bare ones follow in
    # their order of before.
    app_routes = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app_routes.state = app.state  # what the lifespan builds, for both
    app.router.routes.insert(0, Mount(APP_PREFIX, app=app_routes))
    served = (recommendations, events, catalog, admin, filters, event_types, metrics,
              browse, filter_checks, version_switch)
    for module in served:
        app.include_router(module.router, dependencies=[DEFAULT_APP])
    for router in (apps.router, metrics.pages, health.router, docs.router, console.router):
        app.include_router(router)
    for module in served:
        # An app's metrics take a key (the default app's stay open to scrapers); the key
        # is checked before the app is looked up, so another app's key learns nothing.
        guard = [READ] if module is metrics else []
        app_routes.include_router(module.router, dependencies=[*guard, THE_APP])
        # The same routes in the app's own table: its OpenAPI spec and route listings
        # show them (the mount answers first, so they are never matched).
        app.include_router(module.router, prefix=APP_PREFIX, dependencies=[*guard, THE_APP],
                           responses={**UNKNOWN_APP, **QUOTA_RESPONSES})
    for handled in (app, app_routes):
        handled.add_exception_handler(RequestValidationError, validation_failed)
        handled.add_exception_handler(HTTPException, http_error)

    app.add_middleware(RequestTimer)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(LoadShedding, max_in_flight=settings.max_requests_in_flight,
                     deadline_seconds=settings.request_deadline_seconds,
                     retry_after_seconds=settings.retry_after_seconds)
    return app
