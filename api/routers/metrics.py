"""Metrics for people and machines: Prometheus, a Server-Sent Events stream, a dashboard."""

from __future__ import annotations

from pathlib import Path

import orjson
from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import ReadMetricsDep, SettingsDep
from api.metrics_hub import MetricsHub

router = APIRouter(tags=["metrics"])
# The default app's live page and its files (an app's metrics are its routes' JSON).
pages = APIRouter(include_in_schema=False)
STATIC = Path(__file__).resolve().parent.parent / "static"


@router.get("/metrics", response_class=Response)
def prometheus(hub: ReadMetricsDep) -> Response:
    """Prometheus exposition: request latency histogram, system and per-variant gauges."""
    return Response(generate_latest(hub.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/metrics/snapshot")
def snapshot(hub: ReadMetricsDep) -> dict:
    """The latest snapshot (JSON), refreshed about once a second."""
    return hub.latest


class _StreamResponse(StreamingResponse):
    """Gives the hub's stream slot back however the stream ends (client gone, shutdown)."""

    def __init__(self, hub: MetricsHub, events) -> None:
        super().__init__(events, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.hub = hub

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.hub.stream_clients -= 1


@router.get("/metrics/stream", response_class=StreamingResponse, responses={
    503: {"description": "As many stream clients as max_stream_clients are connected"}})
async def stream(hub: ReadMetricsDep, settings: SettingsDep) -> StreamingResponse:
    """Server-Sent Events: one ``snapshot`` event about once a second."""
    if hub.stream_clients >= settings.max_stream_clients:
        raise HTTPException(503, detail=f"stream: {settings.max_stream_clients} clients are "
                                        "connected already (max_stream_clients)",
                            headers={"Retry-After": str(settings.retry_after_seconds)})

    async def events():
        # Starlette cancels this generator when the client leaves; nothing here holds
        # anything another client needs.
        if hub.latest:
            yield b"event: snapshot\ndata: " + orjson.dumps(hub.latest) + b"\n\n"
        while True:
            latest = await hub.next_snapshot()
            yield b"event: snapshot\ndata: " + orjson.dumps(latest) + b"\n\n"

    hub.stream_clients += 1
    return _StreamResponse(hub, events())


# The dashboard runs only its own files: no inline script or style, no other origin, no
# framing. A name that slipped past every check could at worst show as text.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
STATIC_TYPES = {"uPlot.iife.min.js": "text/javascript", "uPlot.min.css": "text/css",
                "dashboard.js": "text/javascript", "dashboard.css": "text/css",
                "live-metrics.js": "text/javascript"}


@pages.get("/dashboard", response_class=FileResponse, include_in_schema=False)
def dashboard() -> FileResponse:
    return FileResponse(STATIC / "dashboard.html", media_type="text/html",
                        headers=PAGE_HEADERS)


@pages.get("/static/{name}", include_in_schema=False)
def static(name: str) -> Response:
    if name not in STATIC_TYPES:
        return Response(status_code=404, headers=PAGE_HEADERS)
    return FileResponse(STATIC / name, media_type=STATIC_TYPES[name], headers=PAGE_HEADERS)
