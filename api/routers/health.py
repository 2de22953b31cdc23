from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import EngineDep, ProducerDep

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Kafka or Redis unreachable"}})
async def readyz(engine: EngineDep, producer: ProducerDep) -> JSONResponse:
    """Ready when Kafka answers a metadata request and Redis answers PING."""
    redis_ok, kafka_ok = await asyncio.gather(asyncio.to_thread(engine.store.ping),
                                              producer.ready())
    checks = {"redis": "ok" if redis_ok else "unreachable",
              "kafka": "ok" if kafka_ok else "unreachable"}
    return JSONResponse(checks, status_code=200 if redis_ok and kafka_ok else 503)
