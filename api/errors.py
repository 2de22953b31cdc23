"""The 422 answer, safe for inputs JSON cannot carry.

FastAPI's own handler echoes each offending input back; a ``NaN`` or ``Infinity`` sent as a
bare literal then makes the answer itself unencodable, and the client gets a 500 instead of
the 422 that names its field.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats spelled as the literals a client sent.

    >>> json_safe({"input": [float("nan"), float("-inf"), 1.5]})
    {'input': ['NaN', '-Infinity', 1.5]}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


async def validation_failed(request: Request, error: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": json_safe(jsonable_encoder(error.errors()))},
                        status_code=422)
