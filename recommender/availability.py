"""When a catalog item stops being shown: the one rule every store applies on a catalog
write, so that serving only has to compare a stored time with now."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def withdrawn_at(document: Mapping[str, Any] | None) -> float | None:
    """The time from which an item is never shown, or None while nothing withdraws it.

    A deleted item (a tombstone: no document) and an unavailable one are withdrawn from
    time 0, that is always; an item with ``expires_at`` from then on.

    >>> withdrawn_at(None), withdrawn_at({"available": False, "expires_at": 9.0})
    (0.0, 0.0)
    >>> withdrawn_at({"available": True, "expires_at": 9.0}), withdrawn_at({"price": 3})
    (9.0, None)
    """
    if document is None or document.get("available") is False:
        return 0.0
    expires_at = document.get("expires_at")
    return None if expires_at is None else float(expires_at)


def is_withdrawn(withdrawn: float | None, now: float) -> bool:
    """Whether an item withdrawn from ``withdrawn`` (None: never) is withdrawn at ``now``.

    >>> is_withdrawn(None, 5.0), is_withdrawn(5.0, 5.0), is_withdrawn(6.0, 5.0)
    (False, True, False)
    """
    return withdrawn is not None and withdrawn <= now
