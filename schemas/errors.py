"""How a validation error reads, in one place: the API's 422s and a refused configuration
name the field and say what is wrong the same way, without pydantic's own prefixes."""

from __future__ import annotations

from collections.abc import Sequence

# pydantic puts these before the message of an error a validator raised.
_PREFIXES = ("Value error, ", "Assertion failed, ")


def message(text: str) -> str:
    """``text`` without the prefix pydantic adds to a validator's own message.

    >>> message("Value error, filter: expected ( after IN at position 36")
    'filter: expected ( after IN at position 36'
    >>> message("Field required")
    'Field required'
    """
    for prefix in _PREFIXES:
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


def field(location: Sequence[str | int]) -> str:
    """A location as one path, the way the README writes it: names joined by dots, list
    positions in brackets.

    >>> field(("body", 3, "event_type"))
    'body[3].event_type'
    >>> field(["body", "variants", 0, "weight"])
    'body.variants[0].weight'
    >>> field(("query", "filter")), field(())
    ('query.filter', '')
    """
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path
