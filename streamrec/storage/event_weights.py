"""The event types every role accepts, with their weights, in one Redis hash.

The API validates ``POST /events`` against it, ``streamrec import`` its rows, and the
worker (and ``streamrec rebuild``) weighs and accepts records by it, so a type the API
accepts is never dead-lettered by the worker: the worker re-reads the table before it
decodes each batch, after the API read it to accept the batch's events. The table is
seeded from ``STREAMREC_EVENT_WEIGHTS`` by the first role that finds it absent; from then
on it changes only through ``PUT``/``DELETE /admin/event-types/{name}`` or
``streamrec event-types``.
"""

from __future__ import annotations

from collections.abc import Mapping

import redis

from recommender.base import MAX_WEIGHT
from streamrec.storage import keys

# Seed only an absent table, atomically: two roles starting at once write it once.
_SEED = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV))
end
return redis.call('HGETALL', KEYS[1])
"""


class EventTypeError(ValueError):
    """A change the table refuses; ``str()`` names the field and why."""


class RedisEventWeights:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.key = keys.key(prefix, keys.EVENT_WEIGHTS)

    @staticmethod
    def _decoded(raw: Mapping[bytes, bytes]) -> dict[str, float]:
        return {name.decode(): float(weight) for name, weight in raw.items()}

    def seed(self, weights: Mapping[str, float]) -> dict[str, float]:
        """Write ``weights`` unless a table exists; returns the table that holds. One round
        trip, as cheap as :meth:`read`: the roles read the table this way, so whichever
        comes first seeds it (and again should someone delete the key)."""
        arguments = [part for name, weight in weights.items() for part in (name, repr(weight))]
        raw = self.client.eval(_SEED, 1, self.key, *arguments)
        return self._decoded(dict(zip(raw[::2], raw[1::2], strict=True)))

    def read(self) -> dict[str, float]:
        return self._decoded(self.client.hgetall(self.key))

    def put(self, name: str, weight: float) -> dict[str, float]:
        """Add the type or change its weight; returns the whole table."""
        if not 0 <= weight <= MAX_WEIGHT:  # NaN fails both
            raise EventTypeError(f"weight: {weight!r} must be a number from 0 to "
                                 f"{MAX_WEIGHT:,.0f}")
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.key, name, repr(float(weight)))
        pipe.hgetall(self.key)
        return self._decoded(pipe.execute()[1])

    def remove(self, name: str) -> dict[str, float] | None:
        """Remove a type; None when it is not in the table. The last one stays: a table
        without types would refuse every event."""
        table = self.key

        def change(pipe) -> dict[str, float] | None:
            current = self._decoded(pipe.hgetall(table))
            if name not in current:
                return None
            if len(current) == 1:
                raise EventTypeError(f"name: {name!r} is the only event type; add another "
                                     "before removing it")
            pipe.multi()
            pipe.hdel(table, name)
            del current[name]
            return current

        return self.client.transaction(change, table, value_from_callable=True)
