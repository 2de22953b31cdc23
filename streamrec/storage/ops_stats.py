"""Operational figures the worker leaves in Redis for the API's metrics: how fresh the
state is (Kafka record time to state applied), how much has been applied, and what was
dead-lettered and why."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import redis

from streamrec.storage import keys

SAMPLES_KEPT = 2000
# Samples of a batch kept in the recent list (the dashboard's percentiles): a spread, so a
# large batch does not push out every earlier one. The histogram counts every record.
SAMPLES_PER_BATCH = 20
# Upper bounds in seconds, from "as fresh as it gets" to "an alert should have fired".
FRESHNESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# What a reject's reason may be counted under: the field its text names first, when it is
# one of these; anything else counts as "other". A reason quotes the message (a context
# key, say), and a label must never take a value a message chose.
REASONS = frozenset({
    "body", "key", "json", "user_id", "item_id", "event_type", "timestamp", "value",
    "event_id", "recommendation_id", "context", "impression", "categories", "price",
    "available", "created_at", "expires_at", "properties",
})


def reason_label(reason: str) -> str:
    """The bounded label of a reject's ``reason`` text.

    >>> reason_label("event_type: 'teleport' is not one of ['click', 'view']")
    'event_type'
    >>> reason_label("context.<b>: too long"), reason_label("Invalid JSON at line 1")
    ('context', 'other')
    """
    head = reason.split(":", 1)[0]
    for stop in ".[ ":
        head = head.split(stop, 1)[0]
    return head if head in REASONS else "other"


@dataclass
class OpsFigures:
    """What :meth:`OpsStats.read` returns."""

    events_applied: int = 0
    events_duplicate: int = 0
    freshness_samples: list[float] = field(default_factory=list)  # ms, newest first
    # (topic, reason) -> records dead-lettered
    rejects: dict[tuple[str, str], int] = field(default_factory=dict)
    # cumulative (upper bound, count) pairs ending with +Inf, and the sum in seconds
    freshness_buckets: list[tuple[float, int]] = field(default_factory=list)
    freshness_sum: float = 0.0


class OpsStats:
    def __init__(self, client: redis.Redis, prefix: str = "sr") -> None:
        self.client = client
        self.prefix = prefix

    def record_freshness(self, milliseconds: Sequence[float]) -> None:
        """Every record's freshness into the histogram, a spread of them into the list."""
        if not milliseconds:
            return
        step = max(1, len(milliseconds) // SAMPLES_PER_BATCH)
        name = keys.key(self.prefix, keys.FRESHNESS)
        histogram = keys.key(self.prefix, keys.FRESHNESS_HISTOGRAM)
        counts = Counter(bisect.bisect_left(FRESHNESS_BUCKETS, value / 1000)
                         for value in milliseconds)
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(name, *(f"{value:.1f}" for value in milliseconds[::step]))
        pipe.ltrim(name, 0, SAMPLES_KEPT - 1)
        for bucket, count in counts.items():
            bound = FRESHNESS_BUCKETS[bucket] if bucket < len(FRESHNESS_BUCKETS) else "+Inf"
            pipe.hincrby(histogram, str(bound), count)
        pipe.hincrby(histogram, "count", len(milliseconds))
        pipe.hincrbyfloat(histogram, "sum", sum(milliseconds) / 1000)
        pipe.execute()

    def record_rejects(self, rejects: Iterable[tuple[str, str]]) -> None:
        """Count dead-lettered records by topic and :func:`reason_label` of their reason."""
        counts = Counter((topic, reason_label(reason)) for topic, reason in rejects)
        if not counts:
            return
        name = keys.key(self.prefix, keys.REJECTS)
        pipe = self.client.pipeline(transaction=False)
        for (topic, reason), count in counts.items():
            pipe.hincrby(name, f"{topic}|{reason}", count)
        pipe.execute()

    def read(self) -> OpsFigures:
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(keys.key(self.prefix, keys.STATS), "events_applied", "duplicates")
        pipe.lrange(keys.key(self.prefix, keys.FRESHNESS), 0, SAMPLES_KEPT - 1)
        pipe.hgetall(keys.key(self.prefix, keys.REJECTS))
        pipe.hgetall(keys.key(self.prefix, keys.FRESHNESS_HISTOGRAM))
        (applied, duplicate), samples, rejects, histogram = pipe.execute()
        figures = OpsFigures(int(applied or 0), int(duplicate or 0),
                             [float(value) for value in samples])
        for name, count in rejects.items():
            topic, _, reason = name.decode().partition("|")
            figures.rejects[(topic, reason)] = int(count)
        tally = {name.decode(): value for name, value in histogram.items()}
        cumulative = 0
        for bound in (*FRESHNESS_BUCKETS, "+Inf"):
            cumulative += int(tally.get(str(bound), 0))
            figures.freshness_buckets.append((float(bound), cumulative))
        figures.freshness_sum = float(tally.get("sum", 0.0))
        return figures

    def duplicates(self) -> int:
        """Records the worker left out because their event id was applied already."""
        return int(self.client.hget(keys.key(self.prefix, keys.STATS), "duplicates") or 0)
