"""The contract with producers: versioned JSON Schema files and the models that enforce them."""

from schemas.models import (
    SCHEMA_DIR,
    Event,
    EventContractError,
    Item,
    User,
    load_schema,
    parse_event,
)

__all__ = [
    "SCHEMA_DIR",
    "Event",
    "EventContractError",
    "Item",
    "User",
    "load_schema",
    "parse_event",
]
