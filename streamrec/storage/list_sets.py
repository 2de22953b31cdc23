"""Imported list sets in Redis: written under a fresh generation, switched to at once.

A set ``NAME`` holds, per generation, ``2 * SHARDS`` hashes (``LIST_ROWS``): the users'
lists in buckets ``u0..``, the items' similar-item lists in ``i0..``. An import writes a
new generation beside the current one, in pipelined batches, then one Lua call switches
the set's pointer (``LIST_SETS``) to it, writes its card (``MODEL_CARDS``) and marks the old
generation retired; the old one is unlinked after a grace longer than any reader may hold
the pointer. A reader reads the pointer, then the user's list from the generation it
names: it sees one set or the other, never a mix. A generation whose import died (or whose
grace was cut short) stays in ``LIST_GENERATIONS`` and is deleted by the next import of the
set or by ``streamrec lists delete``.

Under a tagged prefix (the cluster layout) each bucket is a hash tag of its own
(``{sr/u3}:lrows:NAME:GEN:u3``), so a big set spreads over the nodes like the users'
state; the pointer, the generations and the cards stay in the prefix's own slot, which the
switch's script touches together.
"""

from __future__ import annotations

import secrets
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import redis

from recommender.base import LISTS_PREFIX, ItemId, Scored, UserId
from recommender.engine import Reads
from recommender.lists import ITEM, USER, ListRow, Rejections, blend_fresh
from streamrec.storage import keys

DUPLICATE = "duplicate: listed on an earlier line, which wins"

# KEYS: the pointers, the generations, the model cards. ARGV: name, generation, pointer
# JSON, card JSON, now. The generation must still be registered as being written (another
# import's cleanup may have deleted it): else nothing changes.
SWAP = """
local field = ARGV[1] .. '|' .. ARGV[2]
if redis.call('HEXISTS', KEYS[2], field) == 0 then
  return redis.error_reply('generation ' .. ARGV[2] .. ' of ' .. ARGV[1] .. ' was deleted')
end
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[3], 'lists:' .. ARGV[1], ARGV[4])
redis.call('HDEL', KEYS[2], field)
if old then
  local previous = cjson.decode(old)['generation']
  redis.call('HSET', KEYS[2], ARGV[1] .. '|' .. previous,
             cjson.encode({state = 'retired', at = tonumber(ARGV[5])}))
  return previous
end
return false
"""


class ListSetError(ValueError):
    """A list set that cannot be read or written as asked."""


def pack(items: list[ItemId], scores: list[float]) -> bytes:
    """One list as stored: the items as JSON, a newline, the scores as float32.

    >>> unpack(pack(["tea", "cup"], [0.5, 0.25]))
    [('tea', 0.5), ('cup', 0.25)]
    """
    return orjson.dumps(items) + b"\n" + np.asarray(scores, dtype=np.float32).tobytes()


def unpack(raw: bytes) -> list[Scored]:
    cut = raw.index(b"\n")  # JSON text never holds a raw newline; the scores may
    items = orjson.loads(raw[:cut])
    # float32's shortest decimal (0.9, not 0.8999999761581421), as the job wrote it.
    scores = [float(f"{score:.7g}") for score in np.frombuffer(raw[cut + 1:], np.float32)]
    return list(zip(items, scores, strict=True))


def bucket(kind: str, owner: str) -> str:
    """The bucket of ``owner``'s list (``u3``: a user's, ``i7``: an item's)."""
    return f"{kind[0]}{zlib.crc32(owner.encode()) % keys.SHARDS}"


def new_generation() -> str:
    """A generation name that sorts by time and never repeats."""
    return f"{int(time.time() * 1000):x}{secrets.token_hex(3)}"


@dataclass
class Written:
    """What a generation holds once written."""

    users: int = 0
    item_lists: int = 0
    items: set[ItemId] = field(default_factory=set)


