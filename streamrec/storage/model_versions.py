"""Model versions: a configuration plus its own state namespace in Redis.

Version ``main`` is the state under the base prefix (``STREAMREC_REDIS_PREFIX``); version
``NAME`` lives under ``<prefix>.NAME``. The catalog, filters, placements and feedback are
shared by every version (they stay under the base prefix: see ``keys.SHARED``).

- :class:`Versions` registers versions, switches which one serves (``promote``,
  ``rollback``: one Redis transaction each, read by every API process within
  ``STREAMREC_VERSION_REFRESH_SECONDS``) and deletes them;
- :func:`version_settings` gives the settings a version runs with;
- ``streams.rebuild`` builds a version from the retained events topic, and
  :mod:`streamrec.storage.snapshots` saves and restores a version's state.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from recommender.hyperparameters import BY_SETTING, TUNABLE
from streamrec.storage import keys

MAIN = "main"
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,19}$")


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
    """``["mf_dim=64", "hybrid_popular=0.1"]`` as settings overrides (values as JSON),
    each a hyperparameter a version may change (:data:`TUNABLE`) within its bounds.

    >>> parse_overrides(["mf_dim=64", "hybrid_popular=0.1"])
    {'mf_dim': 64, 'hybrid_popular': 0.1}
    >>> parse_overrides(["mf_dim=0"])
    Traceback (most recent call last):
    ...
    streamrec.storage.model_versions.VersionError: mf_dim: 0 must be >= 1
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
            overrides[name] = BY_SETTING[name].check(orjson.loads(raw))
        except orjson.JSONDecodeError:
            raise VersionError(f"{name}: {raw!r} is not a number or JSON value") from None
        except ValueError as error:
            raise VersionError(str(error)) from None
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

    def check_promotable(self, name: str) -> Version:
        """The version, if it exists and is ready; else VersionError saying why."""
        version = self.get(name)
        if version is None:
            raise VersionError(f"version {name!r} does not exist")
        if version.status != "ready":
            raise VersionError(f"version {name!r} is {version.status}, not ready")
        return version

    def promote(self, name: str, author: str = "cli") -> str | None:
        """Serve ``name`` from now on; returns the version it replaced, or None when
        ``name`` serves already (nothing is changed or logged, so a rollback still goes
        back to what served before the last real change)."""
        self.check_promotable(name)
        return self._switch(lambda current, log: name, author, "promote")

    def rollback(self, author: str = "cli") -> str:
        """Serve the version that served before the last promote that changed it; returns
        it."""

        def previous(current: str, log: list[dict[str, Any]]) -> str:
            promotes = [entry for entry in log if entry["action"] == "promote"]
            if not promotes:
                raise VersionError("nothing to roll back: no version was promoted")
            return promotes[0]["previous"]

        restored = self._switch(previous, author, "rollback")
        assert restored is not None  # a rollback always switches
        return restored

    def _switch(self, choose: Callable[[str, list[dict[str, Any]]], str], author: str,
                action: str) -> str | None:
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
                    if action == "promote" and target == current:
                        pipe.unwatch()
                        return None
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
        for chunk in in_chunks(scan_state(self.client, self.prefix(name)), batch):
            removed += self.client.unlink(*chunk)
        return removed


def _open_promotes(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Promotes (newest first) not undone by a later rollback."""
    pending_rollbacks = 0
    open_promotes = []
    for entry in log:
        if entry["version"] == entry["previous"]:
            continue  # a promote of the serving version (logged before 2026-12-01) changed nothing
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


def in_chunks(names: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for name in names:
        chunk.append(name)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _app_part(prefix: str) -> str:
    """``.APP`` for an app's prefix (``sr@shop``: streamrec.apps), else nothing: an app's
    version has a consumer group of its own, and '.' is in no version name, so no default
    version's group ("streamrec-v2") is an app's ("streamrec.shop-v2"). The main version
    of every app is the main worker's (its group: the worker id).

    >>> _app_part("sr"), _app_part("sr@shop"), _app_part("{sr@shop}")
    ('', '.shop', '.shop')
    """
    app = prefix.strip("{}").partition("@")[2]
    return f".{app}" if app else ""


def version_settings(settings: Any, version: Version) -> Any:
    """The settings a version runs with: the base ones, its overrides, its namespace."""
    return settings.model_copy(update={
        **version.settings,
        "redis_prefix": state_prefix(settings.redis_prefix, version.name),
        "catalog_prefix": settings.catalog_prefix or settings.redis_prefix,
        "worker_id": settings.worker_id if version.name == MAIN
        else f"{settings.worker_id}{_app_part(settings.redis_prefix)}-{version.name}",
        "state_version": version.name,
    })
