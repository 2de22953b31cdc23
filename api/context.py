"""The ``context`` of a recommendation request: what the client knows about the moment
(device, country, page...), read by the placement's targeting and its contextual or
clustered allocation. Bounded and validated here, so every error names what is wrong."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi.exceptions import RequestValidationError

from api.named_filters import invalid

MAX_KEYS = 16
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
MAX_VALUE_LENGTH = 64
PREFIX = "context."
CONTEXT_DESCRIPTION = (
    f"What the client knows about this request, for the placement's targeting and its "
    f"clustered or contextual allocation: a JSON object (`{{\"device\": \"mobile\"}}`) or "
    f"`context.<key>=value` parameters. At most {MAX_KEYS} keys ({KEY_PATTERN.pattern}); "
    f"values are strings of at most {MAX_VALUE_LENGTH} characters, numbers or booleans.")


def _refuse(message: str, given: Any = None) -> RequestValidationError:
    """A 422 shaped like every other one, at ``query.context``."""
    return invalid("context", f"context: {message}", given)


def parse_context(raw: str | None, query: Mapping[str, str]) -> dict[str, Any]:
    """The request's context from the ``context`` JSON object and ``context.<key>``
    parameters (both may be given; a key in both is refused)."""
    context: dict[str, Any] = {}
    if raw is not None:
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise _refuse(f"not valid JSON ({error})", raw) from error
        if not isinstance(parsed, dict):
            raise _refuse(f"expected a JSON object, got {type(parsed).__name__}", raw)
        context.update(parsed)
    for name, value in query.items():
        if name.startswith(PREFIX):
            key = name[len(PREFIX):]
            if key in context:
                raise _refuse(f"key {key!r} is given twice")
            context[key] = value
    if len(context) > MAX_KEYS:
        raise _refuse(f"{len(context)} keys, at most {MAX_KEYS}")
    for key, value in context.items():
        if not KEY_PATTERN.match(key):
            raise _refuse(f"key {key!r} does not match {KEY_PATTERN.pattern}")
        if isinstance(value, bool) or value is None:
            if value is None:
                raise _refuse(f"{key}: null is not a value (leave the key out)")
            continue
        if isinstance(value, int | float):
            if value != value or value in (float("inf"), float("-inf")):
                raise _refuse(f"{key}: {value} is not a finite number")
            continue
        if not isinstance(value, str):
            raise _refuse(f"{key}: expected a string, number or boolean, got "
                          f"{type(value).__name__}")
        if not 1 <= len(value) <= MAX_VALUE_LENGTH:
            raise _refuse(f"{key}: a value of 1 to {MAX_VALUE_LENGTH} characters, got "
                          f"{len(value)}")
    return context
