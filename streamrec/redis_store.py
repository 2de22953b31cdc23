"""The Redis implementation of :class:`recommender.store.StateStore`.

Reads are pipelined (one round trip per call); :meth:`RedisStore.apply` writes a whole
batch in one MULTI/EXEC transaction, so readers never see half a batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import orjson
import redis

from recommender.availability import withdrawn_at
from recommender.base import Category, ItemId, Scored, UserId
from recommender.store import StateUpdate
from streamrec import keys, redis_scripts


def _pack(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def _unpack(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype="<f4").copy()


def _flat(mapping: Mapping[str, Any]) -> list[Any]:
    """``{a: 1, b: 2}`` as ``[a, 1, b, 2]``: what the scripts loop over."""
    return [part for pair in mapping.items() for part in pair]


def _joined(event_types: Iterable[str]) -> str:
    return redis_scripts.EVENT_TYPE_SEPARATOR.join(sorted(event_types))


def _decode(pairs: list[tuple[bytes, float]]) -> list[Scored]:
    return [(member.decode(), score) for member, score in pairs]


class RedisStore:
    # How far back a change-cursor read reaches: covers clock skew between workers and a
    # transaction that took its timestamp before a read but committed after it.
    CHANGE_OVERLAP_SECONDS = 5.0

    def __init__(self, client: redis.Redis, prefix: str = "sr",
                 catalog_prefix: str | None = None) -> None:
        self.client = client
        self.prefix = prefix
        # A model version's state lives under its own prefix; the catalog and everything
        # else shared by the versions under the base one (see keys.STATE).
        self.catalog_prefix = catalog_prefix or prefix
        self._apply = client.register_script(redis_scripts.APPLY)
        self._windows = client.register_script(redis_scripts.WINDOWS)
        # Each kind's key prefix; the scripts append the id (ids always come last).
        self._key_prefixes = {
            name: self.key(kind, "")
            for name, kind in (("pop", keys.POPULAR), ("popcat", keys.POPULAR_BY_CATEGORY),
                               ("cnt", keys.ITEM_COUNT), ("nbr", keys.NEIGHBOURS),
                               ("hist", keys.HISTORY), ("mfu", keys.MF_USER),
                               ("mfi", keys.MF_ITEM), ("evtypes", keys.EVENT_TYPES))
        } | {"pop": self.key(keys.POPULAR), "cnt": self.key(keys.ITEM_COUNT),
             "mfchg": self.key(keys.MF_CHANGED), "offsets": self.key(keys.OFFSETS),
             "stats": self.key(keys.STATS)}

    @classmethod
    def from_url(cls, url: str, prefix: str = "sr",
                 catalog_prefix: str | None = None) -> RedisStore:
        # RESP2: with RESP3, redis-py 8 re-encodes every sorted-set score to bytes and back
        # to keep its legacy reply shapes (a third of a co-occurrence request's time).
        return cls(redis.Redis.from_url(url, socket_timeout=5, health_check_interval=30,
                                        protocol=2), prefix, catalog_prefix)

    def key(self, kind: str, *parts: str) -> str:
        prefix = self.prefix if kind in keys.STATE else self.catalog_prefix
        return keys.key(prefix, kind, *parts)

    def windows(self, user_ids: Iterable[UserId], limit: int) -> dict[UserId, list[Scored]]:
        users = list(user_ids)
        if not users:
            return {}
        raw = self._windows(args=[self._key_prefixes["hist"], limit, *users])
        rows = orjson.loads(raw)
        return {
            user: [(flat[n], float(flat[n + 1])) for n in range(0, len(flat), 2)]
            if flat else []
            for user, flat in zip(users, rows, strict=True)
        }

    def history(self, user_id: UserId, limit: int) -> list[Scored]:
        rows = self.client.zrange(self.key(keys.HISTORY, user_id), 0, limit - 1, desc=True,
                                  withscores=True)
        return _decode(rows)

    def histories(self, user_ids: Iterable[UserId], limit: int) -> dict[UserId, list[Scored]]:
        users = list(user_ids)
        pipe = self.client.pipeline(transaction=False)
        for user in users:
            pipe.zrange(self.key(keys.HISTORY, user), 0, limit - 1, desc=True, withscores=True)
        return {user: _decode(rows) for user, rows in zip(users, pipe.execute(), strict=True)}

    def user_state(self, user_id: UserId, limit: int) -> tuple[list[Scored], np.ndarray | None]:
        pipe = self.client.pipeline(transaction=False)
        pipe.zrange(self.key(keys.HISTORY, user_id), 0, limit - 1, desc=True, withscores=True)
        pipe.get(self.key(keys.MF_USER, user_id))
        rows, raw = pipe.execute()
        return _decode(rows), None if raw is None else _unpack(raw)

    def user_ids(self, count: int = 1000) -> Iterator[UserId]:
        """SCAN over the history keys, ``count`` keys per round trip."""
        start = len(self.key(keys.HISTORY, "").encode())
        for name in self.client.scan_iter(match=keys.pattern(self.prefix, keys.HISTORY),
                                          count=count):
            yield name[start:].decode()

    def apply(self, update: StateUpdate) -> None:
        """The whole batch in one Lua call: atomic, one round trip, one packed argument."""
        payload = {
            "k": self._key_prefixes,
            "max_neighbours": update.max_neighbours,
            "history_length": update.history_length,
            "pop": _flat(update.popularity),
            "popcat": [part for category, increments in update.category_popularity.items()
                       for part in (category, _flat(increments))],
            "cnt": _flat(update.item_counts),
            "pairs": [part for item, increments in update.pairs.items()
                      for part in (item, _flat(increments))],
            "hist": [part for user, scores in update.history.items()
                     for part in (user, _flat(scores))],
            "mfu": list(update.user_factors),
            "mfi": list(update.item_factors),
            "changed_at": time.time(),
            "offsets": _flat(update.offsets),
            "events": update.events,
            "types": [part for user, items in update.event_types.items()
                      for part in (user, _flat({item: _joined(types)
                                                for item, types in items.items()}))],
        }
        vectors = [_pack(v) for v in update.user_factors.values()]
        vectors += [_pack(v) for v in update.item_factors.values()]
        self._apply(args=[orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), *vectors])

    def neighbours(self, item_ids: Iterable[ItemId], limit: int) -> dict[ItemId, list[Scored]]:
        items = list(item_ids)
        pipe = self.client.pipeline(transaction=False)
        for item in items:
            pipe.zrange(self.key(keys.NEIGHBOURS, item), 0, limit - 1, desc=True,
                        withscores=True)
        return {item: _decode(rows) for item, rows in zip(items, pipe.execute(), strict=True)}

    def item_counts(self, item_ids: Iterable[ItemId]) -> dict[ItemId, float]:
        items = list(item_ids)
        if not items:
            return {}
        scores = self.client.zmscore(self.key(keys.ITEM_COUNT), items)
        return {item: s for item, s in zip(items, scores, strict=True) if s is not None}

    def popular(self, k: int, category: Category | None = None) -> list[Scored]:
        name = (
            self.key(keys.POPULAR)
            if category is None
            else self.key(keys.POPULAR_BY_CATEGORY, category)
        )
        return _decode(self.client.zrange(name, 0, k - 1, desc=True, withscores=True))

    def item_categories(self, item_ids: Iterable[ItemId]) -> dict[ItemId, list[Category]]:
        items = list(item_ids)
        if not items:
            return {}
        documents = self.client.mget([self.key(keys.ITEM, item) for item in items])
        return {
            item: list(orjson.loads(raw).get("categories", ()))
            for item, raw in zip(items, documents, strict=True)
            if raw is not None
        }

    def user_factors(self, user_ids: Iterable[UserId]) -> dict[UserId, np.ndarray]:
        return self._vectors(keys.MF_USER, user_ids)

    def item_factors(self, item_ids: Iterable[ItemId]) -> dict[ItemId, np.ndarray]:
        return self._vectors(keys.MF_ITEM, item_ids)

    def _vectors(self, kind: str, ids: Iterable[str]) -> dict[str, np.ndarray]:
        ids = list(ids)
        if not ids:
            return {}
        raw = self.client.mget([self.key(kind, i) for i in ids])
        return {i: _unpack(r) for i, r in zip(ids, raw, strict=True) if r is not None}

    def sample_items(self, count: int) -> list[ItemId]:
        if count <= 0:
            return []
        members = self.client.zrandmember(self.key(keys.MF_CHANGED), count) or []
        return [member.decode() for member in members]

    def changed_items(self, since: float | None) -> tuple[float, dict[ItemId, np.ndarray]]:
        now = time.time()
        low = "-inf" if since is None else since - self.CHANGE_OVERLAP_SECONDS
        members = self.client.zrangebyscore(self.key(keys.MF_CHANGED), low, "+inf")
        changed: dict[ItemId, np.ndarray] = {}
        for start in range(0, len(members), 10_000):
            chunk = [member.decode() for member in members[start:start + 10_000]]
            changed.update(self.item_factors(chunk))
        return now, changed

    def put_items(self, documents: Iterable[tuple[ItemId, Mapping[str, Any] | None]]) -> None:
        """Documents, deletions and withdrawal times in one MULTI/EXEC; the last of an
        item's documents in the batch wins (the compacted topic's order)."""
        latest = dict(documents)
        if not latest:
            return
        withdrawn = {item: withdrawn_at(document) for item, document in latest.items()}
        pipe = self.client.pipeline(transaction=True)
        stored = {self.key(keys.ITEM, item): orjson.dumps(dict(document))
                  for item, document in latest.items() if document is not None}
        deleted = [self.key(keys.ITEM, item) for item, doc in latest.items() if doc is None]
        if stored:
            pipe.mset(stored)
        if deleted:
            pipe.delete(*deleted)
        hidden = {item: at for item, at in withdrawn.items() if at is not None}
        shown = [item for item, at in withdrawn.items() if at is None]
        if hidden:
            pipe.zadd(self.key(keys.WITHDRAWN), hidden)
        if shown:
            pipe.zrem(self.key(keys.WITHDRAWN), *shown)
        pipe.zadd(self.key(keys.CATALOG_CHANGED), dict.fromkeys(latest, time.time()))
        pipe.execute()

    def changed_documents(self, since: float | None
                          ) -> tuple[float, dict[ItemId, dict[str, Any] | None]]:
        now = time.time()
        low = "-inf" if since is None else since - self.CHANGE_OVERLAP_SECONDS
        members = self.client.zrangebyscore(self.key(keys.CATALOG_CHANGED), low, "+inf")
        changed: dict[ItemId, dict[str, Any] | None] = {}
        for start in range(0, len(members), 10_000):
            chunk = [member.decode() for member in members[start:start + 10_000]]
            raw = self.client.mget([self.key(keys.ITEM, item) for item in chunk])
            changed.update({item: None if document is None else orjson.loads(document)
                            for item, document in zip(chunk, raw, strict=True)})
        return now, changed

    def screen(self, item_ids: Iterable[ItemId], now: float, documents: bool = False
               ) -> tuple[set[ItemId], dict[ItemId, dict[str, Any]]]:
        items = list(item_ids)
        if not items:
            return set(), {}
        if not documents:
            times = self.client.zmscore(self.key(keys.WITHDRAWN), items)
            return {i for i, at in zip(items, times, strict=True)
                    if at is not None and at <= now}, {}
        pipe = self.client.pipeline(transaction=False)
        pipe.zmscore(self.key(keys.WITHDRAWN), items)
        pipe.mget([self.key(keys.ITEM, item) for item in items])
        times, raw = pipe.execute()
        withdrawn = {i for i, at in zip(items, times, strict=True) if at is not None and at <= now}
        found = {i: orjson.loads(r) for i, r in zip(items, raw, strict=True)
                 if r is not None and i not in withdrawn}
        return withdrawn, found

    def interaction_types(self, user_id: UserId) -> dict[ItemId, frozenset[str]]:
        raw = self.client.hgetall(self.key(keys.EVENT_TYPES, user_id))
        separator = redis_scripts.EVENT_TYPE_SEPARATOR
        return {item.decode(): frozenset(types.decode().split(separator))
                for item, types in raw.items()}

    def get_item(self, item_id: ItemId) -> dict[str, Any] | None:
        raw = self.client.get(self.key(keys.ITEM, item_id))
        return None if raw is None else orjson.loads(raw)

    def put_users(self, documents: Iterable[tuple[UserId, Mapping[str, Any]]]) -> None:
        self._put(keys.USER, documents)

    def _put(self, kind: str, documents: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        encoded = {self.key(kind, i): orjson.dumps(dict(d)) for i, d in documents}
        if encoded:
            self.client.mset(encoded)

    def get_user(self, user_id: UserId) -> dict[str, Any] | None:
        raw = self.client.get(self.key(keys.USER, user_id))
        return None if raw is None else orjson.loads(raw)

    def events_applied(self) -> int:
        return int(self.client.hget(self.key(keys.STATS), "events_applied") or 0)

    def applied_offsets(self, partitions: Iterable[str]) -> dict[str, int]:
        names = list(partitions)
        if not names:
            return {}
        values = self.client.hmget(self.key(keys.OFFSETS), names)
        return {n: int(v) for n, v in zip(names, values, strict=True) if v is not None}

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False
