"""The batches the events agent prepared, waiting for the learning loop: it takes all of
them at once (up to the batch size) each time it is free.

The agent takes what came within ``STREAMREC_BATCH_WITHIN_SECONDS``, splits it by app and
makes it plain for the learning process (:mod:`streams.agents`). With a queue of one such
batch, a batch taken while the learning process was busy waited for it twice: once for
the batch learning, once for the batch queued before it, and each turn grew with the
batches it waited behind (docs/benchmarks.md, "Freshness at 80% of an older state's
capacity"). Here every batch prepared meanwhile is learned in the next turn, as one: a
turn pays the learning's fixed cost (its round trips, the tally's trials) once for all
of them, and an event waits for at most the turn in progress before its own.

The order stays the order taken, so the merged batch is learned and acked as one batch
taken in one go would be: its offsets are those of its last record per partition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from streams.app_parts import Split


def merge(splits: Sequence[Split]) -> Split:
    """The split of the batches of ``splits`` taken one after the other, as one.

    >>> from collections import Counter
    >>> first = Split({"a": [1], "b": [2]}, {"e:0:1": "no"}, Counter(x=1), {"e:0": 2}, {})
    >>> second = Split({"b": [3], "c": [4]}, {}, Counter(x=2), {"e:0": 5, "e:1": 0}, {})
    >>> merged = merge([first, second])
    >>> merged.parts, merged.refused, merged.dropped, merged.through
    ({'a': [1], 'b': [2, 3], 'c': [4]}, {'e:0:1': 'no'}, Counter({'x': 3}), {'e:0': 5, 'e:1': 0})
    """
    if len(splits) == 1:
        return splits[0]
    merged = Split()
    for split in splits:
        for name, records in split.parts.items():
            merged.parts.setdefault(name, []).extend(records)
        merged.refused.update(split.refused)
        merged.dropped.update(split.dropped)
        for name, offset in split.through.items():
            merged.through[name] = max(merged.through.get(name, -1), offset)
        merged.apps.update(split.apps)
    return merged


class Prepared:
    """Prepared batches in the order taken, at most about ``limit`` events of them: the
    agent's :meth:`put` waits while a full batch is prepared already (a backlog then
    flows in batches of ``limit``, one learning while the next is prepared, as before)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._batches: list[tuple[list[Any], Split, dict[str, list[Any]]]] = []
        self._events = 0
        self._changed = asyncio.Condition()

    async def put(self, events: list[Any], split: Split, plain: dict[str, list[Any]]
                  ) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._events < self.limit)
            self._batches.append((events, split, plain))
            self._events += len(events)
            self._changed.notify_all()

    async def take(self) -> tuple[list[Any], Split, dict[str, list[Any]]]:
        """Every batch prepared so far, as one, but past ``limit`` events only the first
        (so a turn learns about a batch's worth at most); waits for one."""
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._batches))
            count, taken = 0, 0
            for events, _, _ in self._batches:
                if taken and count + len(events) > self.limit:
                    break
                count += len(events)
                taken += 1
            batches, self._batches = self._batches[:taken], self._batches[taken:]
            self._events -= count
            self._changed.notify_all()
        if len(batches) == 1:
            return batches[0]
        events = [event for batch in batches for event in batch[0]]
        plain: dict[str, list[Any]] = {}
        for _, _, part in batches:
            for name, records in part.items():
                plain.setdefault(name, []).extend(records)
        return events, merge([split for _, split, _ in batches]), plain
