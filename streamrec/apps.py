"""Apps: isolated recommenders on one deployment (their own catalog, events, state,
placements, filters, versions, metrics and keys).

App ``default`` is the state under the base prefix (``STREAMREC_REDIS_PREFIX``), exactly as
before apps existed; app ``NAME`` lives under ``<prefix>@NAME`` (``{sr@NAME}`` on a
cluster). ``@`` is not allowed in a base prefix, so no deployment's prefix collides with an
app's, and app names hold no ``.``, so an app's versions (``sr@shop.v2``) collide with no
other app.

The registry lives under the base prefix: :data:`keys.APPS` (name -> JSON :class:`App`)
and :data:`keys.APP_KEYS` (SHA-256 of an API key -> JSON ``{"app", "role"}``). Keys are
stored hashed, never in the clear; the clear key is shown once, when it is made.

Records of an app other than ``default`` carry the Kafka header ``app`` (see
:data:`HEADER`); records without it belong to ``default``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from recommender.base import MODELS
from recommender.hyperparameters import BY_SETTING, TUNABLE
from streamrec.storage import keys

DEFAULT = "default"
HEADER = "app"  # the Kafka record header naming a record's app (absent: default)
NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
ROLES = ("read", "write", "admin")  # an app's keys, one per role
PLATFORM = "platform"  # creates and deletes apps; acts as admin on every app
# Per-app settings besides the model hyperparameters (TUNABLE): name -> check.
QUOTAS = ("events_per_second", "requests_per_second", "max_items")


class AppError(ValueError):
    """An app operation that cannot be done; ``str()`` says why, naming the field."""


class AppNotFound(AppError):
    pass


def check_name(name: str) -> str:
    """
    >>> check_name("shop")
    'shop'
    >>> check_name("Shop")
    Traceback (most recent call last):
    ...
    streamrec.apps.AppError: app: 'Shop' must be 1-32 of a-z, 0-9 and '-', starting with a letter
    """
    if not isinstance(name, str) or not NAME.match(name):
        raise AppError(f"app: {name!r} must be 1-32 of a-z, 0-9 and '-', starting with a letter")
    return name


def app_prefix(base: str, name: str) -> str:
    """The Redis prefix of an app's state (its main version's; versions add ``.NAME``).

    >>> app_prefix("sr", "default"), app_prefix("sr", "shop"), app_prefix("{sr}", "shop")
    ('sr', 'sr@shop', '{sr@shop}')
    """
    if name == DEFAULT:
        return base
    check_name(name)
    if keys.is_tagged(base):
        return "{" + base[1:-1] + "@" + name + "}"
    return f"{base}@{name}"


def base_of(prefix: str) -> str:
    """The deployment's base prefix of an app's prefix (itself for the base one): where
    the app registry lives.

    >>> base_of("sr@shop"), base_of("{sr@shop}"), base_of("sr")
    ('sr', '{sr}', 'sr')
    """
    if keys.is_tagged(prefix):
        return "{" + prefix[1:-1].partition("@")[0] + "}"
    return prefix.partition("@")[0]


def check_settings(overrides: Any) -> dict[str, Any]:
    """An app's settings, checked: model hyperparameters a version may change (within
    their bounds), ``default_model``, ``event_weights``, ``attribution_window_seconds`` and
    the quotas (positive numbers, or null for none).

    >>> check_settings({"decay_half_life_seconds": 3600, "default_model": "popular"})
    {'decay_half_life_seconds': 3600.0, 'default_model': 'popular'}
    >>> check_settings({"half_life": 1})
    Traceback (most recent call last):
    ...
    streamrec.apps.AppError: settings.half_life: not a setting an app may change
    """
    if not isinstance(overrides, dict):
        raise AppError("settings: must be a JSON object")
    checked: dict[str, Any] = {}
    for name, value in overrides.items():
        where = f"settings.{name}"
        if name in TUNABLE:
            try:
                checked[name] = BY_SETTING[name].check(value)
            except (TypeError, ValueError) as error:
                raise AppError(f"{where}: {error}") from None
        elif name == "default_model":
            if value not in MODELS:
                raise AppError(f"{where}: {value!r} is not one of {list(MODELS)}")
            checked[name] = value
        elif name == "event_weights":
            if not isinstance(value, dict) or not value:
                raise AppError(f"{where}: must be a non-empty object of type -> weight")
            for kind, weight in value.items():
                if (not isinstance(kind, str) or not kind or isinstance(weight, bool)
                        or not isinstance(weight, int | float) or not weight >= 0
                        or weight == float("inf")):
                    raise AppError(f"{where}.{kind}: needs a name and a finite weight >= 0")
            checked[name] = {kind: float(weight) for kind, weight in value.items()}
        elif name == "attribution_window_seconds":
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    0 < value <= 30 * 86_400):
                raise AppError(f"{where}: must be a number of seconds in (0, 2592000]")
            checked[name] = float(value)
        elif name in QUOTAS:
            if value is not None and (isinstance(value, bool) or not isinstance(
                    value, int | float) or not 0 < value < float("inf")):
                raise AppError(f"{where}: must be a positive number, or null for no quota")
            checked[name] = value
        else:
            raise AppError(f"{where}: not a setting an app may change")
    return checked


def record_headers(name: str) -> list[tuple[str, bytes]] | None:
    """The Kafka headers of a record of app ``name`` (none for ``default``).

    >>> record_headers("default"), record_headers("shop")
    (None, [('app', b'shop')])
    """
    return None if name == DEFAULT else [(HEADER, name.encode())]


def record_key(name: str, identifier: str) -> str:
    """The Kafka key of app ``name``'s catalog record for ``identifier``: the compacted
    topics are shared, so another app's item of the same id must not compact this one
    away. ``default`` keeps the bare id (what producers wrote before apps).

    >>> record_key("default", "42"), record_key("shop", "42")
    ('42', 'shop/42')
    """
    return identifier if name == DEFAULT else f"{name}/{identifier}"


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(app: str, role: str) -> str:
    """A fresh API key; its visible start says whose it is (``sr_shop_admin_...``)."""
    return f"sr_{app}_{role}_{secrets.token_urlsafe(24)}"


@dataclass
class App:
    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)

    def as_json(self) -> bytes:
        return orjson.dumps({"name": self.name, "settings": self.settings,
                             "created_at": self.created_at})

    @classmethod
    def from_json(cls, raw: bytes) -> App:
        return cls(**orjson.loads(raw))

    def quota(self, name: str) -> float | None:
        return self.settings.get(name)


class Apps:
    """The registry of apps and their keys, under the base prefix."""

    def __init__(self, client: redis.Redis, base_prefix: str) -> None:
        self.client = client
        self.base = base_prefix
        self._registry = keys.key(base_prefix, keys.APPS)
        self._keys = keys.key(base_prefix, keys.APP_KEYS)
        self._deleted = keys.key(base_prefix, keys.APPS_DELETED)
        self._removed = keys.key(base_prefix, keys.APPS_REMOVED)

    def prefix(self, name: str) -> str:
        return app_prefix(self.base, name)

    def get(self, name: str) -> App | None:
        if name == DEFAULT:
            raw = self.client.hget(self._registry, DEFAULT)
            return App(DEFAULT, created_at=0.0) if raw is None else App.from_json(raw)
        raw = self.client.hget(self._registry, name)
        return None if raw is None else App.from_json(raw)

    def get_many(self, names: list[str]) -> dict[str, App | None]:
        """Apps other than default by name (None: not registered), in one round trip."""
        if not names:
            return {}
        found = self.client.hmget(self._registry, names)
        return {name: None if raw is None else App.from_json(raw)
                for name, raw in zip(names, found, strict=True)}

    def require(self, name: str) -> App:
        found = self.get(name)
        if found is None:
            raise AppNotFound(f"app {name!r} does not exist")
        return found

    def all(self) -> dict[str, App]:
        found = {DEFAULT: App(DEFAULT, created_at=0.0)}
        for name, raw in sorted(self.client.hgetall(self._registry).items()):
            found[name.decode()] = App.from_json(raw)
        return found

    def create(self, name: str, settings: dict[str, Any] | None = None
               ) -> tuple[App, dict[str, str]]:
        """Register ``name`` with one new key per role; returns the app and its clear keys
        (shown this once). AppError when it exists or a setting is wrong."""
        check_name(name)
        if name == DEFAULT:
            raise AppError("app: 'default' exists always (the deployment's own state)")
        app = App(name, check_settings(settings or {}))
        if not self.client.hsetnx(self._registry, name, app.as_json()):
            raise AppError(f"app: {name!r} exists already")
        return app, self.rotate_keys(name)

    def update(self, name: str, settings: dict[str, Any]) -> App:
        """Merge ``settings`` into the app's (a null quota removes it)."""
        app = self.require(name)
        merged = {**app.settings, **check_settings(settings)}
        app.settings = {k: v for k, v in merged.items() if v is not None}
        self.client.hset(self._registry, name, app.as_json())
        return app

    def rotate_keys(self, name: str, roles: tuple[str, ...] = ROLES) -> dict[str, str]:
        """New keys for ``roles``; the app's previous keys of those roles stop working."""
        if name != DEFAULT:
            self.require(name)
        for role in roles:
            if role not in ROLES:
                raise AppError(f"role: {role!r} is not one of {list(ROLES)}")
        made = {role: new_key(name, role) for role in roles}
        stale = [digest for digest, held in self._held().items()
                 if held["app"] == name and held["role"] in roles]
        pipe = self.client.pipeline(transaction=True)
        if stale:
            pipe.hdel(self._keys, *stale)
        for role, key in made.items():
            pipe.hset(self._keys, key_digest(key), orjson.dumps(
                {"app": name, "role": role, "created_at": time.time()}))
        pipe.execute()
        return made

    def key_roles(self, name: str) -> dict[str, float]:
        """The roles that have a key for ``name``, with when each was made."""
        return {held["role"]: held["created_at"] for held in self._held().values()
                if held["app"] == name}

    def _held(self) -> dict[str, dict[str, Any]]:
        return {digest.decode(): orjson.loads(raw)
                for digest, raw in self.client.hgetall(self._keys).items()}

    def lookup(self, key: str) -> tuple[str, str] | None:
        """The app and role of an API key made here, or None."""
        raw = self.client.hget(self._keys, key_digest(key))
        if raw is None:
            return None
        held = orjson.loads(raw)
        return held["app"], held["role"]

    def unregister(self, name: str) -> int:
        """Remove the app's registration and keys (its state is removed by the caller);
        returns the keys revoked."""
        check_name(name)
        if name == DEFAULT:
            raise AppError("app: 'default' is the deployment's own state and cannot be deleted")
        self.require(name)
        stale = [digest for digest, held in self._held().items() if held["app"] == name]
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(self._registry, name)
        pipe.hdel(self._removed, name)  # a deletion before this one's mark
        if stale:
            pipe.hdel(self._keys, *stale)
        pipe.execute()
        return len(stale)

    def registered(self, name: str) -> bool:
        """Whether ``name`` is an app now (one round trip: the worker asks after each
        write of an app's state, see :func:`delete_app`)."""
        return name == DEFAULT or bool(self.client.hexists(self._registry, name))

    def mark_deleted(self, name: str) -> None:
        self.client.hset(self._deleted, name, repr(time.time()))

    def mark_removed(self, name: str) -> None:
        """Say that the deletion of ``name`` has unlinked its state (see :func:`delete_app`)."""
        self.client.hset(self._removed, name, repr(time.time()))

    def wait_removed(self, name: str, timeout: float = 5.0, every: float = 0.05) -> bool:
        """Wait until the deletion of ``name`` has unlinked its state, at most ``timeout``
        seconds (a deletion cut short never says so); returns whether it did."""
        deadline = time.monotonic() + timeout
        while not self.client.hexists(self._removed, name):
            if time.monotonic() >= deadline:
                return False
            time.sleep(every)
        return True

    def deleted(self) -> dict[str, float]:
        """The apps deleted (and not created again since), with when."""
        registered = set(self.all())
        return {name.decode(): float(at) for name, at in self.client.hgetall(
            self._deleted).items() if name.decode() not in registered}

    def catalog_ids(self, name: str) -> tuple[list[str], list[str]]:
        """The ids of app ``name``'s items (every one ever put, deleted ones too) and of
        its users with a document: the keys its records hold on the compacted topics."""
        prefix = self.prefix(name)
        items = [item.decode() for item in self.client.zrange(
            keys.key(prefix, keys.CATALOG_CHANGED), 0, -1)]
        head = len(keys.key(prefix, keys.USER, ""))
        users = [found.decode()[head:] for found in self.client.scan_iter(
            match=keys.pattern(prefix, keys.USER), count=1000)]
        return items, users

    def remove_state(self, name: str, chunk: int = 500) -> int:
        """Unlink every Redis key of app ``name`` (:meth:`scan_state`); returns how many."""
        removed, batch = 0, []
        for found in self.scan_state(name):
            batch.append(found)
            if len(batch) >= chunk:
                removed += self._unlink(batch)
                batch = []
        return removed + (self._unlink(batch) if batch else 0)

    def _unlink(self, names: list[bytes]) -> int:
        # One key at a time on a cluster would be slow; unlink per key keeps slots apart.
        pipe = self.client.pipeline(transaction=False)
        for found in names:
            pipe.unlink(found)
        return sum(pipe.execute())

    def scan_state(self, name: str, count: int = 1000):
        """Every Redis key of an app (its state, versions, catalog, placements, feedback),
        streamed: the keys under its prefix, its versions' prefixes and, on a cluster, its
        groups'."""
        prefix = self.prefix(name)
        if name == DEFAULT:
            raise AppError("app: 'default' shares the base prefix; it is not scanned whole")
        inner = prefix[1:-1] if keys.is_tagged(prefix) else prefix
        patterns = ([keys.escape(prefix) + ":*", keys.escape(prefix[:-1]) + ".*}:*",
                     "{" + keys.escape(inner) + "/*}:*",
                     "{" + keys.escape(inner) + ".*/*}:*"]
                    if keys.is_tagged(prefix) else
                    [keys.escape(prefix) + ":*", keys.escape(prefix) + ".*:*"])
        for match in patterns:
            yield from self.client.scan_iter(match=match, count=count)


