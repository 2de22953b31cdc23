"""Runs of the models trained on a schedule (``ease``, ``ials``), per app, in Redis.

A run is ``MODEL@N`` (``ease@3``: the third EASE run of the app). Its artifact (the arrays
of :mod:`recommender.batch_models`, as numpy ``.npz`` bytes) is written in chunks first,
then its record (lineage, hyperparameters, offline metrics, the artifact's size and
digest): a record exists only for a complete artifact, and a reader checks the digest.
Which run serves each model is a hash of its own, switched by :meth:`TrainedRuns.promote`
and :meth:`TrainedRuns.rollback` as model versions are (one transaction, a log), and each
switch writes the model's card (``keys.MODEL_CARDS``) in the same transaction.

:class:`ServingRuns` is what an engine asks (``Engine.external_models``): the serving
run's artifact, loaded once per process and run, re-checked every
``STREAMREC_TRAINED_REFRESH_SECONDS``.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import orjson
import redis

from recommender.base import BATCH_MODELS
from recommender.batch_models import FreshBlend, TrainedRun, from_arrays
from streamrec.storage import keys
from streamrec.storage.model_versions import _open_promotes

CHUNK_BYTES = 4 * 1024**2  # one SET per chunk: no single command holds Redis for long
RUN_NAME = re.compile(r"^(?P<model>[a-z]+)@(?P<number>[0-9]{1,9})$")


class RunError(ValueError):
    """A run operation that cannot be done; ``str()`` says why."""


def parse_run(text: str) -> tuple[str, int]:
    """``MODEL@N`` as (model, number).

    >>> parse_run("ease@3")
    ('ease', 3)
    >>> parse_run("mf@1")
    Traceback (most recent call last):
    ...
    streamrec.storage.trained_runs.RunError: run: 'mf@1' is not MODEL@N with MODEL one of [...]
    """
    found = RUN_NAME.match(text)
    if found is None or found["model"] not in BATCH_MODELS:
        raise RunError(f"run: {text!r} is not MODEL@N with MODEL one of {list(BATCH_MODELS)}")
    return found["model"], int(found["number"])


def check_model(model: str) -> str:
    if model not in BATCH_MODELS:
        raise RunError(f"model: {model!r} is not a trained model: one of {list(BATCH_MODELS)}")
    return model


@dataclass
class Run:
    """A published run: what it saw (``lineage``), how it was made, how it scored."""

    model: str
    number: int
    made_at: float
    lineage: dict[str, Any]  # offsets from-to, event-time range, events, users, items
    hyperparameters: dict[str, Any]
    offline: dict[str, Any] | None  # recall@10, ndcg@10, users, events, slice
    training_seconds: float
    peak_memory_bytes: int
    artifact: dict[str, Any] = field(default_factory=dict)  # bytes, chunks, sha256
    status: str = "complete"

    @property
    def name(self) -> str:
        return f"{self.model}@{self.number}"

    def as_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def from_json(cls, raw: bytes) -> Run:
        return cls(**orjson.loads(raw))

    def card(self) -> dict[str, Any]:
        """The model card (``keys.MODEL_CARDS``) of this run serving its model."""
        return {"model": self.model, "kind": "trained", "run": self.name,
                "made_at": self.made_at, "lineage": self.lineage,
                "hyperparameters": self.hyperparameters, "offline": self.offline}


def describe_run(run: Run) -> str:
    """One line of ``streamrec versions``: the run, when, what it saw, how it scored.

    >>> print(describe_run(Run("ease", 2, 0.0, {"offsets": {"events:0": [0, 9]},
    ...     "event_time": [0.0, 60.0], "events": 10, "users": 3, "items": 4}, {}, None,
    ...     0.5, 2_000_000)))  # doctest: +NORMALIZE_WHITESPACE
    ease@2  made 1970-01-01 00:00:00Z  offsets events:0 0-9  event time 1970-01-01 00:00:00Z
    -> 1970-01-01 00:01:00Z  10 events, 3 users, 4 items  no offline metrics  trained in 0.5 s,
    peak 2 MB
    """
    def when(seconds: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(seconds))

    lineage = run.lineage
    offsets = " ".join(f"{name} {low}-{high}"
                       for name, (low, high) in sorted(lineage["offsets"].items()))
    first, last = lineage["event_time"]
    offline = run.offline
    metrics = (f"recall@10 {offline['recall@10']:.4f} ndcg@10 {offline['ndcg@10']:.4f} "
               f"({offline['events']:,} held-back events)" if offline
               else "no offline metrics")
    return (f"{run.name:<9} made {when(run.made_at)}  offsets {offsets}  event time "
            f"{when(first)} -> {when(last)}  {lineage['events']:,} events, "
            f"{lineage['users']:,} users, {lineage['items']:,} items  {metrics}  trained in "
            f"{run.training_seconds:.1f} s, peak {run.peak_memory_bytes / 1e6:.0f} MB")


def to_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def from_bytes(raw: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(raw), allow_pickle=False) as loaded:
        return {name: loaded[name] for name in loaded.files}


class TrainedRuns:
    """The run registry, artifacts and serving switch of one app (its base prefix)."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._serving = keys.key(prefix, keys.RUN_SERVING)
        self._cards = keys.key(prefix, keys.MODEL_CARDS)

    def _runs(self, model: str) -> str:
        return keys.key(self.prefix, keys.RUNS, check_model(model))

    def _log(self, model: str) -> str:
        return keys.key(self.prefix, keys.RUN_LOG, check_model(model))

    def _chunk(self, model: str, number: int, chunk: int) -> str:
        return keys.key(self.prefix, keys.RUN_ARTIFACT, f"{model}@{number}", str(chunk))

    # -- publishing ------------------------------------------------------------------

    def next_number(self, model: str) -> int:
        return int(self.client.hincrby(keys.key(self.prefix, keys.RUN_NUMBERS),
                                       check_model(model), 1))

    def publish(self, run: Run, trained: TrainedRun, max_bytes: int) -> Run:
        """Write ``trained``'s artifact, then ``run``'s record (with the artifact's size
        and digest). Refused, writing nothing, above ``max_bytes``."""
        raw = to_bytes(trained.arrays())
        if len(raw) > max_bytes:
            raise RunError(f"{run.name}: the artifact is {len(raw):,} bytes, above "
                           f"STREAMREC_TRAINER_MAX_ARTIFACT_BYTES={max_bytes:,}: lower "
                           "STREAMREC_TRAINER_ITEMS (or the factors, or the neighbours)")
        chunks = [raw[start:start + CHUNK_BYTES] for start in range(0, len(raw), CHUNK_BYTES)]
        for number, chunk in enumerate(chunks):
            self.client.set(self._chunk(run.model, run.number, number), chunk)
        run.artifact = {"bytes": len(raw), "chunks": len(chunks),
                        "sha256": hashlib.sha256(raw).hexdigest()}
        run.status = "complete"
        self.client.hset(self._runs(run.model), str(run.number), run.as_json())
        return run

    # -- reading ---------------------------------------------------------------------

    def get(self, model: str, number: int) -> Run | None:
        raw = self.client.hget(self._runs(model), str(number))
        return None if raw is None else Run.from_json(raw)

    def runs(self, model: str) -> list[Run]:
        """Every run of ``model`` kept, oldest first."""
        found = [Run.from_json(raw) for raw in self.client.hvals(self._runs(model))]
        return sorted(found, key=lambda run: run.number)

    def serving(self) -> dict[str, int]:
        """Model -> the run number that serves it (models with none are absent)."""
        return {model.decode(): int(number)
                for model, number in self.client.hgetall(self._serving).items()}

    def serving_run(self, model: str) -> int | None:
        raw = self.client.hget(self._serving, check_model(model))
        return None if raw is None else int(raw)

    def load(self, model: str, number: int) -> TrainedRun:
        """The run's artifact, checked against its record's size and digest."""
        run = self.get(model, number)
        if run is None:
            raise RunError(f"run {model}@{number} does not exist")
        chunks = self.client.mget([self._chunk(model, number, n)
                                   for n in range(run.artifact["chunks"])])
        if any(chunk is None for chunk in chunks):
            raise RunError(f"run {run.name}: its artifact is incomplete (chunks missing)")
        raw = b"".join(chunks)
        if hashlib.sha256(raw).hexdigest() != run.artifact["sha256"]:
            raise RunError(f"run {run.name}: its artifact does not match its digest")
        return from_arrays(model, from_bytes(raw))

    def card(self, model: str) -> dict[str, Any] | None:
        raw = self.client.hget(self._cards, model)
        return None if raw is None else orjson.loads(raw)

    def log(self, model: str, limit: int = 50) -> list[dict[str, Any]]:
        return [orjson.loads(raw) for raw in self.client.lrange(self._log(model), 0, limit - 1)]

    # -- switching -------------------------------------------------------------------

    def check_promotable(self, model: str, number: int) -> Run:
        run = self.get(model, number)
        if run is None:
            raise RunError(f"run {model}@{number} does not exist (see `streamrec versions`)")
        if run.status != "complete":
            raise RunError(f"run {run.name} is {run.status}, not complete")
        return run

    def promote(self, model: str, number: int, author: str = "cli") -> int | None | bool:
        """Serve run ``number`` of ``model``; returns the run it replaced (None: none
        served), or False when it serves already (nothing changed or logged)."""
        self.check_promotable(model, number)
        return self._switch(model, lambda current, log: number, author, "promote")

    def rollback(self, model: str, author: str = "cli") -> int | None:
        """Serve again the run that served before the last promote of ``model`` not undone
        yet (None: no run, the model is not served); returns it."""

        def previous(current: int | None, log: list[dict[str, Any]]) -> int | None:
            promotes = [entry for entry in log if entry["action"] == "promote"]
            if not promotes:
                raise RunError(f"nothing to roll back: no run of {model} was promoted")
            return promotes[0]["previous"]

        restored = self._switch(model, previous, author, "rollback")
        assert restored is not False
        return restored  # type: ignore[return-value]

    def _switch(self, model: str, choose: Callable[[int | None, list], int | None],
                author: str, action: str) -> int | None | bool:
        log_key = self._log(model)
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self._serving, log_key)
                    raw = pipe.hget(self._serving, model)
                    current = None if raw is None else int(raw)
                    log = [orjson.loads(entry) for entry in pipe.lrange(log_key, 0, 99)]
                    if action == "rollback":
                        log = _open_promotes(log)
                    target = choose(current, log)
                    if action == "promote" and target == current:
                        pipe.unwatch()
                        return False
                    run = None if target is None else self.get(model, target)
                    if target is not None and run is None:
                        raise RunError(f"run {model}@{target} no longer exists (older runs "
                                       "than STREAMREC_TRAINER_KEEP_RUNS are deleted)")
                    pipe.multi()
                    if run is None:
                        pipe.hdel(self._serving, model)
                        pipe.hdel(self._cards, model)
                    else:
                        pipe.hset(self._serving, model, str(target))
                        pipe.hset(self._cards, model, orjson.dumps(run.card()))
                    pipe.lpush(log_key, orjson.dumps({
                        "action": action, "version": target, "previous": current,
                        "author": author, "at": time.time()}))
                    pipe.ltrim(log_key, 0, 999)
                    pipe.execute()
                    return current if action == "promote" else target
                except redis.WatchError:
                    continue

    # -- retention -------------------------------------------------------------------

    def prune(self, model: str, keep: int) -> list[int]:
        """Delete all but the ``keep`` newest runs of ``model`` (never the serving one,
        nor the run a rollback would restore); returns the numbers deleted."""
        runs = self.runs(model)
        spared = {self.serving_run(model)}
        promotes = _open_promotes(self.log(model, 100))
        if promotes:
            spared.add(promotes[0]["previous"])
        old = [run for run in runs[:max(0, len(runs) - keep)] if run.number not in spared]
        for run in old:
            # The record first: a run without one is never loaded, so a half-deleted
            # artifact is never read.
            self.client.hdel(self._runs(model), str(run.number))
            chunks = [self._chunk(model, run.number, n)
                      for n in range(run.artifact.get("chunks", 0))]
            for name in chunks:
                self.client.unlink(name)
        return [run.number for run in old]


