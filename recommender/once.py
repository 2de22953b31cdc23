"""Each event applied at most once: the rule that remembers event ids for a window.

A producer that retries after a timeout, a client that posts the same list twice, a file
imported again: each sends an event with an ``event_id`` already applied. A store applies a
batch's events together with their :class:`Claim` s in one atomic step, and refuses the
whole batch (:class:`DuplicateEvents`, naming the records) when one of them names an id
another record claimed; the caller drops those records and learns the rest.

The window is measured in reception time (when streamrec received the event: the Kafka
record's append time), never in event time: an event's own timestamp is the client's word
and may be years old (an import of history) or ahead (a simulation), yet a retry or a
re-import of it must still be recognised, and a rebuild that replays the log decides as the
live worker did. Ids are kept in buckets of one :data:`BUCKET_SECONDS` of reception time; a
bucket is dropped once the newest bucket is more than the window past it, so memory holds
about ``window + BUCKET_SECONDS`` worth of ids whatever the event times say, and an id is
remembered for at least the window.

A record is named by its position (``"partition:offset"``): the same record seen again (a
batch replayed after a crash) is itself, not a duplicate of itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

BUCKET_SECONDS = 86_400.0  # one day of reception time per bucket of remembered ids
DEFAULT_WINDOW_SECONDS = 7 * 86_400.0


@dataclass(frozen=True)
class Claim:
    """A record's claim on its event's id."""

    event_id: str
    position: str  # "partition:offset" of the record on the events topic
    received: float  # reception time (epoch seconds): which bucket keeps the id


class DuplicateEvents(Exception):  # noqa: N818 (not an error: the caller's usual path)
    """A batch was refused because some of its records repeat an id already claimed by
    another record (or earlier in the batch); nothing of it was written."""

    def __init__(self, positions: Iterable[str]) -> None:
        self.positions = frozenset(positions)
        super().__init__(f"{len(self.positions)} record(s) repeat an event id")


def bucket(received: float) -> int:
    """The bucket of a reception time.

    >>> bucket(86_400 * 3 + 5), bucket(-1.0)
    (3, -1)
    """
    return math.floor(received / BUCKET_SECONDS)


def buckets_kept(window: float) -> int:
    """How many buckets before the newest one are kept: enough to span ``window``.

    >>> buckets_kept(7 * 86_400), buckets_kept(3_600)
    (7, 1)
    """
    return max(1, math.ceil(window / BUCKET_SECONDS))


class EventMemory:
    """The ids of a window, in memory: what ``InMemoryStore`` and the Redis APPLY script
    both do, so a replay decides as the worker did.

    Examples
    --------
    >>> memory = EventMemory(window=7 * 86_400)
    >>> memory.duplicates([Claim("e1", "0:1", 10.0), Claim("e1", "0:2", 11.0)])
    ['0:2']
    >>> memory.remember([Claim("e1", "0:1", 10.0)])
    >>> memory.duplicates([Claim("e1", "0:1", 10.0), Claim("e1", "1:7", 20.0)])
    ['1:7']
    >>> memory.remember([Claim("e2", "0:3", 10 * 86_400.0)])  # ten days later
    >>> memory.duplicates([Claim("e1", "1:8", 10 * 86_400.0)])
    []
    """

    def __init__(self, window: float = DEFAULT_WINDOW_SECONDS) -> None:
        self.window = window
        self._buckets: dict[int, dict[str, str]] = {}

    def duplicates(self, claims: Sequence[Claim]) -> list[str]:
        """The positions of ``claims`` whose id another record claimed (a remembered one,
        or an earlier claim of the same batch)."""
        first: dict[str, str] = {}
        repeated = []
        for claim in claims:
            known = first.get(claim.event_id) or self._known(claim.event_id)
            if known is not None and known != claim.position:
                repeated.append(claim.position)
            else:
                first.setdefault(claim.event_id, claim.position)
        return repeated

    def _known(self, event_id: str) -> str | None:
        for ids in self._buckets.values():
            if event_id in ids:
                return ids[event_id]
        return None

    def remember(self, claims: Sequence[Claim]) -> None:
        """Keep the claims of a batch just applied, then forget the buckets out of the
        window."""
        for claim in claims:
            self._buckets.setdefault(bucket(claim.received), {}).setdefault(
                claim.event_id, claim.position)
        if self._buckets:
            oldest = max(self._buckets) - buckets_kept(self.window)
            for number in [n for n in self._buckets if n < oldest]:
                del self._buckets[number]

    def __len__(self) -> int:
        return sum(map(len, self._buckets.values()))
