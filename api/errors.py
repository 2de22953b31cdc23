"""Error answers that can always be sent, whatever the input they name.

FastAPI's own handlers echo the offending input back; a ``NaN`` or ``Infinity`` sent as a
bare literal, or a string holding a lone surrogate, then makes the answer itself
unencodable, and the client got a 500 instead of the 4xx that names its field.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from api.limits import encodable, printable
from schemas import errors

ECHO_DEPTH = 8  # an offending input is echoed this many levels deep, then as "..."


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` with non-finite floats spelled as the literals a client sent, lone
    surrogates as escapes, and containers deeper than ``ECHO_DEPTH`` as ``"..."`` (an
    input nested 500 levels deep otherwise exhausted the recursion of the encoder).

    >>> json_safe({"input": [float("nan"), float("-inf"), 1.5, "a\\udfff"]})
    {'input': ['NaN', '-Infinity', 1.5, 'a\\\\udfff']}
    >>> json_safe([[[1]]], depth=ECHO_DEPTH - 1)
    [['...']]
    """
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, str):
        return value if encodable(value) else printable(value)
    if isinstance(value, dict | list | tuple) and depth > ECHO_DEPTH:
        return "..."
    if isinstance(value, dict):
        return {json_safe(key): json_safe(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item, depth + 1) for item in value]
    return value


def readable(problem: dict) -> dict:
    """One 422 entry as the README shows it: ``loc`` as FastAPI gives it, ``field`` the same
    place as one path (``body[3].event_type``), ``msg`` without pydantic's ``Value error, ``
    prefix, ``input`` what was sent (``ctx`` and ``url`` repeat the message: left out).

    >>> entry = readable({"type": "value_error", "loc": ("body", 1, "event_type"),
    ...                   "input": "x", "msg": "Value error, no",
    ...                   "ctx": {"error": ValueError("no")}})
    >>> entry["loc"], entry["field"], entry["msg"], "ctx" in entry
    (['body', 1, 'event_type'], 'body[1].event_type', 'no', False)
    """
    entry = {"type": problem["type"], "loc": list(problem["loc"]),
             "field": errors.field(problem["loc"]), "msg": errors.message(problem["msg"])}
    if "input" in problem:
        entry["input"] = problem["input"]
    return entry


async def validation_failed(request: Request, error: RequestValidationError) -> JSONResponse:
    detail = [readable(problem) for problem in error.errors()]
    return JSONResponse({"detail": jsonable_encoder(json_safe(detail))}, status_code=422)


async def http_error(request: Request, error: HTTPException) -> JSONResponse:
    return JSONResponse({"detail": json_safe(error.detail)}, status_code=error.status_code,
                        headers=error.headers)
