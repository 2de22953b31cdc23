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

import streamrec
from api.errors import http_error, validation_failed
from api.event_types import EventTypes
from api.fallback import LastKnownPopular
from api.limits import BodyLimit
from api.metrics_hub import MetricsHub
from api.named_filters import Filters
from api.producer import EventProducer
from api.routers import (
    admin,
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
from api.serving_version import ServingVersions
from api.shedding import LoadShedding
from streamrec import logs, shutdown
from streamrec.settings import Settings, get_settings
from streamrec.wiring import Wiring

log = logging.getLogger(__name__)


async def keep_fresh(what: str, refresh, every: float) -> None:
    """Call ``refresh`` (blocking) every ``every`` seconds, logging one line per outage."""
    failing = False
    while True:
        try:
            await asyncio.to_thread(refresh)
            if failing:
                log.warning("refreshing %s works again", what)
            failing = False
        except Exception as error:  # noqa: BLE001 - a Redis blip must not end the refresher
            if not failing:
                log.warning("refreshing %s failed (%s); retrying every %.2f s",
                            what, error, every)
            failing = True
        await asyncio.sleep(every)


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
                    hub.observe(route.path, time.perf_counter() - started, status)


def create_app(settings: Settings | None = None) -> FastAPI:
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
        engine = wiring.engine()
        versions = ServingVersions(wiring, engine)
        app.state.versions = versions
        shared_types = EventTypes(wiring.event_types(), settings)
        app.state.event_types = shared_types
        # Read before serving when Redis answers, so POST /events need not wait for the
        # refresher; a Redis that is away leaves it to the refresher (503 meanwhile).
        with contextlib.suppress(Exception):
            await asyncio.to_thread(shared_types.refresh)
        app.state.producer = producer
        allocation = wiring.allocation()
        app.state.allocation = allocation
        fallback = LastKnownPopular(engine)
        app.state.fallback = fallback
        named_filters = Filters(wiring.filter_definitions())
        app.state.filters = named_filters
        hub = MetricsHub(settings, wiring.ops(), allocation.feedback, producer, versions)
        app.state.metrics = hub
        # Where GET /recommendations waits on Redis, so the event loop never does (a Redis
        # that hangs would stall every route, /healthz too). Few threads: the work is
        # Python under one GIL, and each more thread cost CPU per request (measured).
        serving_threads = ThreadPoolExecutor(settings.serving_threads,
                                             thread_name_prefix="serving")
        app.state.serving_threads = serving_threads
        refreshers = [
            asyncio.create_task(keep_fresh("item factors", versions.refresh_factors,
                                           settings.factor_refresh_seconds)),
            asyncio.create_task(keep_fresh("serving version", versions.refresh,
                                           settings.version_refresh_seconds)),
            asyncio.create_task(keep_fresh("placements", allocation.refresh,
                                           settings.allocation_refresh_seconds)),
            asyncio.create_task(keep_fresh("filters", named_filters.refresh,
                                           settings.filter_refresh_seconds)),
            asyncio.create_task(keep_fresh("event types", shared_types.refresh,
                                           settings.event_types_refresh_seconds)),
            asyncio.create_task(hub.run()),
            asyncio.create_task(keep_fresh("last known popular items", fallback.refresh, 1.0)),
        ]
        try:
            yield
        finally:
            for refresher in refreshers:
                refresher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await refresher
            serving_threads.shutdown(wait=False, cancel_futures=True)
            await hub.close()
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
    for module in (recommendations, events, catalog, admin, filters, event_types, metrics,
                   browse, filter_checks, version_switch, health, docs, console):
        app.include_router(module.router)
    app.add_exception_handler(RequestValidationError, validation_failed)
    app.add_exception_handler(HTTPException, http_error)

    app.add_middleware(RequestTimer)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(LoadShedding, max_in_flight=settings.max_requests_in_flight,
                     deadline_seconds=settings.request_deadline_seconds,
                     retry_after_seconds=settings.retry_after_seconds)
    return app
