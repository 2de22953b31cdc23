"""Model versions: a configuration plus its own state namespace in Redis.

Version ``main`` is the state under the base prefix (``STREAMREC_REDIS_PREFIX``); version
``NAME`` lives under ``<prefix>.NAME``. The catalog, filters, placements and feedback are
shared by every version (they stay under the base prefix: see ``keys.SHARED``).

- :func:`rebuild` replays the retained events topic into a new version's namespace with the
  version's hyperparameters, while the serving version goes on serving;
- :class:`Versions` registers versions, switches which one serves (``promote``,
  ``rollback``: one Redis transaction each, read by every API process within
  ``STREAMREC_VERSION_REFRESH_SECONDS``) and deletes them;
- :func:`save_snapshot` / :func:`restore_snapshot` write a version's state (with the
  offsets it reflects) to a file and load it into another namespace, so a rebuild can
  start from a snapshot and replay only the log after it.

A version built by ``rebuild`` is kept up to date by its own worker
(``streamrec worker --version NAME``), which continues from the offsets the rebuild
applied.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import redis

from streamrec import keys
from streamrec.redis_client import connect

MAIN = "main"
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,19}$")
# Engine settings a version may override (hyperparameters; not infrastructure).
TUNABLE = frozenset({
    "history_length", "cooccurrence_window", "cooccurrence_window_seconds", "max_neighbours",
    "neighbours_per_item_read", "decay_half_life_seconds", "popularity_half_life_seconds",
    "mf_dim", "mf_learning_rate",
    "mf_regularization", "mf_negatives", "mf_negative_pool", "seed", "hybrid_mf",
    "hybrid_cooccurrence", "hybrid_popular", "hybrid_candidates", "hybrid_rank_constant",
})


class VersionError(ValueError):
    """A version operation that cannot be done; ``str()`` says why."""


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise VersionError(f"version: {name!r} must be 1-20 of a-z, 0-9, '_' and '-', "
                           "starting with a letter or digit")
    return name


def state_prefix(base: str, name: str) -> str:
    """The Redis prefix of a version's state.

    >>> state_prefix("sr", "main"), state_prefix("sr", "v2"), state_prefix("{sr}", "v2")
    ('sr', 'sr.v2', '{sr.v2}')
    """
    if name == MAIN:
        return base
    if keys.is_tagged(base):  # a cluster: the version's global state gets a slot of its own
        return "{" + base[1:-1] + "." + check_name(name) + "}"
    return f"{base}.{check_name(name)}"


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["mf_dim=64", "hybrid_popular=0.1"]`` as settings overrides (values as JSON).

    >>> parse_overrides(["mf_dim=64", "hybrid_popular=0.1"])
    {'mf_dim': 64, 'hybrid_popular': 0.1}
    """
    overrides: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise VersionError(f"{pair!r}: expected NAME=VALUE")
        if name not in TUNABLE:
            raise VersionError(f"{name!r} is not a model setting a version may change; "
                               f"one of {sorted(TUNABLE)}")
        try:
            overrides[name] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise VersionError(f"{name}: {raw!r} is not a number or JSON value") from None
    return overrides


@dataclass
class Version:
    name: str
    settings: dict[str, Any] = field(default_factory=dict)  # overrides of the base settings
    status: str = "ready"  # building | ready
    created_at: float = field(default_factory=time.time)

    def as_json(self) -> bytes:
        return orjson.dumps({"name": self.name, "settings": self.settings,
                             "status": self.status, "created_at": self.created_at})

    @classmethod
    def from_json(cls, raw: bytes) -> Version:
        return cls(**orjson.loads(raw))


