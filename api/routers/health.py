from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import EngineDep, ProducerDep, SettingsDep

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


async def _redis_answers(engine, within: float) -> bool:
    # A Redis that hangs would hold the ping for the client's socket timeout: the probe
    # answers "unreachable" within the request deadline instead (the thread ends later).
    try:
        async with asyncio.timeout(within):
            return await asyncio.to_thread(engine.store.ping)
    except TimeoutError:
        return False


@router.get("/readyz", responses={503: {"description": "Kafka or Redis unreachable"}})
async def readyz(engine: EngineDep, producer: ProducerDep, settings: SettingsDep
                 ) -> JSONResponse:
    """Ready when Kafka answers a metadata request and Redis answers PING (each within
    ``request_deadline_seconds``, Kafka within 2 s at most)."""
    redis_ok, kafka_ok = await asyncio.gather(
        _redis_answers(engine, settings.request_deadline_seconds), producer.ready())
    checks = {"redis": "ok" if redis_ok else "unreachable",
              "kafka": "ok" if kafka_ok else "unreachable"}
    return JSONResponse(checks, status_code=200 if redis_ok and kafka_ok else 503)
