"""Per-app serving contexts: each app's engine and versions, placements, filters, event
types, fallback list, metrics and quotas, built from ``Wiring.for_app``.

The ``default`` app's context is built when the process starts and refreshed as before
apps existed (each part at its own ``*_refresh_seconds``). Another app's is built on the
first request that names it, then refreshed by one loop every ``app_refresh_seconds``
(one thread hop for all its parts), and closed when the app is deleted or changed (the
registry is re-read every ``app_refresh_seconds``: the next request builds it again with
the new settings) or unused for ``app_idle_seconds``, so an idle app costs no Redis calls.
Its metrics hub collects only once someone reads its metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis
from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError

from api.event_types import EventTypes
from api.fallback import LastKnownPopular
from api.metrics_hub import MetricsHub
from api.named_filters import Filters
from api.producer import AppProducer, EventProducer
from api.quotas import Quota
from api.serving_version import ServingVersions
from streamrec.apps import DEFAULT, App, AppError, AppNotFound, Apps, check_name
from streamrec.wiring import Wiring

log = logging.getLogger(__name__)

_CONTEXT = "streamrec.app_context"  # scope entry: the request's context, resolved once
_ADMITTED = "streamrec.app_admitted"  # scope entry: counted against the app's quota once


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


class AppContext:
    """What one app's routes serve from, in this process."""

    def __init__(self, app: App, wiring: Wiring, producer: EventProducer,
                 lag_from: MetricsHub | None = None) -> None:
        self.name = app.name
        self.app = app
        self.wiring = wiring
        self.settings = wiring.settings
        self.producer = producer
        self.app_producer = AppProducer(producer, self.name)  # sending as this app
        engine = wiring.engine()
        self.versions = ServingVersions(wiring, engine)
        self.event_types = EventTypes(wiring.event_types(), self.settings)
        self.allocation = wiring.allocation()
        self.fallback = LastKnownPopular(engine)
        self.filters = Filters(wiring.filter_definitions())
        self.metrics = MetricsHub(self.settings, wiring.ops(), self.allocation.feedback,
                                  producer, self.versions, lag_from)
        self.use_quotas(app)
        self.last_used = time.monotonic()
        self._tasks: list[asyncio.Task] = []
        self._collecting: asyncio.Task | None = None
        self.closed = False

    def use_quotas(self, app: App) -> None:
        """Take ``app``'s quotas (a changed quota starts a fresh bucket)."""
        self.app = app
        self.requests = Quota(app.name, "requests_per_second", app.quota("requests_per_second"))
        self.events = Quota(app.name, "events_per_second", app.quota("events_per_second"))
        self.max_items = app.quota("max_items")

    def refresh(self) -> None:
        """Every part at once (blocking: run it in a thread)."""
        self.versions.refresh()
        self.versions.refresh_factors()
        self.allocation.refresh()
        self.filters.refresh()
        self.event_types.refresh()
        self.fallback.refresh()

    def start_refreshing(self) -> None:
        settings = self.settings
        if self.name != DEFAULT:
            self._tasks.append(asyncio.create_task(keep_fresh(
                f"app {self.name!r}", self.refresh, settings.app_refresh_seconds)))
            return
        versions = self.versions
        every = [
            ("item factors", versions.refresh_factors, settings.factor_refresh_seconds),
            ("serving version", versions.refresh, settings.version_refresh_seconds),
            ("placements", self.allocation.refresh, settings.allocation_refresh_seconds),
            ("filters", self.filters.refresh, settings.filter_refresh_seconds),
            ("event types", self.event_types.refresh, settings.event_types_refresh_seconds),
            ("last known popular items", self.fallback.refresh, 1.0)]
        self._tasks += [asyncio.create_task(keep_fresh(what, refresh, period))
                        for what, refresh, period in every]
        self.collect_metrics()

    def collect_metrics(self) -> MetricsHub:
        """The app's metrics hub, collecting from now on (an app's starts when first read)."""
        if self._collecting is None and not self.closed:
            self._collecting = asyncio.create_task(self.metrics.run())
            self._tasks.append(self._collecting)
        return self.metrics

    def idle(self, now: float, longest: float) -> bool:
        return self.metrics.stream_clients == 0 and now - self.last_used > longest

    async def close(self) -> None:
        self.closed = True
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.name != DEFAULT:  # the default hub's Kafka clients are closed by the lifespan
            await self.metrics.close()


