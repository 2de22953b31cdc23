"""Snapshots of a model version's state: every state key (Redis DUMP format, with its TTL)
and the offsets it reflects, written to a file and restored into another namespace, so a
rebuild can start from a snapshot and replay only the log after it."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis

from streamrec.storage import keys
from streamrec.storage.model_versions import VersionError, in_chunks, scan_state


def _relative(name: bytes, prefix: str) -> str:
    """A state key's name without its version's prefix, as a snapshot keeps it. A tagged
    prefix's group keys start "{<prefix>/": both keep what follows the tag's opening."""
    cut = len(prefix) - 1 if keys.is_tagged(prefix) else len(prefix)
    return name[cut:].decode("latin-1")


def _absolute(relative: str, prefix: str) -> bytes:
    start = prefix[:-1] if keys.is_tagged(prefix) else prefix
    return start.encode() + relative.encode("latin-1")



# The number changes with the layout of the values a snapshot copies byte for byte (2: user
# factors in float16, history times in milliseconds; 3: decayed keys with landmarks; 4:
# histories with the scored event types in their scores, scripts.HISTORY_MARKER); an older
# snapshot is refused, and the event log rebuilds the state. Format 3 differs only by its
# histories, which are read in their layout and rewritten by the first batch that touches
# the user, so it is restored. Format 2 differs from 3 only by having no landmarks: its
# decayed keys are read in the legacy epoch's frame, as state upgraded in place is
# (recommender.decay), so it is restored. (A streamrec that writes 3 refuses 4.)
SNAPSHOT_FORMAT = "streamrec-snapshot-4"
EVERY_EVENT_TYPE = "streamrec-snapshot-3"
WITHOUT_LANDMARKS = "streamrec-snapshot-2"


PAUSE_MILLISECONDS = 30_000  # a saver that dies holds the worker at most this long


def save_snapshot(client: redis.Redis, prefix: str, path: Path,
                  progress: Callable[[int], None] | None = None,
                  settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write every state key of ``prefix`` (DUMP format, with its TTL) to ``path``, one JSON
    line each after a header; returns the header (it holds the offsets applied).

    The copy is one point in time, whether or not a worker runs: the state's PAUSE keys
    are set first, and every APPLY (a worker's, a rebuild's) waits while they exist, so
    the offsets and the keys do not move until the copy is written. On a cluster a batch
    may be paused between two of its groups' calls: the copy then holds what a crash
    there leaves, which the worker continues from exactly (``streams.catchup``)."""
    pauses = keys.pause_keys(prefix)
    try:
        _pause(client, pauses)
        return _save(client, prefix, path, progress, settings, lambda: _pause(client, pauses))
    finally:
        for name in pauses:  # one by one: a cluster's are in other slots
            client.delete(name)


def _pause(client: redis.Redis, names: list[str]) -> None:
    for name in names:
        client.set(name, 1, px=PAUSE_MILLISECONDS)


def _save(client: redis.Redis, prefix: str, path: Path,
          progress: Callable[[int], None] | None, settings: dict[str, Any] | None,
          keep_paused: Callable[[], None]) -> dict[str, Any]:
    offsets = {name.decode(): int(value) for name, value in
               client.hgetall(keys.key(prefix, keys.OFFSETS)).items()}
    header = {"format": SNAPSHOT_FORMAT, "prefix": prefix, "created_at": time.time(),
              "offsets": offsets, "settings": settings or {}, "keys": 0}
    written = 0
    with open(path, "wb") as out:
        out.write(orjson.dumps(header) + b"\n")
        for chunk in in_chunks(scan_state(client, prefix), 500):
            keep_paused()
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
        if header.get("format") not in (SNAPSHOT_FORMAT, EVERY_EVENT_TYPE, WITHOUT_LANDMARKS):
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
