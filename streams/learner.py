"""The worker's learning process: a child of the worker that holds its engines and applies
its batches, so that Faust's per-record path and the learning run on two cores.

A worker's events agent spends about as much of its one core on Faust's per-record path
(fetch, stream, acks: what a do-nothing agent costs too) as on decoding and learning; in a
thread the two took turns holding the GIL, and the worker reached about half of the
do-nothing agent's rate (docs/benchmarks.md, "The learning in a process of its own").
Here the agent hands each app's part of a batch to this process and awaits it, while the
event loop keeps fetching the next batch.

Nothing about effectively once changes: the agent still moves on from a batch (and Faust
commits its offsets) only after the learner applied it with its offsets in Redis. The
learner dies with the worker (``PR_SET_PDEATHSIG``), so a worker killed with SIGKILL
leaves no learner applying behind its successor; a learner that dies alone is started
again and the part it held is read again from the applied offsets.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import redis

from recommender.attribution import waiting_entry
from streamrec import logs
from streamrec.apps import App
from streamrec.settings import Settings
from streamrec.wiring import Wiring
from streams.app_parts import AppParts
from streams.catchup import Waiting
from streams.decode import PlainRecord, Record, position
from streams.worker_parts import WorkerParts, refresh_engines

log = logging.getLogger(__name__)

T = TypeVar("T")
_PR_SET_PDEATHSIG = 1


class LearnerLost(Exception):
    """The learning process died (and was started again): the part must be read again."""


def plain(record: Record) -> PlainRecord:
    """A record the learner can be sent (Faust's messages hold their consumer)."""
    headers = record.headers
    if headers and not isinstance(headers, list | tuple | Mapping):
        headers = list(headers)
    return PlainRecord(record.topic, record.partition, record.offset, record.key,
                       record.value, record.timestamp, record.timestamp_type, headers or ())


class Learner:
    """The worker's side: calls into the learning process, which starts on the first."""

    def __init__(self, settings: Settings, only: str | None, log_level: str = "info") -> None:
        self.settings = settings
        self.only = only
        self.log_level = log_level.upper()  # the worker's --log-level
        self._pool: ProcessPoolExecutor | None = None
        self._restart_delay = 0.0  # grows while the process keeps dying (0.2 s to 10 s)

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn"), initializer=_serve,
            initargs=(self.settings, self.only, os.getpid(), self.log_level))

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in the learning process, retried with backoff while Redis
        is away (as :func:`streams.agents.steadily` does). Raises :class:`LearnerLost`
        when the process died meanwhile (it is started again for the next call)."""
        delay = 0.2
        while True:
            if self._pool is None:
                self._pool = self._start()
            pool = self._pool
            try:
                result = await asyncio.get_running_loop().run_in_executor(
                    pool, function, *args)
            except BrokenProcessPool as error:
                # Every call the process held or had queued (the events agent's and the
                # refresh timer's) lands here: the first lets the dead pool go, and none
                # touches a pool another call started since.
                if self._pool is pool:
                    pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = None
                    self._restart_delay = min(max(0.2, self._restart_delay * 2), 10.0)
                    log.error("the learning process died (%s); starting it again in %.1f s",
                              error, self._restart_delay)
                await asyncio.sleep(self._restart_delay)
                raise LearnerLost(str(error)) from error
            except redis.RedisError as error:
                log.warning("Redis unavailable (%s); retrying in %.1f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            else:
                self._restart_delay = 0.0
                return result


# -- the learning process -------------------------------------------------------------

_apps: Any = None  # the process's AppParts (streams.app_parts), built by _serve
# app -> its part, read, not learned: the batch, the feedback kept waiting, the Kafka times
# of the part's records (for the freshness histogram)
_pending: dict[str, tuple[Any, list[Waiting], list[float]]] = {}


def _serve(settings: Settings, only: str | None, parent: int, level: str) -> None:
    """Set up the learning process: die with the worker, log as it does, build the parts
    as the worker does (one engine per app)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except AttributeError:  # not Linux: it ends after its call, finding the pipe closed
        pass
    if os.getppid() != parent:  # the worker died before the death signal was set
        os._exit(1)
    logs.install()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    global _apps
    _apps = AppParts(Wiring.connect(settings, "worker"), WorkerParts.build, only)