def delete_app(apps: Apps, name: str) -> dict[str, Any]:
    """Delete app ``name``: its registration and keys, then every Redis key of its state;
    says what it removed. What the API's ``DELETE /admin/apps/{app}`` and ``streamrec apps
    delete`` both do.

    The app is unregistered before its state is unlinked, and the worker asks whether an
    app is still registered after each write of its state (removing the state again when
    not): a batch the worker applied while this ran leaves nothing behind. The worker
    removes only after this deletion says it has unlinked (:meth:`Apps.mark_removed`), so
    the count here holds every key that was there. The name is
    remembered as deleted, so the worker drops (and counts) records of it still on the
    topics instead of dead-lettering data its owner asked to remove.
    """
    revoked = apps.unregister(name)
    apps.mark_deleted(name)
    items, users = apps.catalog_ids(name)  # before they go: for tombstones_of
    removed = apps.remove_state(name)
    apps.mark_removed(name)
    return {"app": name, "keys_revoked": revoked, "redis_keys_removed": removed,
            "items": items, "users": users}


def tombstones_of(settings: Any, name: str, deleted: dict[str, Any]
                  ) -> list[tuple[str, list[tuple[bytes, None]]]]:
    """The tombstones that take a deleted app's catalog records off the compacted topics
    (``(topic, [(key, None), ...])``): compaction then removes them, so no consumer that
    reads those topics from their start (a new worker, a rebuild) ever sees them again.
    Workers drop them (the app is deleted)."""
    return [(topic, [(record_key(name, identifier).encode(), None) for identifier in ids])
            for topic, ids in ((settings.items_topic, deleted["items"]),
                               (settings.users_topic, deleted["users"])) if ids]


def app_settings(settings: Any, app: App) -> Any:
    """The settings an app's roles run with: the base ones, its overrides (quotas are the
    API's, not settings), its namespace, its consumer identity."""
    overrides = {k: v for k, v in app.settings.items() if k not in QUOTAS}
    if app.name == DEFAULT:
        return settings.model_copy(update=overrides) if overrides else settings
    return settings.model_copy(update={
        **overrides,
        "redis_prefix": app_prefix(settings.redis_prefix, app.name),
        "catalog_prefix": None,
    })