class AppContexts:
    """The contexts of the apps this process has served, by name."""

    def __init__(self, base: Wiring, producer: EventProducer, default: AppContext) -> None:
        self.base = base
        self.registry: Apps = base.apps()
        self.producer = producer
        self.contexts: dict[str, AppContext] = {DEFAULT: default}
        self._building: dict[str, asyncio.Future] = {}
        self._watching: asyncio.Task | None = None
        self.background: set[asyncio.Future] = set()  # sweeps of deleted apps

    @property
    def default(self) -> AppContext:
        return self.contexts[DEFAULT]

    def start(self) -> None:
        self._watching = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        failing = False
        while True:
            try:
                await self.follow_registry()
                failing = False
            except Exception as error:  # noqa: BLE001 - a Redis blip must not end it
                if not failing:
                    log.warning("reading the app registry failed (%s); retrying", error)
                failing = True
            await asyncio.sleep(self.base.settings.app_refresh_seconds)

    async def of(self, request: Request) -> AppContext:
        """The context of the request's app (path parameter ``app``; none: ``default``);
        404 naming the app when it does not exist."""
        found = request.scope.get(_CONTEXT)
        if found is None:
            found = await self.get(request.path_params.get("app", DEFAULT))
            found.last_used = time.monotonic()
            request.scope[_CONTEXT] = found
        return found

    async def admit(self, request: Request) -> AppContext:
        """The request's app context, once it is counted against the app's
        ``requests_per_second`` (429 over it); once per request, however often asked."""
        context = await self.of(request)
        if not request.scope.get(_ADMITTED):
            request.scope[_ADMITTED] = True
            context.requests.admit()
        return context

    async def get(self, name: str) -> AppContext:
        context = self.contexts.get(name)
        if context is not None:
            return context
        try:
            check_name(name)
        except AppError as error:  # shaped as FastAPI's own 422 for a path parameter
            raise RequestValidationError([{
                "type": "string_pattern_mismatch", "loc": ("path", "app"), "input": name,
                "msg": str(error).removeprefix("app: ")}]) from None
        building = self._building.get(name)
        if building is None:  # one build per app, however many requests wait for it
            building = asyncio.ensure_future(self._build(name))
            self._building[name] = building
            building.add_done_callback(lambda _: self._building.pop(name, None))
        try:
            return await asyncio.shield(building)
        except AppNotFound as error:
            raise HTTPException(404, detail=f"app: {error}; create it with POST /admin/apps"
                                ) from None
        except redis.RedisError as error:  # asked again by the next request
            raise HTTPException(503, detail=f"app: {name!r} cannot be read, the state store "
                                            f"is unreachable: {error}", headers={
                "Retry-After": str(self.base.settings.retry_after_seconds)}) from error

    async def _build(self, name: str) -> AppContext:
        app = await asyncio.to_thread(self.registry.require, name)
        context = AppContext(app, self.base.for_app(name, app), self.producer,
                             lag_from=self.default.metrics)
        # Read before serving, as the default's are at start: a first list from an empty
        # engine would differ from the next.
        await asyncio.to_thread(context.refresh)
        context.start_refreshing()
        self.contexts[name] = context
        log.info("serving app %r", name)
        return context

    async def follow_registry(self) -> None:
        """Close the contexts of deleted, changed or idle apps; apply quota changes."""
        registered = await asyncio.to_thread(self.registry.all)
        now, idle = time.monotonic(), self.base.settings.app_idle_seconds
        for name, context in list(self.contexts.items()):
            app = registered.get(name)
            if name == DEFAULT:
                if app is not None and app.settings != context.app.settings:
                    context.use_quotas(app)  # its other settings come from STREAMREC_*
                continue
            if app is None or app.settings != context.app.settings or context.idle(now, idle):
                await self.drop(name)

    async def drop(self, name: str) -> None:
        """Stop serving ``name`` from this process's context (the next request rebuilds
        it, or gets 404 when the app is gone)."""
        context = self.contexts.pop(name, None)
        if context is not None and name != DEFAULT:
            await context.close()
            log.info("closed the context of app %r", name)

    async def close(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
        for task in list(self.background):
            task.cancel()
        for name in list(self.contexts):
            if name != DEFAULT:
                await self.drop(name)
        await self.default.close()
