"""The Redis implementation of :class:`recommender.store.StateStore`.

Reads are pipelined (one round trip per call). On one Redis, :meth:`RedisStore.apply` writes
a whole batch in one Lua call, so readers never see half a batch. On a Redis Cluster (a
prefix written as a hash tag, see :mod:`streamrec.storage.keys`) a batch is one Lua call per group
of slots, each recording the offsets it applied; ``streams.catchup`` replays exactly what a
crash left unapplied, with the methods beyond the protocol's roles that only a Redis batch
path needs (:meth:`RedisStore.group_markers`, :meth:`RedisStore.user_group`,
:meth:`RedisStore.deletion_count`, :meth:`RedisStore.delete_again`).
"""

from __future__ import annotations

import bisect
import time
import uuid
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import orjson
import redis

from recommender.availability import Withdrawals, WithdrawalsMirror, withdrawn_at
from recommender.base import Category, ItemId, Scored, UserId
from recommender.cooccurrence import CodedNeighbours, coded
from recommender.decay import RESCALE_HALF_LIVES, Decayed, ForwardDecay
from recommender.once import DEFAULT_WINDOW_SECONDS, DuplicateEvents, bucket, buckets_kept
from recommender.popularity import category_moves
from recommender.store import (
    USER_FACTOR_DTYPE,
    FirstRead,
    NonFiniteError,
    StateUpdate,
    check_finite,
)
from streamrec.storage import keys
from streamrec.storage import scripts as redis_scripts
from streamrec.storage.client import connect, is_cluster

GLOBAL = "global"  # the group of a version's global state (popularity, counts, changes)
PAUSE_POLL_SECONDS = 0.02  # how often a paused APPLY (a snapshot being saved) is retried
# An item's neighbour list this long or longer is kept in Redis's skiplist encoding (see
# APPLY): Redis's own default for zset-max-listpack-entries, which we raise to 256 for the
# histories. Below it a listpack's linear writes cost less than a skiplist's bytes.
NEIGHBOURS_SKIPLIST_FROM = 128
# The APPLY script's names for the kinds of a user group ("u") and of an item group ("i").
_GROUP_SCRIPT_KINDS = {
    "u": (("hist", keys.HISTORY), ("mfu", keys.MF_USER), ("evtypes", keys.EVENT_TYPES)),
    "i": (("nbr", keys.NEIGHBOURS), ("mfi", keys.MF_ITEM)),
}


ITEM_FACTOR_DTYPE = np.dtype("<f4")

# The LANDMARKS fields of the decayed kinds, as the APPLY script names them (it appends
# the category or item).
_LANDMARK_FIELDS = {"pop": keys.landmark_field(keys.POPULAR),
                    "popcat": keys.landmark_field(keys.POPULAR_BY_CATEGORY, ""),
                    "cnt": keys.landmark_field(keys.ITEM_COUNT),
                    "nbr": keys.landmark_field(keys.NEIGHBOURS, "")}
# Each StateUpdate field's kind of key, to name a refused value's key.
_UPDATE_KINDS = {"popularity": keys.POPULAR, "category_popularity": keys.POPULAR_BY_CATEGORY,
                 "item_counts": keys.ITEM_COUNT, "pairs": keys.NEIGHBOURS,
                 "history": keys.HISTORY, "user_factors": keys.MF_USER,
                 "item_factors": keys.MF_ITEM}


def _pack(vector: np.ndarray, dtype: np.dtype) -> bytes:
    return np.asarray(vector, dtype=dtype).tobytes()


def _score(row: tuple[bytes, bytes | float]) -> float:
    return float(row[1])


def _unpack(raw: bytes, dtype: np.dtype) -> np.ndarray:
    return np.frombuffer(raw, dtype=dtype).astype(np.float32)


def _non_finite(error: redis.ResponseError) -> Exception:
    """A script's refusal of a NaN or an infinity as NonFiniteError (the key and member);
    any other error as it came."""
    if redis_scripts.NON_FINITE in str(error):
        return NonFiniteError(str(error).split(redis_scripts.NON_FINITE, 1)[1].strip())
    return error


def _flat(mapping: Mapping[str, Any]) -> list[Any]:
    """``{a: 1, b: 2}`` as ``[a, 1, b, 2]``: what the scripts loop over."""
    return list(chain.from_iterable(mapping.items()))  # half the time of a comprehension


def _joined(event_types: Iterable[str]) -> str:
    return redis_scripts.EVENT_TYPE_SEPARATOR.join(sorted(event_types))


_MARKER = redis_scripts.HISTORY_MARKER.encode()


def _window(flat: list[Any]) -> list[Scored]:
    """One user's answer of the WINDOWS script: [layout, item, score, ...]."""
    if not flat[0]:
        return [(flat[n], float(flat[n + 1]) / 1000) for n in range(1, len(flat), 2)]
    return _times([(flat[n], int(float(flat[n + 1]))) for n in range(1, len(flat), 2)])


def _decode(pairs: list[tuple[bytes, float]]) -> list[Scored]:
    return [(member.decode(), score) for member, score in pairs]


# History times are stored as whole milliseconds: an integer score is kept in a listpack as
# an 8-byte integer, a fractional one as its decimal text (18 bytes on Redis 7.0, ~14 on
# 7.4), so this saves ~10 bytes per history entry. Reads divide back into seconds.
def _milliseconds(scores: Mapping[ItemId, float]) -> dict[ItemId, int]:
    return {item: round(score * 1000) for item, score in scores.items()}


