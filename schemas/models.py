"""Pydantic models for ``schemas/v1/*.json``.

The JSON Schema files are the contract; ``tests/unit/test_schemas.py`` checks these models
accept and reject the same documents as the files do.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationError,
    field_validator,
)

from recommender.base import MODEL_PATTERN
from schemas import errors

SCHEMA_DIR = Path(__file__).parent / "v1"
MAX_TIMESTAMP = 4_102_444_800.0  # 2100-01-01: anything later is a unit mistake (ms, us)

NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f-\x9f]+$"  # Unicode category Cc: C0, DEL, C1

Id = Annotated[
    str, Strict(), StringConstraints(min_length=1, max_length=256, pattern=NO_CONTROL_CHARACTERS)
]
Category = Annotated[
    str, Strict(), StringConstraints(min_length=1, max_length=128, pattern=NO_CONTROL_CHARACTERS)
]
# A model a list can be ranked by: a streaming or batch model, or lists:NAME
# (recommender.base.check_model says the same in words).
ModelName = Annotated[str, Strict(), StringConstraints(max_length=64, pattern=MODEL_PATTERN)]
Scalar = Annotated[str, Strict(), StringConstraints(max_length=1024)] | bool | float
PropertyName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=NO_CONTROL_CHARACTERS)
]
Timestamp = Annotated[float, Strict(), Field(ge=0, le=MAX_TIMESTAMP)] | AwareDatetime


_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]")


def _date_time_string_only(value: Any) -> Any:
    # pydantic would read "1700000000" as a date, and a number beyond the epoch-seconds
    # range as milliseconds; the JSON Schema allows neither.
    if isinstance(value, str) and not _DATE_TIME.match(value):
        raise ValueError("a string timestamp must be an RFC 3339 date-time")
    if isinstance(value, int | float) and not isinstance(value, bool) and not (
            0 <= value <= MAX_TIMESTAMP):
        raise ValueError("timestamp must be epoch seconds between 1970 and 2100 "
                         "(milliseconds are a unit mistake)")
    return value


def _epoch_seconds(value: float | datetime | None) -> float | None:
    if isinstance(value, datetime):
        seconds = value.timestamp()
        if not 0 <= seconds <= MAX_TIMESTAMP:
            raise ValueError("timestamp must lie between 1970 and 2100")
        return seconds
    return value


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Event(_Contract):
    """One interaction. ``timestamp`` is normalised to epoch seconds."""

    user_id: Id
    item_id: Id
    event_type: Annotated[str, Strict(), StringConstraints(min_length=1, max_length=64)]
    timestamp: Timestamp | None = None
    value: Annotated[float, Strict()] | None = None
    event_id: Id | None = None
    recommendation_id: Id | None = None
    context: Annotated[dict[PropertyName, Scalar], Field(max_length=32)] = Field(
        default_factory=dict
    )

    _check_timestamp = field_validator("timestamp", mode="before")(_date_time_string_only)
    _normalise_timestamp = field_validator("timestamp")(_epoch_seconds)


class Item(_Contract):
    """A catalog item with its properties."""

    item_id: Id
    categories: Annotated[list[Category], Field(max_length=32)] = Field(default_factory=list)
    price: Annotated[float, Strict(), Field(ge=0)] | None = None
    available: bool = True
    created_at: Timestamp | None = None
    expires_at: Timestamp | None = None  # never recommended from this time on
    properties: Annotated[dict[PropertyName, Scalar], Field(max_length=64)] = Field(
        default_factory=dict
    )

    _check_times = field_validator("created_at", "expires_at", mode="before")(
        _date_time_string_only)
    _normalise_times = field_validator("created_at", "expires_at")(_epoch_seconds)


class User(_Contract):
    """A user with their properties."""

    user_id: Id
    properties: Annotated[dict[PropertyName, Scalar], Field(max_length=64)] = Field(
        default_factory=dict
    )


def event_time(timestamp: float | None, received: float, max_skew: float) -> float:
    """An event's time as streamrec learns it: its own (``received`` without one), at most
    ``max_skew`` seconds after ``received``, the time it reached streamrec: a clock far
    ahead must not make one event outweigh years of real ones.

    >>> event_time(4_102_444_800.0, received=1_750_000_000.0, max_skew=300.0)
    1750000300.0
    >>> event_time(1_700_000_000.0, 1_750_000_000.0, 300.0), event_time(None, 1e9, 300.0)
    (1700000000.0, 1000000000.0)
    """
    return received if timestamp is None else min(timestamp, received + max_skew)


class EventContractError(ValueError):
    """A message that breaks the event contract; ``str()`` names what is wrong."""


def describe(error: ValidationError) -> str:
    """One line naming each offending field, e.g. ``user_id: Field required``, written as
    the API's 422s write them (``categories[2]``, no ``Value error, `` prefix)."""
    parts = []
    for detail in error.errors(include_url=False, include_input=False):
        where = errors.field(detail["loc"]) or "body"
        parts.append(f"{where}: {errors.message(detail['msg'])}")
    return "; ".join(parts)


def parse_event(raw: bytes | str, event_types: Any) -> Event:
    """Decode and validate one JSON event; ``event_types`` is the configured set of types.

    Raises
    ------
    EventContractError
        With a message naming the field at fault.
    """
    try:
        event = Event.model_validate_json(raw)
    except ValidationError as error:
        raise EventContractError(describe(error)) from None
    if event.event_type not in event_types:
        raise EventContractError(
            f"event_type: {event.event_type!r} is not one of {sorted(event_types)}"
        )
    return event


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema document ``schemas/v1/<name>.json``."""
    return orjson.loads((SCHEMA_DIR / f"{name}.json").read_bytes())