class Versions:
    """The registry of versions and the switch of the serving one, under the base prefix."""

    def __init__(self, client: redis.Redis, base_prefix: str) -> None:
        self.client = client
        self.base = base_prefix
        self._registry = keys.key(base_prefix, keys.VERSIONS)
        self._serving = keys.key(base_prefix, keys.SERVING)
        self._log = keys.key(base_prefix, keys.SERVING_LOG)

    def prefix(self, name: str) -> str:
        return state_prefix(self.base, name)

    def register(self, version: Version) -> None:
        check_name(version.name)
        if version.name == MAIN:
            raise VersionError("version 'main' is the base state; rebuild into a new name")
        self.client.hset(self._registry, version.name, version.as_json())

    def get(self, name: str) -> Version | None:
        if name == MAIN:
            return Version(MAIN)
        raw = self.client.hget(self._registry, name)
        return None if raw is None else Version.from_json(raw)

    def all(self) -> dict[str, Version]:
        found = {MAIN: Version(MAIN)}
        for name, raw in sorted(self.client.hgetall(self._registry).items()):
            found[name.decode()] = Version.from_json(raw)
        return found

    def serving(self) -> str:
        raw = self.client.get(self._serving)
        return MAIN if raw is None else raw.decode()

    def log(self, limit: int = 50) -> list[dict[str, Any]]:
        return [orjson.loads(raw) for raw in self.client.lrange(self._log, 0, limit - 1)]

    def promote(self, name: str, author: str = "cli") -> str:
        """Serve ``name`` from now on; returns the version it replaced."""
        version = self.get(name)
        if version is None:
            raise VersionError(f"version {name!r} does not exist")
        if version.status != "ready":
            raise VersionError(f"version {name!r} is {version.status}, not ready")
        return self._switch(lambda current, log: name, author, "promote")

    def rollback(self, author: str = "cli") -> str:
        """Serve the version that served before the last promote; returns it."""

        def previous(current: str, log: list[dict[str, Any]]) -> str:
            promotes = [entry for entry in log if entry["action"] == "promote"]
            if not promotes:
                raise VersionError("nothing to roll back: no version was promoted")
            return promotes[0]["previous"]

        return self._switch(previous, author, "rollback")

    def _switch(self, choose: Callable[[str, list[dict[str, Any]]], str], author: str,
                action: str) -> str:
        # WATCH the switch and its log: two operators at once cannot interleave.
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self._serving, self._log)
                    raw = pipe.get(self._serving)
                    current = MAIN if raw is None else raw.decode()
                    log = [orjson.loads(entry) for entry in pipe.lrange(self._log, 0, 99)]
                    if action == "rollback":
                        # A rollback undoes the newest promote not undone yet.
                        log = _open_promotes(log)
                    target = choose(current, log)
                    if self.get(target) is None:
                        raise VersionError(f"version {target!r} no longer exists")
                    pipe.multi()
                    pipe.set(self._serving, target)
                    pipe.lpush(self._log, orjson.dumps({
                        "action": action, "version": target, "previous": current,
                        "author": author, "at": time.time()}))
                    pipe.ltrim(self._log, 0, 999)
                    pipe.execute()
                    return current if action == "promote" else target
                except redis.WatchError:
                    continue

    def delete(self, name: str, batch: int = 1000) -> int:
        """Remove a version's registration and state; returns the keys removed."""
        if name == MAIN:
            raise VersionError("version 'main' is the base state and cannot be deleted")
        if self.get(name) is None:
            raise VersionError(f"version {name!r} does not exist")
        if self.serving() == name:
            raise VersionError(f"version {name!r} is serving: promote another first")
        self.client.hdel(self._registry, name)
        removed = 0
        for chunk in _chunks(scan_state(self.client, self.prefix(name)), batch):
            removed += self.client.unlink(*chunk)
        return removed


