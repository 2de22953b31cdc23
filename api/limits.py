"""The request body: its size limit, how it is parsed, and the answers every route with a
body may give.

Pure ASGI rather than FastAPI's own ``max_body_size``: that one answers in plain text on
one path and in JSON on another, and neither names the limit; this answers the same JSON
shape as every other error, so the OpenAPI spec can document it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

BODY_RESPONSES: dict[int | str, dict] = {
    400: {"description": "The body is not JSON text (for example not UTF-8, or nested too "
                         "deeply to parse)"},
    413: {"description": "The body is larger than max_body_bytes"},
    415: {"description": "The body is not sent as JSON (Content-Type: application/json)"},
}


class BodyTooLarge(HTTPException):
    """Raised while the body streams in; FastAPI lets an ``HTTPException`` through."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, detail=f"body: larger than the limit of {limit} bytes")


class BodyLimit:
    """Answers 413 to a request body over ``limit`` bytes before anything parses it: as
    soon as the application asks for the body when its Content-Length says so (not before:
    a route checks the key first), else as soon as the bytes received pass it (a chunked
    body has no Content-Length)."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        too_large = declared.isdigit() and int(declared) > self.limit
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            if too_large:
                raise BodyTooLarge(self.limit)
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
        except BodyTooLarge as error:
            # Read outside FastAPI's handlers (which answer it themselves).
            if started:
                raise
            await JSONResponse({"detail": error.detail}, error.status_code)(scope, receive,
                                                                           send)


_JSON_TYPE = re.compile(r"^application/([^;\s]*\+)?json\s*(;|$)", re.IGNORECASE)
# Only an escape can put a lone surrogate into a parsed string (raw surrogate bytes are
# not UTF-8), so the structure is searched only when the text holds one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


async def read_json(request: Request) -> None:
    """Parse a JSON body before FastAPI does, so that what FastAPI would answer with a
    bare 400 or a 500 gets a 4xx that names the body; FastAPI then finds it parsed.

    - not UTF-8 text, or nested too deeply to parse: **400** ``body: ...``;
    - a string or key holding a lone surrogate (``"\\udfff"``: valid JSON, but no
      character, and no UTF-8 encoder takes it): **422** naming where;
    - broken JSON is left to FastAPI: **422** at ``body`` with the position;
    - a body sent as anything but JSON (curl's ``-d`` says form data unless told):
      **415** naming the content type expected and the one sent.
    """
    content_type = request.headers.get("content-type")
    if content_type is not None and not _JSON_TYPE.match(content_type):
        if await request.body():  # FastAPI would hand the handler raw bytes: a puzzle
            sent = printable(content_type[:100])
            raise HTTPException(415, detail=f"body: expected Content-Type: application/json, "
                                             f"got {sent}")
        return
    body = await request.body()
    if content_type is None or not body:
        return
    try:
        document = await request.json()  # Starlette keeps it for FastAPI
    except json.JSONDecodeError:
        return
    except UnicodeDecodeError as error:
        raise HTTPException(400, detail=f"body: not UTF-8 text (byte {error.start})") from None
    except RecursionError:
        raise HTTPException(400, detail="body: JSON nested too deeply to parse") from None
    if _SURROGATE_ESCAPE.search(body):
        where = lone_surrogate(document)
        if where is not None:
            location, text = where
            raise RequestValidationError([{
                "type": "string_unicode", "loc": ("body", *location), "input": text,
                "msg": "holds a lone surrogate (an escape such as \\udfff that is no "
                       "character)"}])


def encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def lone_surrogate(value: Any, where: tuple = ()) -> tuple[tuple, str] | None:
    """Where in a parsed JSON document a string or key holds a lone surrogate, and that
    string made printable; None when nowhere.

    >>> lone_surrogate({"a": ["ok", "x\\udfff"]})
    (('a', 1), 'x\\\\udfff')
    """
    if isinstance(value, str):
        return None if encodable(value) else (where, printable(value))
    if isinstance(value, dict):
        for key, item in value.items():
            if not encodable(key):
                return where, printable(key)
            found = lone_surrogate(item, (*where, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for position, item in enumerate(value):
            found = lone_surrogate(item, (*where, position))
            if found is not None:
                return found
    return None


def printable(text: str) -> str:
    """``text`` with anything UTF-8 cannot carry (lone surrogates) spelled as an escape."""
    return text.encode("utf-8", "backslashreplace").decode()
