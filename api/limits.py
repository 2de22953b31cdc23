"""The request body limit, and the answers every route with a body may give.

Pure ASGI rather than FastAPI's own ``max_body_size``: that one answers in plain text on
one path and in JSON on another, and neither names the limit; this answers the same JSON
shape as every other error, so the OpenAPI spec can document it.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

BODY_RESPONSES: dict[int | str, dict] = {
    400: {"description": "The body is not JSON text (for example not UTF-8)"},
    413: {"description": "The body is larger than max_body_bytes"},
}


class BodyTooLarge(HTTPException):
    """Raised while the body streams in; FastAPI lets an ``HTTPException`` through."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, detail=f"body: larger than the limit of {limit} bytes")


class BodyLimit:
    """Answers 413 to a request body over ``limit`` bytes before anything parses it: at
    once when its Content-Length says so, else as soon as the bytes received pass it
    (a chunked body has no Content-Length)."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def watched_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            # Read outside FastAPI's handlers (which answer it themselves).
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send) -> None:
        error = BodyTooLarge(self.limit)
        await JSONResponse({"detail": error.detail}, error.status_code)(scope, receive, send)
