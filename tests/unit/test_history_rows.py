"""How the Redis store decodes a history read (no Redis: the replies as redis-py gives
them for ``ZREVRANGE ... WITHSCORES`` sent as a command, RESP2 and RESP3)."""

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


def _replies(rows: list[tuple[bytes, float]]) -> list[list]:
    """The rows as RESP2 sends them (flat; each score as Redis writes a double, %.17g) and
    as RESP3 does (pairs; the score parsed)."""
    flat = [part for member, score in rows for part in (member, b"%.17g" % score)]
    return [flat, [[member, score] for member, score in rows]]


def test_a_marked_history_is_ordered_by_time_then_item_as_the_layout_before():
    rng = random.Random(2)
    for _ in range(500):
        rows = _rows(rng)
        for limit in (1, 5, 200):
            expected = _times([(member, int(score)) for member, score in rows[1:limit + 1]])
            for reply in _replies(rows):
                assert _history(reply, limit) == expected


def test_a_history_of_the_layout_before_is_read_in_seconds():
    rows = [(b"b", 1_700_000_000_123.0), (b"a", 1_700_000_000_000.0), (b"c", 5.0)]
    for reply in _replies(rows):
        assert _history(reply, 2) == [("b", 1_700_000_000.123), ("a", 1_700_000_000.0)]
        assert _history(reply, 200) == [("b", 1_700_000_000.123), ("a", 1_700_000_000.0),
                                        ("c", 0.005)]
    assert _history([], 10) == []