def ready() -> int:
    """The learning process's pid, once it is set up."""
    return os.getpid()


def read(name: str, app: App | None, records: list[PlainRecord], refused: dict[str, str],
         through: dict[str, int], feedback: bool) -> tuple[int, list[tuple[str, str]]]:
    """Read app ``name``'s part of a batch against its applied offsets and keep it for
    :func:`learn`; returns how many records it has not applied yet and the rejected
    ones (position, reason) for the worker to dead-letter first. With ``feedback``, the
    rewards among them are kept with the batch to wait for their impressions: they are
    written to Redis with the batch's state and offsets, so a crash from then on loses
    none of them."""
    parts = _apps.parts(name, app)
    batch = parts.batches.read(records, None, refused, through)
    if not batch.records:
        _pending.pop(name, None)
        return 0, []
    attributor = parts.attributor
    waiting = [
        (f.position, waiting_entry(f.position, (
            f.recommendation_id, f.user_id, f.item_id, f.event_type, f.timestamp,
            f.received)), time.time() + attributor.grace)
        for f in batch.decoded.feedback if f.event_type in attributor.reward_types
    ] if feedback else []
    _pending[name] = (batch, waiting, [record.timestamp for record in records])
    return len(batch.records), [(position(reject.record), reject.reason)
                                for reject in batch.decoded.rejected]


def read_and_learn(name: str, app: App | None, records: list[PlainRecord],
                   refused: dict[str, str], through: dict[str, int], feedback: bool
                   ) -> tuple[int, list[tuple[str, str]], tuple[int, int, bool] | None]:
    """:func:`read`, then :func:`learn` in the same call when nothing was rejected (the
    usual part: one hop between the processes instead of two). With rejects, learning
    waits for the worker to dead-letter them first: the third value is None and the
    worker calls :func:`learn` itself."""
    count, rejects = read(name, app, records, refused, through, feedback)
    if not count or rejects:
        return count, rejects, None
    return count, rejects, learn(name)


def learn(name: str) -> tuple[int, int, bool]:
    """Learn the part :func:`read` kept for app ``name`` and write it with its offsets;
    returns the records left out for repeating an event id, the interactions learned and
    whether feedback waits. A Redis error leaves the part kept, for the retry."""
    batch, waiting, times = _pending[name]
    parts = _apps.parts(name)
    repeated = parts.batches.learn(batch, waiting)
    del _pending[name]
    if batch.decoded.interactions:
        record_freshness(parts, times, time.time())
    return len(repeated), len(batch.decoded.interactions), bool(waiting)


def record_freshness(parts: WorkerParts, times: list[float], now: float) -> None:
    """Every record's freshness (milliseconds from its Kafka time to ``now``) into the
    histogram on ``/metrics``, once its part is applied. A metric, not state: when Redis
    fails here, after the part and its offsets were written, the part's samples are left
    out (with a warning) rather than the part applied again."""
    try:
        parts.ops.record_freshness([max(0.0, (now - at) * 1000) for at in times])
    except redis.RedisError as error:
        log.warning("Redis unavailable (%s); the freshness of %d records not recorded",
                    error, len(times))


def refresh() -> None:
    """Bring the tally trials' copies up to date (``streams.worker_parts.refresh_engines``)."""
    refresh_engines([parts.batches.engine for parts in _apps.cached()])


def forget(name: str) -> None:
    """App ``name`` was deleted: its engine goes, as the worker's parts did."""
    _pending.pop(name, None)
    _apps.forget(name)