def _open_promotes(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Promotes (newest first) not undone by a later rollback."""
    pending_rollbacks = 0
    open_promotes = []
    for entry in log:
        if entry["action"] == "rollback":
            pending_rollbacks += 1
        elif pending_rollbacks:
            pending_rollbacks -= 1
        else:
            open_promotes.append(entry)
    return open_promotes


def scan_state(client: redis.Redis, prefix: str, count: int = 1000) -> Iterator[bytes]:
    """Every key of a version's state (the kinds in ``keys.STATE``), streamed."""
    for kind in keys.STATE:
        yield from client.scan_iter(match=keys.pattern(prefix, kind), count=count)
        single = keys.key(prefix, kind)  # kinds with one key (popularity, offsets, ...)
        if client.exists(single):
            yield single.encode()
    for pattern in keys.group_patterns(prefix):  # a cluster's per-user and per-item groups
        yield from client.scan_iter(match=pattern, count=count)


def _relative(name: bytes, prefix: str) -> str:
    """A state key's name without its version's prefix, as a snapshot keeps it. A tagged
    prefix's group keys start "{<prefix>/": both keep what follows the tag's opening."""
    cut = len(prefix) - 1 if keys.is_tagged(prefix) else len(prefix)
    return name[cut:].decode("latin-1")


def _absolute(relative: str, prefix: str) -> bytes:
    start = prefix[:-1] if keys.is_tagged(prefix) else prefix
    return start.encode() + relative.encode("latin-1")


def _chunks(names: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for name in names:
        chunk.append(name)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# The number changes with the layout of the values a snapshot copies byte for byte (2: user
# factors in float16, history times in milliseconds; 3: decayed keys with landmarks); an
# older snapshot is refused, and the event log rebuilds the state. Format 2 differs only by
# having no landmarks: its decayed keys are read in the legacy epoch's frame, as state
# upgraded in place is (recommender.decay), so it is restored.
SNAPSHOT_FORMAT = "streamrec-snapshot-3"
WITHOUT_LANDMARKS = "streamrec-snapshot-2"


def save_snapshot(client: redis.Redis, prefix: str, path: Path,
                  progress: Callable[[int], None] | None = None,
                  settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write every state key of ``prefix`` (DUMP format, with its TTL) to ``path``, one JSON
    line each after a header; returns the header (it holds the offsets applied)."""
    offsets = {name.decode(): int(value) for name, value in
               client.hgetall(keys.key(prefix, keys.OFFSETS)).items()}
    header = {"format": SNAPSHOT_FORMAT, "prefix": prefix, "created_at": time.time(),
              "offsets": offsets, "settings": settings or {}, "keys": 0}
    written = 0
    with open(path, "wb") as out:
        out.write(orjson.dumps(header) + b"\n")
        for chunk in _chunks(scan_state(client, prefix), 500):
            pipe = client.pipeline(transaction=False)
            for name in chunk:
                pipe.dump(name)
                pipe.pttl(name)
            replies = pipe.execute()
            for name, dumped, ttl in zip(chunk, replies[::2], replies[1::2], strict=True):
                if dumped is None:  # expired or removed since the scan
                    continue
                out.write(orjson.dumps({
                    "key": _relative(name, prefix),
                    "ttl": max(int(ttl), 0), "value": base64.b64encode(dumped).decode()})
                    + b"\n")
                written += 1
            if progress is not None:
                progress(len(chunk))
    header["keys"] = written
    return header


def restore_snapshot(client: redis.Redis, path: Path, prefix: str,
                     progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Load a snapshot into ``prefix`` (replacing keys that exist); returns its header.

    The snapshot's applied offsets come along (they are part of the state), so a worker
    or rebuild on ``prefix`` continues from exactly after them.
    """
    with open(path, "rb") as source:
        header = orjson.loads(source.readline())
        if header.get("format") not in (SNAPSHOT_FORMAT, WITHOUT_LANDMARKS):
            found = header.get("format", "")
            if str(found).startswith("streamrec-snapshot-"):
                raise VersionError(f"{path}: a {found} snapshot, of an older state layout "
                                   f"than this streamrec's ({SNAPSHOT_FORMAT}): rebuild from "
                                   "the event log instead")
            raise VersionError(f"{path}: not a streamrec snapshot")
        if keys.is_tagged(header.get("prefix", "")) != keys.is_tagged(prefix):
            layouts = {True: "Redis Cluster", False: "single Redis"}
            raise VersionError(
                f"{path}: a snapshot of the {layouts[keys.is_tagged(header['prefix'])]} key "
                f"layout cannot be restored into the {layouts[keys.is_tagged(prefix)]} one: "
                "rebuild from the event log instead")
        if header["format"] == WITHOUT_LANDMARKS:
            # Its keys have none: landmarks left in the namespace would describe other data.
            _drop_landmarks(client, prefix)
        pipe = client.pipeline(transaction=False)
        pending = 0
        for line in source:
            entry = orjson.loads(line)
            name = _absolute(entry["key"], prefix)
            pipe.restore(name, entry["ttl"], base64.b64decode(entry["value"]), replace=True)
            pending += 1
            if pending >= 500:
                pipe.execute()
                if progress is not None:
                    progress(pending)
                pending = 0
        pipe.execute()
        if progress is not None and pending:
            progress(pending)
    return header


def _drop_landmarks(client: redis.Redis, prefix: str) -> None:
    for name in keys.landmark_keys(prefix):  # one by one: a cluster's are in other slots
        client.unlink(name)


def version_settings(settings: Any, version: Version) -> Any:
    """The settings a version runs with: the base ones, its overrides, its namespace."""
    return settings.model_copy(update={
        **version.settings,
        "redis_prefix": state_prefix(settings.redis_prefix, version.name),
        "catalog_prefix": settings.catalog_prefix or settings.redis_prefix,
        "worker_id": settings.worker_id if version.name == MAIN
        else f"{settings.worker_id}-{version.name}",
        "state_version": version.name,
    })


def effective_settings(settings: Any) -> Any:
    """``settings`` as the version named by ``settings.state_version`` runs them."""
    if settings.state_version == MAIN:
        return settings
    client = connect(settings.redis_url, settings.redis_cluster)
    try:
        version = Versions(client, settings.redis_prefix).get(settings.state_version)
    finally:
        client.close()
    if version is None:
        raise VersionError(f"version {settings.state_version!r} does not exist: build it with "
                           f"streamrec rebuild --version {settings.state_version}")
    return version_settings(settings, version)


async def _partitions(bootstrap: str, topic: str) -> list[int]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for entry in described if entry.get("error_code", 0) == 0
                  for p in entry.get("partitions", ()))


@dataclass
class RebuildReport:
    version: str
    events: int = 0
    rejected: int = 0
    skipped: int = 0  # already applied (a restarted rebuild, or a restored snapshot)
    seconds: float = 0.0
    offsets: dict[str, int] = field(default_factory=dict)


async def rebuild(settings: Any, name: str, overrides: dict[str, Any],
                  snapshot: Path | None = None,
                  progress: Callable[[int, int], None] | None = None) -> RebuildReport:
    """Build version ``name`` by replaying the events topic from its start (or from a
    snapshot's offsets) up to its end as of now, with ``overrides`` on the model settings.

    The serving version is untouched. Batches are applied with their offsets in one Redis
    call each, as the worker does, so an interrupted rebuild can simply be run again; the
    version's consumer group gets the offsets committed, so ``streamrec worker --version``
    continues from where the rebuild stopped. ``progress(done, total)`` is called per batch.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from recommender.engine import Engine
    from streamrec.redis_store import RedisStore
    from streams.catchup import learn_once
    from streams.decode import PlainRecord, decode_events, source, unapplied

    check_name(name)
    if name == MAIN:
        raise VersionError("rebuild into a new version name; 'main' is the base state")
    client = connect(settings.redis_url, settings.redis_cluster)
    registry = Versions(client, settings.redis_prefix)
    if registry.serving() == name:
        raise VersionError(f"version {name!r} is serving: rebuild into another name")
    version = Version(name, overrides, status="building")
    registry.register(version)
    effective = version_settings(settings, version)
    store = RedisStore.from_url(effective.redis_url, effective.redis_prefix,
                                catalog_prefix=effective.catalog_prefix,
                                cluster=effective.redis_cluster)
    if snapshot is not None:
        restore_snapshot(client, snapshot, effective.redis_prefix)
    engine = Engine(store, effective.engine_config())
    weights = effective.weights()
    report = RebuildReport(name)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                group_id=effective.worker_id, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_poll_records=5000)
    await consumer.start()
    started = time.perf_counter()
    try:
        partitions = [TopicPartition(settings.events_topic, p)
                      for p in await _partitions(settings.kafka_bootstrap, settings.events_topic)]
        if not partitions:
            raise VersionError(f"topic {settings.events_topic!r} has no partitions")
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        applied = store.applied_offsets([f"{tp.topic}:{tp.partition}" for tp in partitions])
        for tp in partitions:
            done = applied.get(f"{tp.topic}:{tp.partition}")
            consumer.seek(tp, max(starts[tp], done + 1) if done is not None else starts[tp])
        total = sum(ends[tp] - starts[tp] for tp in partitions)
        position = 0
        for tp in partitions:
            position += min(await consumer.position(tp), ends[tp]) - starts[tp]
        report.skipped = position
        if progress is not None:
            progress(position, total)
        remaining = set()
        for tp in partitions:
            if await consumer.position(tp) < ends[tp]:
                remaining.add(tp)
        while remaining:
            fetched = await consumer.getmany(*remaining, timeout_ms=1000,
                                             max_records=settings.batch_size)
            records = [PlainRecord(r.topic, r.partition, r.offset, r.key, r.value,
                                   r.timestamp / 1000.0,  # Faust's messages carry seconds
                                   r.timestamp_type)
                       for tp, batch in fetched.items() for r in batch if r.offset < ends[tp]]
            if records:
                applied = store.applied_offsets({source(r) for r in records})
                fresh, offsets = unapplied(records, applied)
                decode = partial(decode_events, weights=weights,
                                 max_skew=effective.max_event_time_skew_seconds,
                                 now=time.time())
                decoded = decode(fresh)
                report.rejected += len(decoded.rejected)
                report.skipped += len(records) - len(fresh)
                if offsets:
                    learn_once(engine, store, decode, fresh, decoded.interactions, offsets)
                report.events += len(decoded.interactions)
                # Only what was applied: records past the end are the version's
                # worker's to apply.
                await consumer.commit({
                    tp: min(max(r.offset for r in batch), ends[tp] - 1) + 1
                    for tp, batch in fetched.items() if batch and batch[0].offset < ends[tp]})
                if progress is not None:
                    progress(len(records), total)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        report.offsets = {f"{tp.topic}:{tp.partition}": ends[tp] - 1 for tp in partitions
                          if ends[tp] > starts[tp]}
    finally:
        await consumer.stop()
        store.client.close()
    report.seconds = time.perf_counter() - started
    registry.register(Version(name, overrides, status="ready", created_at=version.created_at))
    return report
