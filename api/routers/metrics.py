"""Metrics for people and machines: Prometheus, a Server-Sent Events stream, a dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.metrics import MetricsHub

router = APIRouter(tags=["metrics"])
STATIC = Path(__file__).resolve().parent.parent / "static"


async def _hub(request: Request) -> MetricsHub:
    return request.app.state.metrics


HubDep = Annotated[MetricsHub, Depends(_hub)]


@router.get("/metrics", response_class=Response)
def prometheus(hub: HubDep) -> Response:
    """Prometheus exposition: request latency histogram, system and per-variant gauges."""
    return Response(generate_latest(hub.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/metrics/snapshot")
def snapshot(hub: HubDep) -> dict:
    """The latest snapshot (JSON), refreshed about once a second."""
    return hub.latest


@router.get("/metrics/stream", response_class=StreamingResponse)
async def stream(hub: HubDep, request: Request) -> StreamingResponse:
    """Server-Sent Events: one ``snapshot`` event about once a second."""

    async def events():
        if hub.latest:
            yield b"event: snapshot\ndata: " + orjson.dumps(hub.latest) + b"\n\n"
        while not await request.is_disconnected():
            latest = await hub.next_snapshot()
            yield b"event: snapshot\ndata: " + orjson.dumps(latest) + b"\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/dashboard", response_class=FileResponse, include_in_schema=False)
def dashboard() -> FileResponse:
    return FileResponse(STATIC / "dashboard.html", media_type="text/html")


@router.get("/static/{name}", include_in_schema=False)
def static(name: str) -> FileResponse:
    allowed = {"uPlot.iife.min.js": "text/javascript", "uPlot.min.css": "text/css",
               "dashboard.js": "text/javascript"}
    if name not in allowed:
        return Response(status_code=404)
    return FileResponse(STATIC / name, media_type=allowed[name])