def _history(reply: list[Any], limit: int) -> list[Scored]:
    """A history read newest first (:func:`_heaviest_first`'s reply, ``limit`` + 1 rows:
    room for the marker), as times in seconds, in either layout (scripts.HISTORY_MARKER)."""
    members, scores = _members_and_scores(reply)
    if not members or members[0] != _MARKER:
        return [(member.decode(), score / 1000)
                for member, score in zip(members[:limit], scores, strict=False)]
    # _times' order, sorted on the bytes as they came: each member decoded once, after
    # (every request's first read decodes ~200 of them).
    span = redis_scripts.HISTORY_SPAN
    rows = sorted(zip([int(score) // span for score in scores[1:limit + 1]],
                      members[1:limit + 1], strict=True), reverse=True)
    return [(member.decode(), at / 1000) for at, member in rows]


def _heaviest_first(client: Any, key: str, last: int) -> Any:
    """Send (or queue on a pipeline) a read of a sorted set's rows 0 to ``last``, highest
    score first, with their scores: a history (newest first) or a neighbour list. As a
    command, not ``zrange(withscores=True)``: redis-py's pairing casts each score in a
    Python call (``zset_score_pairs``), a fifth of a neighbour read's CPU, and a first read
    takes ~200 rows; :func:`_members_and_scores` splits and casts the reply in C."""
    return client.execute_command("ZREVRANGE", key, 0, last, "WITHSCORES")


def _times(rows: list[tuple[bytes | str, int]]) -> list[Scored]:
    """Rows of the marked layout (score ms * span + mask) as (item, seconds), newest first
    and, within a millisecond, in the order of the layout before (item, descending)."""
    span = redis_scripts.HISTORY_SPAN
    found = [(member if isinstance(member, str) else member.decode(), score // span)
             for member, score in rows]
    found.sort(key=_time_then_item, reverse=True)
    return [(item, at / 1000) for item, at in found]


def _time_then_item(row: tuple[str, int]) -> tuple[int, bytes]:
    return row[1], row[0].encode()


def _part(update: StateUpdate, **fields: Any) -> StateUpdate:
    """An update with ``update``'s limits and frame and only ``fields``: one group's
    share."""
    return StateUpdate(history_length=update.history_length,
                       max_neighbours=update.max_neighbours, reference=update.reference,
                       half_life=update.half_life, epoch=update.epoch,
                       popularity_half_life=update.popularity_half_life, **fields)


def _members_and_scores(reply: list[Any]) -> tuple[list[bytes], list[float]]:
    """A ``ZRANGE ... WITHSCORES`` reply as it comes, as its members and their scores:
    ``[member, score, ...]`` with RESP2 (``streamrec.storage.client.connect``), ``[[member,
    score], ...]`` with RESP3."""
    if reply and isinstance(reply[0], list):
        return [row[0] for row in reply], [float(row[1]) for row in reply]
    return reply[::2], list(map(float, reply[1::2]))


def _landmark(raw: bytes | None) -> float | None:
    return None if raw is None else float(raw)


def _popular_found(rows: list[tuple[bytes, float]], landmark: bytes | None
                   ) -> Decayed[list[Scored]]:
    return Decayed(_decode(rows), _landmark(landmark))


def _payload(update: StateUpdate) -> dict[str, Any]:
    """The APPLY document for ``update``'s state (offsets and counters come separately)."""
    return {
        "max_neighbours": update.max_neighbours,
        "skiplist_from": NEIGHBOURS_SKIPLIST_FROM,
        "history_length": update.history_length,
        "pop": _flat(update.popularity),
        "popcat": [part for category, increments in update.category_popularity.items()
                   for part in (category, _flat(increments))],
        "cnt": _flat(update.item_counts),
        "pairs": [part for item, increments in update.pairs.items()
                  for part in (item, _flat(increments))],
        "hist": [part for user, scores in update.history.items()
                 for part in (user, _flat(_milliseconds(scores)))],
        "mfu": list(update.user_factors),
        "mfi": list(update.item_factors),
        "mfchg": list(update.item_factors),
        "types": [part for user, items in update.event_types.items()
                  for part in (user, _flat({item: _joined(types)
                                            for item, types in items.items()}))],
        # The frame of the decayed increments and the rule's constants
        # (recommender.decay.renormalise, mirrored by the script).
        "blend": _flat(update.blend),
        "blend_memory": update.blend_memory,
        "decay": {"reference": update.reference, "half_life": update.half_life,
                  "popularity_half_life": update.popularity_half_life or update.half_life,
                  "epoch": update.epoch, "rescale_half_lives": RESCALE_HALF_LIVES}
        if update.has_decayed() else {},
        "lf": _LANDMARK_FIELDS,
        "claims": [part for claim in update.claims
                   for part in (claim.event_id, claim.position, bucket(claim.received))],
        "duplicates": update.duplicates,
        "fbwait": [part for entry, give_up in update.waiting_feedback
                   for part in (give_up, entry)],
    }


@dataclass(frozen=True)
class ChangeCursor:
    """Where a read of a change index stopped: its time, and the changes it read that
    the next read reaches back to, which that read leaves out."""

    at: float
    seen: frozenset[tuple[bytes, bytes | float]]  # (member, change time as read)


class KeptPopular:
    """The overall popular prefix a serving process read last (items and scores as
    stored, with their landmark), kept for ``seconds``: a request whose first read needs
    no longer a prefix takes it from here instead of reading and decoding the same few
    hundred rows as every other request. Each request still reads its user's history, so
    what a user just did is served at once; only the order of popular items may lag by
    up to ``seconds``. Shared by the serving threads: one tuple, replaced whole."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._kept: tuple[float, int, Decayed[list[Scored]]] | None = None

    def get(self, size: int) -> Decayed[list[Scored]] | None:
        """The first ``size`` rows, if a read of at least that many is young enough.

        >>> now = [0.0]
        >>> kept = KeptPopular(0.1, lambda: now[0])
        >>> kept.put(3, Decayed([("a", 3.0), ("b", 2.0)], 7.0))  # the list had only 2
        >>> kept.get(1)
        Decayed(scores=[('a', 3.0)], landmark=7.0)
        >>> kept.get(3).scores, kept.get(4)
        ([('a', 3.0), ('b', 2.0)], None)
        >>> now[0] = 0.2
        >>> kept.get(1) is None
        True
        """
        kept = self._kept
        if kept is None or size > kept[1] or self.clock() - kept[0] > self.seconds:
            return None
        found = kept[2]
        return Decayed(found.scores[:size], found.landmark)

    def put(self, size: int, found: Decayed[list[Scored]]) -> None:
        """Keep ``found``, a read of the first ``size`` rows, made just now."""
        self._kept = (self.clock(), size, found)


class RedisStore:
    # How far back a change-cursor read reaches: covers clock skew between workers and a
    # transaction that took its timestamp before a read but committed after it.
    CHANGE_OVERLAP_SECONDS = 5.0

    def __init__(self, client: redis.Redis, prefix: str = "sr",
                 catalog_prefix: str | None = None,
                 dedup_window: float = DEFAULT_WINDOW_SECONDS,
                 withdrawn_mirror_max: int = 100_000,
                 popular_cache_seconds: float = 0.0) -> None:
        self.client = client
        self.dedup_window = dedup_window
        self.prefix = prefix
        # A model version's state lives under its own prefix; the catalog and everything
        # else shared by the versions under the base one (see keys.STATE).
        self.catalog_prefix = catalog_prefix or prefix
        self.cluster = is_cluster(client)
        # A tagged prefix spreads per-user and per-item state over groups of slots.
        self.sharded = keys.is_tagged(prefix)
        if self.cluster and not (self.sharded and keys.is_tagged(self.catalog_prefix)):
            raise ValueError(
                f"on a Redis Cluster the key prefixes must be hash tags such as '{{sr}}' "
                f"(got {prefix!r} and {self.catalog_prefix!r}); STREAMREC_REDIS_CLUSTER=true "
                "makes them so")
        self._apply = client.register_script(redis_scripts.APPLY)
        self._recategorise_script = client.register_script(redis_scripts.RECATEGORISE)
        self._windows = client.register_script(redis_scripts.WINDOWS)
        self._forget_users = client.register_script(redis_scripts.FORGET_USERS)
        self._interaction_types = client.register_script(redis_scripts.INTERACTION_TYPES)
        self._rewrite_histories = client.register_script(redis_scripts.REWRITE_HISTORIES)
        self._read_withdrawn = client.register_script(redis_scripts.READ_WITHDRAWN)
        # This process's copy of the withdrawal times, for first_read (serving).
        self.withdrawals_mirror = WithdrawalsMirror(withdrawn_mirror_max)
        # ... and of the popular prefix, for first_read too.
        self.kept_popular = (KeptPopular(popular_cache_seconds) if popular_cache_seconds > 0
                             else None)
        self._withdrawn_keys = [self.key(keys.WITHDRAWN), self.key(keys.WITHDRAWN_VERSION)]
        self._groups = {f"{kind}{n}": keys.group_prefix(prefix, f"{kind}{n}")
                        for kind in "ui" for n in range(keys.SHARDS)} if self.sharded else {}
        # Each kind's key prefix, per group; the scripts append the id (ids always come
        # last). Unsharded, every kind is in the one group.
        self._key_prefixes = {
            name: self.key(kind, "")
            for name, kind in (("pop", keys.POPULAR), ("popcat", keys.POPULAR_BY_CATEGORY),
                               ("cnt", keys.ITEM_COUNT), ("nbr", keys.NEIGHBOURS),
                               ("hist", keys.HISTORY), ("mfu", keys.MF_USER),
                               ("mfi", keys.MF_ITEM), ("evtypes", keys.EVENT_TYPES))
        } | {"pop": self.key(keys.POPULAR), "cnt": self.key(keys.ITEM_COUNT),
             "mfchg": self.key(keys.MF_CHANGED), "stats": self.key(keys.STATS),
             "lm": self.key(keys.LANDMARKS), "seen": self.key(keys.SEEN, ""),
             "seenbk": self.key(keys.SEEN_BUCKETS),
             "fbwait": self.key(keys.FEEDBACK_WAITING)}
        self._group_key_prefixes = {
            group: {name: keys.key(tagged, kind, "")
                    for name, kind in _GROUP_SCRIPT_KINDS[group[0]]}
            | {"lm": keys.key(tagged, keys.LANDMARKS)}
            for group, tagged in self._groups.items()}

    @classmethod
    def from_url(cls, url: str, prefix: str = "sr", catalog_prefix: str | None = None,
                 cluster: bool = False) -> RedisStore:
        return cls(connect(url, cluster, socket_timeout=5, health_check_interval=30),
                   prefix, catalog_prefix)

    def key(self, kind: str, *parts: str) -> str:
        if kind not in keys.STATE:
            return keys.key(self.catalog_prefix, kind, *parts)
        if self.sharded and parts and parts[0]:
            if kind in keys.USER_SHARDED:
                return keys.key(self._groups[self.group("u", parts[0])], kind, *parts)
            if kind in keys.ITEM_SHARDED:
                return keys.key(self._groups[self.group("i", parts[0])], kind, *parts)
        return keys.key(self.prefix, kind, *parts)

    @staticmethod
    def group(kind: str, entity: str) -> str:
        """The group (``"u3"``, ``"i7"``) of a user's or an item's state, sharded."""
        return f"{kind}{zlib.crc32(entity.encode()) % keys.SHARDS}"

    @classmethod
    def user_group(cls, user_id: UserId) -> str:
        """The group of ``user_id``'s state: what a replay of a half-applied batch on a
        cluster asks (``streams.catchup``; :meth:`group_markers` names the groups)."""
        return cls.group("u", user_id)

    def _marker(self, group: str) -> str:
        """The hash of offsets a group applied (unsharded: the state's own offsets)."""
        if not self.sharded:
            return self.key(keys.OFFSETS)
        if group == GLOBAL:
            return keys.key(self.prefix, keys.APPLIED)
        return keys.key(self._groups[group], keys.APPLIED)

    def _mget(self, names: list[str]) -> list[bytes | None]:
        # MGET must stay in one slot on a cluster; redis-py splits it by slot there.
        if self.cluster:
            return self.client.mget_nonatomic(names)
        return self.client.mget(names)

    def windows(self, user_ids: Iterable[UserId], limit: int) -> dict[UserId, list[Scored]]:
        by_group: dict[str, list[UserId]] = defaultdict(list)
        for user in user_ids:
            by_group[self.group("u", user) if self.sharded else GLOBAL].append(user)
        found: dict[UserId, list[Scored]] = {}
        for group, users in by_group.items():
            prefix = (self._group_key_prefixes[group]["hist"] if self.sharded
                      else self._key_prefixes["hist"])
            raw = self._windows(keys=[self._marker(group)], args=[prefix, limit, *users])
            rows = orjson.loads(raw)
            found.update({user: _window(flat) for user, flat in zip(users, rows, strict=True)})
        return found

    def history(self, user_id: UserId, limit: int) -> list[Scored]:
        return _history(_heaviest_first(self.client, self.key(keys.HISTORY, user_id), limit),
                        limit)

    def histories(self, user_ids: Iterable[UserId], limit: int) -> dict[UserId, list[Scored]]:
        users = list(user_ids)
        pipe = self.client.pipeline(transaction=False)
        for user in users:
            _heaviest_first(pipe, self.key(keys.HISTORY, user), limit)
        return {user: _history(rows, limit)
                for user, rows in zip(users, pipe.execute(), strict=True)}

    def user_state(self, user_id: UserId, limit: int) -> tuple[list[Scored], np.ndarray | None]:
        rows, raw = self._user_reads(user_id, limit, True).execute()
        return _history(rows, limit), None if raw is None else _unpack(raw, USER_FACTOR_DTYPE)

    def first_read(self, user_id: UserId, limit: int, factors: bool = True,
                   popular: int = 0) -> FirstRead:
        """The history (and factors, and the popular prefix, unless this process's copy of
        it is young enough: :class:`KeptPopular`) with the version of the
        withdrawal times, in one round trip (on a cluster, one per node, in parallel); the
        times come from this process's copy when it holds that version
        (:class:`WithdrawalsMirror`), else from a reload of the copy when one is due, else
        not at all (the request screens with :meth:`screen`, as without a copy)."""
        kept = self.kept_popular
        found = kept.get(popular) if popular > 0 and kept is not None else None
        read_popular = popular > 0 and found is None
        pipe = self._user_reads(user_id, limit, factors)
        pipe.get(self._withdrawn_keys[1])
        if read_popular:
            self._popular_reads(pipe, popular, None)
        replies = pipe.execute()
        if read_popular:
            found = _popular_found(*replies[-2:])
            replies = replies[:-2]
            if kept is not None:
                kept.put(popular, found)
        rows, *raw, version = replies
        vector = raw[0] if raw else None
        return FirstRead(_history(rows, limit),
                         None if vector is None else _unpack(vector, USER_FACTOR_DTYPE),
                         self._withdrawals(None if version is None else version.decode()),
                         found)

    def _user_reads(self, user_id: UserId, limit: int, factors: bool) -> Any:
        pipe = self.client.pipeline(transaction=False)
        _heaviest_first(pipe, self.key(keys.HISTORY, user_id), limit)
        if factors:
            pipe.get(self.key(keys.MF_USER, user_id))
        return pipe

    def _withdrawals(self, version: str | None) -> Withdrawals | None:
        mirror = self.withdrawals_mirror
        found = mirror.current(version)
        if found is not None or not mirror.claim_reload(version):
            return found
        # The times and their version at one point, a newer one than the request read
        # perhaps: newer times honour all it must, and the next requests find them.
        read, size, flat = self._read_withdrawn(keys=self._withdrawn_keys,
                                                args=[mirror.max_entries])
        times = ({flat[n].decode(): float(flat[n + 1]) for n in range(0, len(flat), 2)}
                 if size <= mirror.max_entries else None)
        return mirror.reloaded(None if read is None else read.decode(), times, size)

    def user_ids(self, count: int = 1000) -> Iterator[UserId]:
        """SCAN over the history keys, ``count`` keys per round trip (every node's)."""
        if self.sharded:
            (match,) = keys.group_patterns(self.prefix, kind=keys.HISTORY, groups="u")
            cut = "}:" + keys.HISTORY + ":"  # ids come last: the first one is the key's
            for name in self.client.scan_iter(match=match, count=count):
                yield name.decode().split(cut, 1)[1]
            return
        start = len(self.key(keys.HISTORY, "").encode())
        for name in self.client.scan_iter(match=keys.pattern(self.prefix, keys.HISTORY),
                                          count=count):
            yield name[start:].decode()

    def rewrite_histories(self, batch: int = 500,
                          progress: Callable[[int], None] | None = None) -> int:
        """Rewrite every history of the layout before into the scored one
        (scripts.HISTORY_MARKER), ``batch`` users per call, each user atomically, beside a
        running worker (which does the same on touch); returns how many it rewrote.
        ``progress`` is called with the number of users looked at by each call."""
        rewritten = 0
        by_group: dict[str, list[UserId]] = defaultdict(list)

        def flush(group: str) -> None:
            nonlocal rewritten
            users = by_group.pop(group)
            prefixes = (self._group_key_prefixes[group] if self.sharded
                        else self._key_prefixes)
            pause = self._pause_key(group)
            while (done := self._rewrite_histories(
                    keys=[pause], args=[prefixes["hist"], prefixes["evtypes"], *users])) == -1:
                time.sleep(PAUSE_POLL_SECONDS)  # a snapshot is being saved
            rewritten += done
            if progress is not None:
                progress(len(users))

        for user in self.user_ids():
            group = self.group("u", user) if self.sharded else GLOBAL
            by_group[group].append(user)
            if len(by_group[group]) >= batch:
                flush(group)
        for group in list(by_group):
            flush(group)
        return rewritten

    def apply(self, update: StateUpdate) -> None:
        """Unsharded, the whole batch in one Lua call: atomic, one round trip, one packed
        argument. Sharded, one call per group, in the order ``streams.catchup`` relies on:
        the global state and the item groups, then the user groups (whose histories the
        next batch's windows read), then the offsets.

        Raises :class:`~recommender.store.NonFiniteError` naming the key and member of a
        NaN or an infinity, in the update (before any call) or computed by a call (before
        that call writes anything)."""
        check_finite(update, self._name)
        self._check_history(update)
        offsets = _flat(update.offsets)
        if not self.sharded:
            self._call(GLOBAL, self._key_prefixes, _payload(update), offsets, update.events,
                       update.user_factors, update.item_factors)
            return
        # The claims go with the global state, the first call: a refusal writes nothing.
        users: dict[str, StateUpdate] = defaultdict(lambda: _part(update))
        items: dict[str, StateUpdate] = defaultdict(lambda: _part(update))
        for item, increments in update.pairs.items():
            items[self.group("i", item)].pairs[item] = increments  # type: ignore[index]
        for item, vector in update.item_factors.items():
            items[self.group("i", item)].item_factors[item] = vector  # type: ignore[index]
        for user, scores in update.history.items():
            users[self.group("u", user)].history[user] = scores  # type: ignore[index]
        for user, vector in update.user_factors.items():
            users[self.group("u", user)].user_factors[user] = vector  # type: ignore[index]
        for user, types in update.event_types.items():
            users[self.group("u", user)].event_types[user] = types  # type: ignore[index]
        overall = _part(update, popularity=update.popularity, item_counts=update.item_counts,
                        category_popularity=update.category_popularity, claims=update.claims,
                        waiting_feedback=update.waiting_feedback)
        self._call(GLOBAL, self._key_prefixes, _payload(overall) | {"mfchg": []}, offsets,
                   0, {}, {})
        for groups in (items, users):
            for group, part in sorted(groups.items()):
                self._call(group, self._group_key_prefixes[group],
                           _payload(part) | {"mfchg": []}, offsets, 0, part.user_factors,
                           part.item_factors)
        # The changed items are listed once their factors are all written: a refresh that
        # finds an item listed reads its new vector (changed_items reads each change once).
        tally = _part(update, blend=update.blend, blend_memory=update.blend_memory,
                      duplicates=update.duplicates)
        self._call(None, self._key_prefixes,
                   _payload(tally) | {"mfchg": list(update.item_factors)}, offsets,
                   update.events, {}, {})

    # The history's scores are ms * HISTORY_SPAN + mask: exact in a double while |ms| is
    # below this (times within 8,900 years of 1970).
    LATEST_HISTORY_SECONDS = 2 ** 53 // redis_scripts.HISTORY_SPAN // 1000 - 1

    def _check_history(self, update: StateUpdate) -> None:
        """Refuse (ValueError, before any call) what the history layout cannot hold: an
        empty item id (the layout's marker) or a time too far from 1970."""
        limit = self.LATEST_HISTORY_SECONDS
        for user, scores in update.history.items():
            if redis_scripts.HISTORY_MARKER in scores:
                raise ValueError(f"history of user {user!r}: an empty item id")
            if scores and max(map(abs, scores.values())) > limit:
                at = max(scores.values(), key=abs)
                raise ValueError(f"history of user {user!r}: time {at!r} is more than "
                                 f"{limit} seconds from 1970")

    def _call(self, group: str | None, prefixes: Mapping[str, str], payload: dict[str, Any],
              offsets: list[Any], events: int, user_factors: Mapping[str, np.ndarray],
              item_factors: Mapping[str, np.ndarray]) -> None:
        """One APPLY: ``group`` None is the commit (the state's offsets and counters)."""
        marker = self.key(keys.OFFSETS) if group is None else self._marker(group)
        payload |= {"k": prefixes, "offsets": offsets, "events": events,
                    "changed_at": time.time(), "seen_kept": buckets_kept(self.dedup_window),
                    "pause": self._pause_key(group)}
        vectors = [_pack(v, USER_FACTOR_DTYPE) for v in user_factors.values()]
        vectors += [_pack(v, ITEM_FACTOR_DTYPE) for v in item_factors.values()]
        try:
            # -1: a snapshot is being saved (keys.PAUSE); wait for it, as for a slow Redis.
            while (reply := self._apply(keys=[marker], args=[
                    orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), *vectors])) == -1:
                time.sleep(PAUSE_POLL_SECONDS)
        except redis.ResponseError as error:
            raise _non_finite(error) from None
        if isinstance(reply, list):  # refused: these records repeat an event id
            raise DuplicateEvents(position.decode() for position in reply)

    def _pause_key(self, group: str | None) -> str:
        """The PAUSE key in the slot of ``group``'s call (None and GLOBAL: the state's)."""
        if not self.sharded or group in (None, GLOBAL):
            return keys.key(self.prefix, keys.PAUSE)
        return keys.key(self._groups[group], keys.PAUSE)

    def _name(self, field: str, id: str | None) -> str:
        """The key holding a value of a StateUpdate ``field`` (see ``check_finite``)."""
        kind = _UPDATE_KINDS[field]
        return self.key(kind) if id is None else self.key(kind, id)

    def _landmarks_key(self, item: ItemId | None = None) -> str:
        """The LANDMARKS hash in the slot of the global state, or of ``item``'s group."""
        if item is None or not self.sharded:
            return self.key(keys.LANDMARKS)
        return keys.key(self._groups[self.group("i", item)], keys.LANDMARKS)

    def landmark_keys(self) -> list[str]:
        """Every LANDMARKS hash of the state (the global one, and each item group's)."""
        return keys.landmark_keys(self.prefix)

    def group_markers(self, partitions: Iterable[str]) -> dict[str, dict[str, int]]:
        """Sharded: the offsets each group applied, per partition (unsharded: none)."""
        names = list(partitions)
        if not self.sharded or not names:
            return {}
        groups = [GLOBAL, *self._groups]
        pipe = self.client.pipeline(transaction=False)
        for group in groups:
            pipe.hmget(self._marker(group), names)
        return {group: {n: int(v) for n, v in zip(names, values, strict=True) if v is not None}
                for group, values in zip(groups, pipe.execute(), strict=True)}

    def neighbours(self, item_ids: Iterable[ItemId], limit: int
                   ) -> dict[ItemId, Decayed[list[Scored]]]:
        """The lists and their landmarks (:meth:`_neighbour_rows`)."""
        items = list(item_ids)
        rows, landmarks = self._neighbour_rows(items, limit)
        return {item: Decayed([(member.decode(), weight)
                               for member, weight in zip(members, weights, strict=True)],
                              landmarks[item])
                for item, (members, weights) in zip(items, rows, strict=True)}

    def _neighbour_rows(self, items: list[ItemId], limit: int
                        ) -> tuple[list[tuple[list[bytes], list[float]]],
                                   dict[ItemId, float | None]]:
        """Each item's list, heaviest first, as its members' bytes and their scores, and
        its landmark, in one pipeline (one HMGET per landmark hash)."""
        pipe = self.client.pipeline(transaction=False)
        for item in items:
            _heaviest_first(pipe, self.key(keys.NEIGHBOURS, item), limit - 1)
        by_hash: dict[str, list[ItemId]] = defaultdict(list)
        for item in dict.fromkeys(items):
            by_hash[self._landmarks_key(item)].append(item)
        for name, members in by_hash.items():
            pipe.hmget(name, [keys.landmark_field(keys.NEIGHBOURS, item) for item in members])
        replies = pipe.execute()
        landmarks = {item: _landmark(raw)
                     for members, found in zip(by_hash.values(), replies[len(items):],
                                               strict=True)
                     for item, raw in zip(members, found, strict=True)}
        return [_members_and_scores(row) for row in replies[:len(items)]], landmarks

    def item_counts(self, item_ids: Iterable[ItemId]) -> Decayed[dict[ItemId, float]]:
        items = list(item_ids)
        if not items:
            return Decayed({}, None)
        scores, landmark = self._counts(items)
        return Decayed({item: s for item, s in zip(items, scores, strict=True) if s is not None},
                       _landmark(landmark))

    def _counts(self, items: list) -> tuple[list[float | None], bytes | None]:
        """The items' decayed counts N(i) (None: never counted) and their landmark."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zmscore(self.key(keys.ITEM_COUNT), items)
        pipe.hget(self._landmarks_key(), keys.landmark_field(keys.ITEM_COUNT))
        return pipe.execute()

    def neighbour_arrays(self, item_ids: Iterable[ItemId], limit: int) -> CodedNeighbours:
        """What :func:`recommender.store.read_coded` gives, from the same two round trips,
        numbered as the bytes come: each member is decoded once, not once per list it is
        in, and the counts are asked for with the bytes Redis sent."""
        items = list(item_ids)
        if not items:
            return coded({}, Decayed({}, None))
        rows, landmarks = self._neighbour_rows(items, limit)
        named = list(dict.fromkeys(chain(map(str.encode, items),
                                         *(members for members, _ in rows))))
        codes = dict(zip(named, range(len(named)), strict=True))
        lists = {item: Decayed((list(map(codes.__getitem__, members)), weights),
                               landmarks[item])
                 for item, (members, weights) in zip(items, rows, strict=True)}
        scores, landmark = self._counts(named)
        ids = [member.decode() for member in named]
        # None (an item never counted) becomes NaN in C, then 0; a stored count is finite.
        counts = np.array(scores, dtype=float)
        counts[np.isnan(counts)] = 0.0
        return CodedNeighbours(ids, dict(zip(ids, range(len(ids)), strict=True)), lists,
                               Decayed(counts, _landmark(landmark)))

    def popular(self, k: int, category: Category | None = None) -> Decayed[list[Scored]]:
        pipe = self.client.pipeline(transaction=False)
        self._popular_reads(pipe, k, category)
        return _popular_found(*pipe.execute())

    def _popular_reads(self, pipe: Any, k: int, category: Category | None) -> None:
        """Queue the reads of :meth:`popular` on ``pipe`` (two replies: :func:`_popular_found`
        makes them its answer). The list and its landmark are in the global slot."""
        if category is None:
            name, field = self.key(keys.POPULAR), keys.landmark_field(keys.POPULAR)
        else:
            name = self.key(keys.POPULAR_BY_CATEGORY, category)
            field = keys.landmark_field(keys.POPULAR_BY_CATEGORY, category)
        pipe.zrange(name, 0, k - 1, desc=True, withscores=True)
        pipe.hget(self._landmarks_key(), field)

    def item_categories(self, item_ids: Iterable[ItemId]) -> dict[ItemId, list[Category]]:
        items = list(item_ids)
        if not items:
            return {}
        documents = self._mget([self.key(keys.ITEM, item) for item in items])
        return {
            item: list(orjson.loads(raw).get("categories", ()))
            for item, raw in zip(items, documents, strict=True)
            if raw is not None
        }

    def user_factors(self, user_ids: Iterable[UserId]) -> dict[UserId, np.ndarray]:
        return self._vectors(keys.MF_USER, user_ids, USER_FACTOR_DTYPE)

    def item_factors(self, item_ids: Iterable[ItemId]) -> dict[ItemId, np.ndarray]:
        return self._vectors(keys.MF_ITEM, item_ids, ITEM_FACTOR_DTYPE)

    def _vectors(self, kind: str, ids: Iterable[str], dtype: np.dtype
                 ) -> dict[str, np.ndarray]:
        ids = list(ids)
        if not ids:
            return {}
        raw = self._mget([self.key(kind, i) for i in ids])
        return {i: _unpack(r, dtype) for i, r in zip(ids, raw, strict=True) if r is not None}

    def sample_items(self, count: int) -> list[ItemId]:
        if count <= 0:
            return []
        members = self.client.zrandmember(self.key(keys.MF_CHANGED), count) or []
        return [member.decode() for member in members]

    def changed_items(self, since: ChangeCursor | None
                      ) -> tuple[ChangeCursor, dict[ItemId, np.ndarray]]:
        cursor, members = self._changes(keys.MF_CHANGED, since)
        changed: dict[ItemId, np.ndarray] = {}
        for start in range(0, len(members), 10_000):
            changed.update(self.item_factors(members[start:start + 10_000]))
        return cursor, changed

    def _changes(self, kind: str, since: ChangeCursor | None
                 ) -> tuple[ChangeCursor, list[ItemId]]:
        """The members of change index ``kind`` changed after ``since`` and the new cursor.

        Each read reaches back ``CHANGE_OVERLAP_SECONDS`` before the last, so that a change
        stamped before that read but committed after it is not skipped; the changes the
        last read already returned (the same member with the same change time) are left
        out, so an engine refreshing every 0.25 s fetches each changed vector once, not once
        per read within the overlap (docs/benchmarks.md)."""
        now = time.time()
        low, seen = ("-inf", frozenset()) if since is None else (
            since.at - self.CHANGE_OVERLAP_SECONDS, since.seen)
        # The reply as it comes: redis-py's pairing formats each score again (5 us a row).
        reply = self.client.execute_command("ZRANGEBYSCORE", self.key(kind), low, "+inf",
                                            "WITHSCORES")
        if reply and isinstance(reply[0], list):  # RESP3: [member, score] pairs
            rows = [(member, at) for member, at in reply]
        else:  # RESP2 (streamrec.storage.client.connect): member, score, member, ...
            rows = list(zip(reply[::2], reply[1::2], strict=True))
        changed = [member.decode() for member, _ in set(rows).difference(seen)]
        # The rows come by score: keep those the next read reaches back to.
        reread = bisect.bisect_left(rows, now - self.CHANGE_OVERLAP_SECONDS, key=_score)
        return ChangeCursor(now, frozenset(rows[reread:])), changed

    def put_items(self, documents: Iterable[tuple[ItemId, Mapping[str, Any] | None]],
                  popularity: ForwardDecay | None = None) -> None:
        """Documents, deletions and withdrawal times in one MULTI/EXEC; the last of an
        item's documents in the batch wins (the compacted topic's order).

        With ``popularity``, the items' per-category popularity follows their categories
        first (one RECATEGORISE call, in the state's slot, which may not be the catalog's).
        That order survives a crash between the two: the redelivered batch finds the old
        documents again and sets the same scores."""
        latest = dict(documents)
        if not latest:
            return
        if popularity is not None:
            self._recategorise(category_moves(self.item_categories(latest), latest),
                               popularity)
        withdrawn = {item: withdrawn_at(document) for item, document in latest.items()}
        pipe = self.client.pipeline(transaction=True)
        stored = {self.key(keys.ITEM, item): orjson.dumps(dict(document))
                  for item, document in latest.items() if document is not None}
        deleted = [self.key(keys.ITEM, item) for item, doc in latest.items() if doc is None]
        if stored:
            # As a command, not pipe.mset (which redis-py's cluster pipeline refuses): the
            # catalog's keys share one slot, so MSET is valid on a cluster too.
            pipe.execute_command("MSET", *(part for pair in stored.items() for part in pair))
        if deleted:
            pipe.delete(*deleted)
        hidden = {item: at for item, at in withdrawn.items() if at is not None}
        shown = [item for item, at in withdrawn.items() if at is None]
        # As EVAL, not a registered script: a cluster's MULTI cannot load scripts, and the
        # version must change in the same transaction as the times (WITHDRAWN_VERSION).
        pipe.execute_command("EVAL", redis_scripts.WITHDRAW, 2, *self._withdrawn_keys,
                             uuid.uuid4().hex, len(hidden),
                             *(part for item, at in hidden.items() for part in (repr(at), item)),
                             *shown)
        pipe.zadd(self.key(keys.CATALOG_CHANGED), dict.fromkeys(latest, time.time()))
        pipe.execute()

    def _recategorise(self, moves: Mapping[ItemId, tuple[list[Category], list[Category]]],
                      decay: ForwardDecay) -> None:
        rows = [[item, now, left] for item, (now, left) in moves.items() if now or left]
        if not rows:
            return
        payload = orjson.dumps({
            "popcat": self.key(keys.POPULAR_BY_CATEGORY, ""), "lf_pop": _LANDMARK_FIELDS["pop"],
            "lf_popcat": _LANDMARK_FIELDS["popcat"], "half_life": decay.half_life,
            "epoch": decay.epoch, "rescale_half_lives": RESCALE_HALF_LIVES, "items": rows})
        names = [self.key(keys.POPULAR), self.key(keys.LANDMARKS), self._pause_key(GLOBAL)]
        try:
            while self._recategorise_script(keys=names, args=[payload]) == -1:
                time.sleep(PAUSE_POLL_SECONDS)  # a snapshot is being saved
        except redis.ResponseError as error:
            raise _non_finite(error) from None

    def changed_documents(self, since: ChangeCursor | None
                          ) -> tuple[ChangeCursor, dict[ItemId, dict[str, Any] | None]]:
        cursor, members = self._changes(keys.CATALOG_CHANGED, since)
        changed: dict[ItemId, dict[str, Any] | None] = {}
        for start in range(0, len(members), 10_000):
            chunk = members[start:start + 10_000]
            raw = self._mget([self.key(keys.ITEM, item) for item in chunk])
            changed.update({item: None if document is None else orjson.loads(document)
                            for item, document in zip(chunk, raw, strict=True)})
        return cursor, changed

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
        pipe.execute_command("MGET", *(self.key(keys.ITEM, item) for item in items))
        times, raw = pipe.execute()
        withdrawn = {i for i, at in zip(items, times, strict=True) if at is not None and at <= now}
        found = {i: orjson.loads(r) for i, r in zip(items, raw, strict=True)
                 if r is not None and i not in withdrawn}
        return withdrawn, found

    def interaction_types(self, user_id: UserId) -> dict[ItemId, frozenset[str]]:
        """The types of the history's scores and of the hash, read at one point, in either
        layout (scripts.HISTORY_MARKER)."""
        rows, flat = self._interaction_types(keys=[self.key(keys.HISTORY, user_id),
                                                   self.key(keys.EVENT_TYPES, user_id)])
        separator = redis_scripts.EVENT_TYPE_SEPARATOR
        stored = {flat[n].decode(): flat[n + 1].decode().split(separator)
                  for n in range(0, len(flat), 2)}
        if not rows or rows[0] != _MARKER:
            return {item: frozenset(types) for item, types in stored.items()}
        span, scored = redis_scripts.HISTORY_SPAN, redis_scripts.SCORED_EVENT_TYPES
        found = {}
        for n in range(2, len(rows), 2):
            item, mask = rows[n].decode(), int(float(rows[n + 1])) % span
            types = [kind for bit, kind in enumerate(scored) if mask >> bit & 1]
            types += stored.get(item, ())
            if types:
                found[item] = frozenset(types)
        return found

    def get_item(self, item_id: ItemId) -> dict[str, Any] | None:
        raw = self.client.get(self.key(keys.ITEM, item_id))
        return None if raw is None else orjson.loads(raw)

    def put_users(self, documents: Iterable[tuple[UserId, Mapping[str, Any]]]) -> None:
        self._put(keys.USER, documents)

    def _put(self, kind: str, documents: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        encoded = {self.key(kind, i): orjson.dumps(dict(d)) for i, d in documents}
        if encoded:
            self.client.mset(encoded)

    # How many user deletions are remembered for delete_again: far more than can happen
    # while one batch is being applied.
    REMEMBERED_DELETIONS = 100_000

    def delete_users(self, user_ids: Iterable[UserId], also: Iterable[str] = ()) -> None:
        """Delete each user's document and their history, event types and factors, in this
        store's model version and in the versions whose state prefixes are ``also``.

        On one Redis it is one transaction, so a batch applied meanwhile lands wholly
        before or wholly after it; on a cluster one deletion per group of slots. Deleting
        a user who is not there does nothing; the deletion is numbered so that a worker
        whose batch read a user's state before it and wrote after it deletes again
        (:meth:`delete_again`)."""
        users = list(dict.fromkeys(user_ids))
        if not users:
            return
        prefixes = list(dict.fromkeys([self.prefix, *also]))
        pipe = self._user_state_deletion(prefixes, users)
        forget = {"keys": [self.key(keys.USER_DELETIONS),
                           *(self.key(keys.USER, user) for user in users)],
                  "args": [self.REMEMBERED_DELETIONS, *users]}
        if self.cluster:  # the state first: a worker must not see the number before that
            pipe.execute()
            self._forget_users(**forget)
        else:
            self._forget_users(**forget, client=pipe)
            pipe.execute()

    def _user_state_deletion(self, prefixes: list[str], users: list[UserId]):
        """A pipeline (a transaction on one Redis) that deletes the per-user keys of
        ``users`` under each prefix: one DEL per slot (as a command: redis-py's cluster
        pipeline refuses a DEL of several keys, which one slot allows)."""
        slots: dict[str, list[str]] = defaultdict(list)
        for prefix in prefixes:
            for user in users:
                tag = (keys.group_prefix(prefix, self.group("u", user)) if self.sharded
                       else prefix)
                slots[tag].extend(keys.key(tag, kind, user) for kind in keys.USER_SHARDED)
        pipe = self.client.pipeline(transaction=not self.cluster)
        for names in slots.values():
            pipe.execute_command("DEL", *names)
        return pipe

    def deletion_count(self) -> int:
        """The number of the last user deletion: read it before a batch reads any state,
        and hand it to :meth:`delete_again` once the batch is applied."""
        top = self.client.zrevrange(self.key(keys.USER_DELETIONS), 0, 0, withscores=True)
        return int(top[0][1]) if top else 0

    def delete_again(self, user_ids: Iterable[UserId], since: int) -> list[UserId]:
        """Delete again, in this store's version, the state of those of ``user_ids``
        deleted after deletion number ``since``: a batch that read their state before the
        deletion and wrote after it must not bring it back. Returns them."""
        deleted = {member.decode() for member in self.client.zrangebyscore(
            self.key(keys.USER_DELETIONS), f"({since}", "+inf")}
        if not deleted:  # the usual case: nobody was deleted while the batch ran
            return []
        again = [user for user in dict.fromkeys(user_ids) if user in deleted]
        if again:
            self._user_state_deletion([self.prefix], again).execute()
        return again

    def get_user(self, user_id: UserId) -> dict[str, Any] | None:
        raw = self.client.get(self.key(keys.USER, user_id))
        return None if raw is None else orjson.loads(raw)

    def items_with_factors(self) -> int:
        """How many items have MF factors (the change cursor holds one member each)."""
        try:
            return self.client.zcard(self.key(keys.MF_CHANGED))
        except redis.RedisError:  # a listing goes on without the figure
            return 0

    def events_applied(self) -> int:
        return int(self.client.hget(self.key(keys.STATS), "events_applied") or 0)

    def duplicates_skipped(self) -> int:
        return int(self.client.hget(self.key(keys.STATS), "duplicates") or 0)

    def blend_tally(self) -> dict[str, int]:
        found = self.client.hgetall(self.key(keys.STATS))
        mark = redis_scripts.BLEND_FIELD.encode()
        return {field[len(mark):].decode(): int(value) for field, value in found.items()
                if field.startswith(mark)}

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
