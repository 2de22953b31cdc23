"""How the Redis store decodes a history read (no Redis: the rows as redis-py gives them)."""

from __future__ import annotations

import random

from streamrec.storage import scripts
from streamrec.storage.state_store import _MARKER, _history, _times


def _rows(rng: random.Random) -> list[tuple[bytes, float]]:
    """A marked history read: the marker, then items by score (ms * span + mask), ties in
    a millisecond and between scores as ZRANGE REV gives them (member descending)."""
    span = scripts.HISTORY_SPAN
    found = {f"{rng.choice('abé')}{rng.randrange(40)}".encode(): float(
        rng.choice([1_700_000_000_000, 1_700_000_000_001, 0, -7]) * span + rng.randrange(span))
        for _ in range(rng.randrange(1, 40))}
    ranked = sorted(found.items(), key=lambda row: (row[1], row[0]), reverse=True)
    return [(_MARKER, float("inf")), *ranked]


def test_a_marked_history_is_ordered_by_time_then_item_as_the_layout_before():
    rng = random.Random(2)
    for _ in range(500):
        rows = _rows(rng)
        for limit in (1, 5, 200):
            expected = _times([(member, int(score)) for member, score in rows[1:limit + 1]])
            assert _history(rows, limit) == expected
