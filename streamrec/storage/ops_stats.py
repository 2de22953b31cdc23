"""Operational figures the worker leaves in Redis for the API's metrics: how fresh the
state is (Kafka record time to state applied) and how much has been applied."""

from __future__ import annotations

from collections.abc import Sequence

import redis

from streamrec.storage import keys

SAMPLES_KEPT = 2000


class OpsStats:
    def __init__(self, client: redis.Redis, prefix: str = "sr") -> None:
        self.client = client
        self.prefix = prefix

    def record_freshness(self, milliseconds: Sequence[float]) -> None:
        if not milliseconds:
            return
        name = keys.key(self.prefix, keys.FRESHNESS)
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(name, *(f"{value:.1f}" for value in milliseconds))
        pipe.ltrim(name, 0, SAMPLES_KEPT - 1)
        pipe.execute()

    def read(self) -> tuple[int, list[float]]:
        """Events applied so far, and the recent freshness samples in ms."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(keys.key(self.prefix, keys.STATS), "events_applied")
        pipe.lrange(keys.key(self.prefix, keys.FRESHNESS), 0, SAMPLES_KEPT - 1)
        applied, samples = pipe.execute()
        return int(applied or 0), [float(value) for value in samples]

    def duplicates(self) -> int:
        """Records the worker left out because their event id was applied already."""
        return int(self.client.hget(keys.key(self.prefix, keys.STATS), "duplicates") or 0)