class ServingRuns:
    """``Engine.external_models`` for ``ease`` and ``ials``: model name -> the serving
    run's artifact, or None when no run serves it (the engine backfills).

    Which run serves is read at most once per ``refresh_seconds`` per model; an artifact
    is loaded once per run and kept while it serves, so a request pays a dictionary
    lookup. A run that cannot be loaded is logged by the caller's logger and the
    previous one keeps serving.
    """

    def __init__(self, runs: TrainedRuns, refresh_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_error: Callable[[str], None] | None = None,
                 fresh_weight: float = 0.0) -> None:
        self.runs = runs
        # > 0: each run's list fused with co-occurrence's (recommender.batch_models.FreshBlend)
        self.fresh_weight = fresh_weight
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.on_error = on_error
        self._checked: dict[str, float] = {}
        self._loaded: dict[str, tuple[int, TrainedRun | FreshBlend]] = {}
        self._lock = threading.Lock()

    def __call__(self, model: str) -> TrainedRun | FreshBlend | None:
        if model not in BATCH_MODELS:
            return None
        now = self.clock()
        if now - self._checked.get(model, -float("inf")) >= self.refresh_seconds:
            with self._lock:  # one reader per process refreshes; the others use the last
                if now - self._checked.get(model, -float("inf")) >= self.refresh_seconds:
                    self._refresh(model)
                    self._checked[model] = now
        loaded = self._loaded.get(model)
        return None if loaded is None else loaded[1]

    def _refresh(self, model: str) -> None:
        try:
            number = self.runs.serving_run(model)
            if number is None:
                self._loaded.pop(model, None)
            elif self._loaded.get(model, (None,))[0] != number:
                run = self.runs.load(model, number)
                self._loaded[model] = (number, FreshBlend(run, self.fresh_weight)
                                       if self.fresh_weight > 0 else run)
        except (RunError, redis.RedisError) as error:
            if self.on_error is not None:
                self.on_error(f"{model}: {error}")
