"""Every app's parts in one worker: the shared topics carry all apps' records, and a batch
is split by app (:func:`streams.decode.record_app`) and each part applied with that app's
store, batches, attributor and ops, built from ``Wiring.for_app`` the first time the app
shows up and kept.

The registry (:class:`streamrec.apps.Apps`) is read again when a record names an app not
known yet (a new app is picked up at its first record, without restart) and at least
every ``refresh_seconds`` (changed settings, deleted apps). A record of an app that was
never created is dead-lettered, with the default app's part so that the default app's
offsets cover it and a replay does not send it twice; a record of a deleted app is
dropped and counted (``streamrec.storage.keys.APP_RECORDS_DROPPED``): its owner asked
for its data to go, and a dead letter would keep a copy with nowhere to replay it to.

A model version's worker (``streamrec worker [--app NAME] --version V``) keeps one app's
version: it takes that app's records only and leaves the rest to the main worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from streamrec.apps import DEFAULT, App, AppError
from streamrec.storage import keys
from streamrec.wiring import Wiring
from streams.decode import Record, highest_offsets, position, record_app

log = logging.getLogger(__name__)

REFRESH_SECONDS = 2.0


@dataclass
class Split:
    """A batch split by app: each app's records in batch order, the reasons of records
    refused (by position; they ride with the default app's part), the records of deleted
    apps dropped, and the highest offset per partition of the whole batch."""

    parts: dict[str, list[Record]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    dropped: Counter[str] = field(default_factory=Counter)
    through: dict[str, int] = field(default_factory=dict)
    apps: dict[str, App] = field(default_factory=dict)  # the parts' apps, as registered


class AppParts:
    """The worker's parts per app (see the module's docstring).

    Parameters
    ----------
    base
        The deployment's wiring (the default app's main version), or a version's wiring
        when ``only`` is given.
    build
        Makes the parts of one app from its wiring (``WorkerParts.build``).
    only
        The one app a version's worker keeps; None: every app (the main worker).
    """

    def __init__(self, base: Wiring, build: Callable[[Wiring], object],
                 only: str | None = None, refresh_seconds: float = REFRESH_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base = base
        self.build = build
        self.only = only
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.registry = base.apps()
        self._apps: dict[str, App] = {}
        self._deleted: set[str] = set()
        self._parts: dict[str, object] = {}
        self._read_at = float("-inf")
        # The agents split their batches in threads (Redis calls), side by side: the
        # caches change under this lock.
        self._lock = threading.RLock()
        if only is not None:
            self._parts[only] = build(base)

    # -- the registry -----------------------------------------------------------------

    def refresh(self) -> None:
        """Read the registry again; parts of apps deleted or with changed settings go."""
        found = self.registry.all()
        deleted = set(self.registry.deleted())
        with self._lock:
            self._deleted = deleted
            for name in list(self._parts):
                if found.get(name) != self._apps.get(name):
                    del self._parts[name]
            self._apps = found
            self._read_at = self.clock()

    def _known(self, names: Iterable[str]) -> None:
        names = set(names)
        if (self.clock() - self._read_at > self.refresh_seconds
                or any(name not in self._apps for name in names)):
            self.refresh()
            return
        # The batch's apps as registered now (one round trip): a deleted app's records
        # are dropped from its deletion on, not applied for another refresh period.
        present = sorted(names - {DEFAULT})
        now = self.registry.get_many(present)
        if any(now[name] != self._apps.get(name) for name in present):
            self.refresh()

    def parts(self, name: str, app: App | None = None):
        """The parts of app ``name`` (registered as ``app`` when :meth:`split` split the
        batch: a refresh in between may have forgotten it)."""
        with self._lock:
            if name not in self._parts:
                self._parts[name] = self.build(self.base.for_app(
                    name, app or self._apps[name]))
            return self._parts[name]

    def cached(self) -> list[object]:
        """The parts built so far (the timer settles their waiting feedback)."""
        with self._lock:
            return list(self._parts.values())

    def may_go(self, name: str) -> bool:
        """Whether app ``name`` can be deleted under this worker (not the default app,
        not a worker of one app): only then does :meth:`still_there` ask Redis."""
        return self.only is None and name != DEFAULT

    def still_there(self, name: str) -> bool:
        """After writing app ``name``'s state: whether the app still exists. When it was
        deleted meanwhile, its state (what the write put back) is removed again and its
        parts forgotten: the deletion unregisters before it unlinks, so a write that came
        after the unlink is seen here. It first waits (briefly) for the deletion's own
        unlinking to end, so that the deletion's count is whole and this takes only what
        came after."""
        if not self.may_go(name) or self.registry.registered(name):
            return True
        if not self.registry.wait_removed(name):
            log.warning("app %s: its deletion did not say it had unlinked its state; "
                        "removing it here", name)
        removed = self.registry.remove_state(name)
        self.forget(name)
        log.info("app %s was deleted while its records were applied: %d key(s) removed "
                 "again", name, removed)
        return False

    def forget(self, name: str) -> None:
        """Drop app ``name``'s parts: it was deleted."""
        with self._lock:
            self._parts.pop(name, None)
            self._apps.pop(name, None)

    # -- splitting a batch ------------------------------------------------------------

    def split(self, records: list[Record], field: bool = False) -> Split:
        """Split ``records`` by app (``field``: the events topic, whose events may name
        their app in a JSON field)."""
        split = Split(through=highest_offsets(records))
        named: list[tuple[Record, str | None, str]] = []
        for record in records:
            try:
                named.append((record, record_app(record, field), ""))
            except AppError as error:
                named.append((record, None, str(error)))
        if self.only is not None:
            # A version's worker: its app's records; the main worker handles the rest.
            split.parts[self.only] = [record for record, app, _ in named if app == self.only]
            return split
        self._known({app for _, app, _ in named if app is not None})
        with self._lock:
            known, deleted = dict(self._apps), set(self._deleted)
        grouped: dict[str, list[Record]] = defaultdict(list)
        for record, app, reason in named:
            if app is not None and app in known:
                grouped[app].append(record)
                split.apps[app] = known[app]
            elif app is not None and app in deleted:
                split.dropped[app] += 1
            else:
                split.refused[position(record)] = reason or (
                    f"app: {app!r} does not exist (create it with POST /admin/apps or "
                    "streamrec apps create)")
                grouped[DEFAULT].append(record)
                split.apps[DEFAULT] = known[DEFAULT]
        split.parts = dict(grouped)
        return split

    def record_dropped(self, topic: str, dropped: Counter[str]) -> None:
        """Count the records of deleted apps left out (under the deployment's prefix)."""
        if not dropped:
            return
        name = keys.key(self.base.settings.redis_prefix, keys.APP_RECORDS_DROPPED)
        pipe = self.registry.client.pipeline(transaction=False)
        for app, count in dropped.items():
            pipe.hincrby(name, f"{topic}|{app}", count)
        pipe.execute()
        log.info("dropped %s record(s) of deleted app(s) %s", sum(dropped.values()),
                 ", ".join(sorted(dropped)))
