"""Named filters in Redis: one HASH, filter name -> JSON definition. Every API process
reads them all every ``filter_refresh_seconds`` (see ``api/filters.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import redis

from streamrec.storage import keys

MAX_FILTERS = 500  # each API process compiles and holds every one


class TooManyFilters(Exception):
    """Registering one more would pass :data:`MAX_FILTERS`."""


class RedisFilters:
    def __init__(self, client: redis.Redis, prefix: str = "sr") -> None:
        self.client = client
        self.table = keys.key(prefix, keys.FILTERS)

    def all(self) -> dict[str, dict[str, Any]]:
        raw = self.client.hgetall(self.table)
        return {name.decode(): orjson.loads(doc) for name, doc in raw.items()}

    def get(self, name: str) -> dict[str, Any] | None:
        raw = self.client.hget(self.table, name)
        return None if raw is None else orjson.loads(raw)

    def put(self, name: str, definition: Mapping[str, Any]) -> dict[str, Any]:
        """Store a new version of ``name`` (``version`` is assigned).

        Raises
        ------
        TooManyFilters
            When ``name`` is new and :data:`MAX_FILTERS` are registered already.
        """
        stored: dict[str, Any] = {}

        def write(pipe) -> None:
            current = pipe.hget(self.table, name)
            if current is None and pipe.hlen(self.table) >= MAX_FILTERS:
                raise TooManyFilters(f"at most {MAX_FILTERS} filters; delete one first")
            version = (orjson.loads(current)["version"] if current else 0) + 1
            stored.clear()
            stored.update({**definition, "name": name, "version": version})
            pipe.multi()
            pipe.hset(self.table, name, orjson.dumps(stored))

        self.client.transaction(write, self.table)
        return dict(stored)

    def delete(self, name: str) -> bool:
        """True when there was such a filter."""
        return bool(self.client.hdel(self.table, name))