class GenerationWriter:
    """Writes one generation's lists in pipelined batches (``HSETNX``: a repeated owner
    keeps its first list and the repeat is rejected, counted in ``rejected``)."""

    def __init__(self, sets: ListSets, name: str, generation: str, rejected: Rejections,
                 batch: int = 2000) -> None:
        self.sets = sets
        self.name = name
        self.generation = generation
        self.rejected = rejected
        self.batch = batch
        self.written = Written()
        self._pending: list[ListRow] = []

    def add(self, row: ListRow) -> None:
        self._pending.append(row)
        if len(self._pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        pipe = self.sets.client.pipeline(transaction=False)
        for row in self._pending:
            pipe.hsetnx(self.sets.rows_key(self.name, self.generation, bucket(row.kind,
                                                                               row.owner)),
                        row.owner, pack(row.items, row.scores))
        for row, added in zip(self._pending, pipe.execute(), strict=True):
            if not added:
                self.rejected.add(DUPLICATE, row.line)
                continue
            if row.kind == USER:
                self.written.users += 1
            else:
                self.written.item_lists += 1
            self.written.items.update(row.items)
        self._pending.clear()
        self.sets.touch(self.name, self.generation)


class ListSets:
    """The list sets of one app (its shared prefix).

    Parameters
    ----------
    client
        Redis.
    prefix
        The app's shared prefix (a hash tag on a cluster).
    refresh_seconds
        How stale the in-process copy of the pointers may be.
    grace_seconds
        How long a retired generation stays readable: longer than ``refresh_seconds``
        plus a request's own time.
    rank_constant
        The blend's reciprocal-rank constant (the hybrid's).
    """

    def __init__(self, client: redis.Redis, prefix: str, refresh_seconds: float = 1.0,
                 grace_seconds: float = 5.0, rank_constant: float = 60.0) -> None:
        self.client = client
        self.prefix = prefix
        self.sharded = keys.is_tagged(prefix)
        self.refresh_seconds = refresh_seconds
        self.grace_seconds = grace_seconds
        self.rank_constant = rank_constant
        self.pointers_key = keys.key(prefix, keys.LIST_SETS)
        self.generations_key = keys.key(prefix, keys.LIST_GENERATIONS)
        self.cards_key = keys.key(prefix, keys.MODEL_CARDS)
        self._swap = client.register_script(SWAP)
        self._cached: tuple[float, dict[str, dict[str, Any]]] = (-float("inf"), {})
        self._reading = threading.Lock()

    # -- keys -------------------------------------------------------------------------

    def rows_key(self, name: str, generation: str, part: str) -> str:
        base = keys.group_prefix(self.prefix, part) if self.sharded else self.prefix
        return keys.key(base, keys.LIST_ROWS, name, generation, part)

    def _generation_keys(self, name: str, generation: str) -> list[str]:
        return [self.rows_key(name, generation, f"{kind}{n}")
                for kind in "ui" for n in range(keys.SHARDS)]

    # -- pointers ---------------------------------------------------------------------

    def all(self) -> dict[str, dict[str, Any]]:
        """Every set's pointer (its generation and metadata), read now."""
        raw = self.client.hgetall(self.pointers_key)
        return {name.decode(): orjson.loads(value) for name, value in sorted(raw.items())}

    def get(self, name: str) -> dict[str, Any] | None:
        raw = self.client.hget(self.pointers_key, name)
        return None if raw is None else orjson.loads(raw)

    def current(self, name: str) -> dict[str, Any] | None:
        """``name``'s pointer as this process last read it (at most ``refresh_seconds``
        ago): one read of every pointer a second, not one per request. A name the copy
        does not hold is read at once (a set imported a moment ago serves at once)."""
        read_at, pointers = self._cached
        if time.monotonic() - read_at > self.refresh_seconds:
            with self._reading:
                read_at, pointers = self._cached
                if time.monotonic() - read_at > self.refresh_seconds:
                    pointers = self.all()
                    self._cached = (time.monotonic(), pointers)
        found = pointers.get(name)
        if found is None:
            found = self.get(name)
            if found is not None:
                with self._reading:
                    read_at, pointers = self._cached
                    self._cached = (read_at, {**pointers, name: found})
        return found

    def card(self, name: str) -> dict[str, Any] | None:
        raw = self.client.hget(self.cards_key, LISTS_PREFIX + name)
        return None if raw is None else orjson.loads(raw)

    # -- writing ----------------------------------------------------------------------

    def begin(self, name: str, rejected: Rejections, batch: int = 2000) -> GenerationWriter:
        """A writer of a new generation of ``name``, registered so that a crash leaves
        something to clean; generations an earlier import left behind are deleted first
        (one import of a set at a time)."""
        self.clean(name)
        generation = new_generation()
        self.touch(name, generation)
        return GenerationWriter(self, name, generation, rejected, batch)

    def touch(self, name: str, generation: str) -> None:
        self.client.hset(self.generations_key, f"{name}|{generation}",
                         orjson.dumps({"state": "writing", "at": time.time()}))

    def swap(self, name: str, generation: str, pointer: dict[str, Any],
             card: dict[str, Any]) -> str | None:
        """Make ``generation`` the set's current one, with its card; the generation it
        replaces (retired, deleted by :meth:`retire`) or None."""
        try:
            previous = self._swap(
                keys=[self.pointers_key, self.generations_key, self.cards_key],
                args=[name, generation, orjson.dumps({**pointer, "generation": generation}),
                      orjson.dumps(card), time.time()])
        except redis.ResponseError as error:
            raise ListSetError(f"lists {name}: {error} (another import of the same set "
                               "cleaned it up: import again)") from None
        self._cached = (-float("inf"), {})
        return None if previous is None else previous.decode()

    def retire(self, name: str, generation: str, wait: bool = True) -> None:
        """Delete a retired generation, after the grace (``wait``) readers may need."""
        if wait:
            time.sleep(self.grace_seconds)
        self.drop(name, generation)

    def drop(self, name: str, generation: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        for name_key in self._generation_keys(name, generation):
            pipe.unlink(name_key)  # freed by Redis in the background, however big
        pipe.execute()
        self.client.hdel(self.generations_key, f"{name}|{generation}")

    def leftovers(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        """Generations of ``name`` that are not current: being written, or retired."""
        found = []
        for raw, value in self.client.hgetall(self.generations_key).items():
            owner, _, generation = raw.decode().rpartition("|")
            if owner == name:
                found.append((generation, orjson.loads(value)))
        return sorted(found)

    def clean(self, name: str, now: float | None = None) -> int:
        """Delete what earlier imports of ``name`` left: generations being written (an
        import that died) and retired ones past their grace; how many."""
        now = time.time() if now is None else now
        dropped = 0
        for generation, state in self.leftovers(name):
            if state["state"] == "writing" or state["at"] + self.grace_seconds <= now:
                self.drop(name, generation)
                dropped += 1
        return dropped

    def delete(self, name: str) -> bool:
        """Delete set ``name`` whole (its pointer, card and every generation); False if
        there was no such set."""
        pointer = self.get(name)
        pipe = self.client.pipeline(transaction=False)  # a card left alone is harmless
        pipe.hdel(self.pointers_key, name)
        pipe.hdel(self.cards_key, LISTS_PREFIX + name)
        pipe.execute()
        self._cached = (-float("inf"), {})
        leftovers = self.leftovers(name)
        for generation, _ in leftovers:
            self.drop(name, generation)
        if pointer is not None:
            time.sleep(min(self.grace_seconds, 2 * self.refresh_seconds))
            self.drop(name, pointer["generation"])
        return pointer is not None or bool(leftovers)

    # -- reading ----------------------------------------------------------------------

    def read(self, name: str, generation: str, owner: str, kind: str = USER
             ) -> list[Scored] | None:
        raw = self.client.hget(self.rows_key(name, generation, bucket(kind, owner)), owner)
        return None if raw is None else unpack(raw)

    def model(self, name: str) -> ImportedLists | None:
        """The ranker of ``lists:NAME`` as the set stands, or None when there is no set."""
        pointer = self.current(name)
        return None if pointer is None else ImportedLists(self, name, pointer)

    def resolver(self) -> Callable[[str], ImportedLists | None]:
        """``lists:NAME`` -> its ranker (None for another model or a set not imported)."""
        def resolve(model: str) -> ImportedLists | None:
            if not model.startswith(LISTS_PREFIX):
                return None
            return self.model(model.removeprefix(LISTS_PREFIX))

        return resolve


class ImportedLists:
    """``lists:NAME``: a user's imported list, optionally fused with the co-occurrence
    neighbours of what they touched since it was made (``blend``); a user without a list
    is ranked by ``fallback`` (:class:`recommender.engine.ExternalModel`)."""

    def __init__(self, sets: ListSets, name: str, pointer: dict[str, Any]) -> None:
        self.sets = sets
        self.name = name
        self.generation = pointer["generation"]
        self.made_at = float(pointer["made_at"])
        self.blend = float(pointer.get("blend") or 0.0)
        self.fallback: str | None = pointer.get("fallback")

    def user_list(self, user_id: UserId) -> list[Scored] | None:
        return self.sets.read(self.name, self.generation, user_id)

    def similar(self, item_id: ItemId) -> list[Scored] | None:
        """The item's similar-item list (a set imported with ``--similar``), or None."""
        return self.sets.read(self.name, self.generation, item_id, ITEM)

    def rank(self, reads: Reads, n: int) -> list[Scored] | None:
        listed = reads.memo(("lists", self.name, self.generation),
                            lambda: self.user_list(reads.user_id) or [])
        if not listed:
            return None
        if self.blend <= 0:
            return listed[:n]
        # What the user touched since the set was made: the list could not know it.
        since = [item for item, at in reads.history if at > self.made_at]
        if not since:
            return listed[:n]
        size = max(n, len(listed))
        fresh = reads.engine.cooccurrence_candidates(since, size, reads.seen)
        return blend_fresh(listed, [item for item, _ in fresh], self.blend,
                           self.sets.rank_constant)[:n]


__all__ = ["ITEM", "USER", "ImportedLists", "ListSetError", "ListSets", "unpack"]
