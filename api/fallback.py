"""What the API still knows when Redis is away: the most popular items as last read,
refreshed in the background. Lists served from it are marked ``degraded``."""

from __future__ import annotations

import time

from recommender.base import Scored
from recommender.engine import Engine

KEPT = 500


class LastKnownPopular:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.items: list[Scored] = []
        self.read_at: float | None = None

    def refresh(self) -> None:
        now = time.time()
        self.items = self.engine.popular(KEPT, now)
        self.read_at = now

    def top(self, k: int) -> list[Scored]:
        return self.items[:k]
