"""``/console``: the web UI for the people who run the recommenders (apps, catalog, users,
placements, filters, versions, live metrics), one page of plain HTML, CSS and JavaScript
served from ``api/static``; no build step, nothing from another origin.

The page holds no secret: the API key is typed into it once, kept in the tab's
``sessionStorage`` and sent as ``X-API-Key`` by every call the page makes (never in a
URL). Its Content-Security-Policy lets it run only its own files.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from api.routers.metrics import PAGE_HEADERS, STATIC

router = APIRouter(include_in_schema=False)
ASSET_TYPES = {"console.js": "text/javascript", "console.css": "text/css"}


@router.get("/console", response_class=FileResponse)
def console() -> FileResponse:
    return FileResponse(STATIC / "console.html", media_type="text/html", headers=PAGE_HEADERS)


@router.get("/console/static/{name}")
def asset(name: str) -> Response:
    if name not in ASSET_TYPES:  # a fixed list: no path is ever built from the request
        return Response(status_code=404, headers=PAGE_HEADERS)
    return FileResponse(STATIC / name, media_type=ASSET_TYPES[name], headers=PAGE_HEADERS)
