"""Builds the FastAPI app; the lifespan owns the Redis and Kafka clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

import streamrec
from api.producer import EventProducer
from api.routers import catalog, events, health, recommendations
from recommender.engine import Engine
from streamrec.redis_store import RedisStore
from streamrec.settings import Settings, get_settings

log = logging.getLogger(__name__)


async def refresh_factors(engine: Engine, every: float) -> None:
    """Keep the in-memory item factors within ``every`` seconds of Redis."""
    failing = False
    while True:
        try:
            await asyncio.to_thread(engine.refresh)
            if failing:
                log.warning("refreshing item factors works again")
            failing = False
        except Exception as error:  # noqa: BLE001 - a Redis blip must not end the refresher
            if not failing:
                log.warning("refreshing item factors failed (%s); retrying every %.2f s",
                            error, every)
            failing = True
        await asyncio.sleep(every)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        store = RedisStore.from_url(settings.redis_url, settings.redis_prefix)
        producer = EventProducer(settings.kafka_bootstrap, settings.produce_timeout_seconds)
        producer.start()
        app.state.settings = settings
        engine = Engine(store, settings.engine_config())
        app.state.engine = engine
        app.state.weights = settings.weights()
        app.state.producer = producer
        refresher = asyncio.create_task(refresh_factors(engine, settings.factor_refresh_seconds))
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await producer.stop()
            store.client.close()

    app = FastAPI(
        title="streamrec",
        version=streamrec.__version__,
        description="Real-time recommendations from a Kafka event stream.",
        lifespan=lifespan,
    )
    for module in (recommendations, events, catalog, health):
        app.include_router(module.router)
    return app


app = create_app()
