"""Per-app quotas (``requests_per_second``, ``events_per_second``): a token bucket per app
in each API process, so checking one costs no Redis round trip.

A quota is per API process: behind N processes an app gets up to N times its rate. A
shared Redis counter would make it exact at the cost of one more round trip on every
request of every app, and a Redis that is slow would then slow every quota check; a
per-process bucket keeps a flooding app's cost inside the process that refuses it.
"""

from __future__ import annotations

import math
import time

from fastapi import HTTPException


class TokenBucket:
    """``rate`` tokens a second, holding at most one second's worth (at least one).

    A take larger than the bucket (a batch of events above the rate) is admitted when the
    bucket is full and leaves it in debt, so big batches pass at the rate on average
    rather than never.

    Examples
    --------
    >>> bucket = TokenBucket(2.0, clock=lambda: 0.0)
    >>> bucket.take(), bucket.take(), bucket.take()
    (0.0, 0.0, 0.5)
    >>> TokenBucket(2.0, clock=lambda: 0.0).take(5)  # full: admitted, 3 tokens in debt
    0.0
    """

    def __init__(self, rate: float, clock=time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self._clock = clock
        self._tokens = self.capacity
        self._at = clock()

    def take(self, count: float = 1.0) -> float:
        """Take ``count`` tokens; returns 0.0 when admitted, else the seconds to wait."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        needed = min(count, self.capacity)
        if self._tokens >= needed:
            self._tokens -= count
            return 0.0
        return (needed - self._tokens) / self.rate


class Quota:
    """One of an app's rates, or none: ``admit`` raises 429 naming it when over."""

    def __init__(self, app: str, name: str, rate: float | None) -> None:
        self.app = app
        self.name = name
        self.rate = rate
        self._bucket = None if rate is None else TokenBucket(rate)

    def admit(self, count: float = 1.0) -> None:
        if self._bucket is None:
            return
        wait = self._bucket.take(count)
        if wait > 0:
            raise over_quota(self.app, self.name, f"{self.rate:g} per second per API process",
                             wait)


def over_quota(app: str, name: str, limit: str, wait: float) -> HTTPException:
    return HTTPException(429, detail=f"quota: app {app!r} is over its {name} ({limit}); "
                                     "retry after Retry-After seconds",
                         headers={"Retry-After": str(max(1, math.ceil(wait)))})


QUOTA_RESPONSES: dict[int | str, dict] = {429: {
    "description": "Over one of the app's quotas (requests_per_second, events_per_second, "
                   "max_items), named in the detail; retry after Retry-After"}}
