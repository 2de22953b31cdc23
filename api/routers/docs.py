"""``/docs``: Swagger UI from files the API serves itself (``api/static/swagger-ui``), as the
dashboard serves its uPlot, so the page works where the internet is out of reach."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

ASSETS = Path(__file__).resolve().parents[1] / "static" / "swagger-ui"
ASSET_TYPES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
               "favicon-32x32.png": "image/png"}
ASSET_PATH = "/docs/assets"

router = APIRouter(include_in_schema=False)


@router.get("/docs")
def docs(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=root + request.app.openapi_url, title=f"{request.app.title} - API",
        swagger_js_url=f"{root}{ASSET_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSET_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSET_PATH}/favicon-32x32.png",
        # Swagger UI would send the schema to validator.swagger.io for its badge.
        swagger_ui_parameters={"validatorUrl": None})


@router.get(ASSET_PATH + "/{name}")
def asset(name: str) -> Response:
    if name not in ASSET_TYPES:  # a fixed list: no path is ever built from the request
        return Response(status_code=404)
    # The files change only with an upgrade of the package, under the same names.
    return FileResponse(ASSETS / name, media_type=ASSET_TYPES[name],
                        headers={"Cache-Control": "no-cache"})
