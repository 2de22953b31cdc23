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
import pickle
import signal
import socket
import struct
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import redis

from recommender.attribution import waiting_entry
from streamrec import collector, logs
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
        self._process: _Process | None = None
        self._restart_delay = 0.0  # grows while the process keeps dying (0.2 s to 10 s)

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in the learning process, retried with backoff while Redis
        is away (as :func:`streams.agents.steadily` does). Raises :class:`LearnerLost`
        when the process died meanwhile (it is started again for the next call)."""
        delay = 0.2
        while True:
            if self._process is None:
                self._process = _Process(self.settings, self.only, self.log_level)
            process = self._process
            try:
                result = await process.call(function, args)
            except _Lost as error:
                # Every call the process held or had queued (the events agent's and the
                # refresh timer's) lands here: the first lets the dead process go, and
                # none touches a process another call started since.
                if self._process is process:
                    process.close()
                    self._process = None
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

    def close(self) -> None:
        """Stop the learning process (the worker's lives as long as the worker)."""
        if self._process is not None:
            self._process.close()
            self._process = None


class _Lost(Exception):
    """The learning process ended (or its channel broke) before it answered."""


# A frame on the channel: its length, then a pickle of (function, args) one way and of
# (ok, result or exception) the other.
_LENGTH = struct.Struct("!Q")


class _Process:
    """One learning process and its socket, driven from the event loop itself.

    A ``ProcessPoolExecutor`` hands each call to a manager thread and a queue's feeder
    thread: while Faust's per-record path kept the worker's event loop busy, each of those
    threads waited for the GIL, and a part reached the learning process 40-55 ms after it
    was sent (a fifth of the learner's time idle at the bench's 100k items). Here the
    loop writes the call and reads the answer on a socket, with no thread in between.
    Calls go one at a time, in order; a call cancelled while the process worked leaves an
    answer the next call reads past."""

    def __init__(self, settings: Settings, only: str | None, level: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._socket, child = socket.socketpair()
        self.process = context.Process(
            target=_serve_calls, args=(child, settings, only, os.getpid(), level),
            name="streamrec-learner", daemon=True)
        self.process.start()
        child.close()
        self._lock = asyncio.Lock()
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._unread = 0  # answers of cancelled calls, still to come
        self._lost: str | None = None

    async def call(self, function: Callable[..., Any], args: tuple) -> Any:
        async with self._lock:
            if self._lost is not None:
                raise _Lost(self._lost)
            if self._streams is None:
                self._streams = await asyncio.open_connection(sock=self._socket)
            reader, writer = self._streams
            request = pickle.dumps((function, args), pickle.HIGHEST_PROTOCOL)
            try:
                while self._unread:
                    await _read_frame(reader)
                    self._unread -= 1
                writer.write(_LENGTH.pack(len(request)) + request)
                try:
                    await writer.drain()
                except asyncio.CancelledError:
                    self._lost = "a call was cancelled while it was being sent"
                    raise
                try:
                    answer = await _read_frame(reader)
                except asyncio.CancelledError:
                    self._unread += 1
                    raise
            except (OSError, EOFError, asyncio.IncompleteReadError) as error:
                self._lost = (f"the learning process (pid {self.process.pid}) ended: "
                              f"{error!r}, exit code {self.process.exitcode}")
                raise _Lost(self._lost) from error
        ok, result = pickle.loads(answer)
        if not ok:
            raise result
        return result

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
        else:
            self._socket.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return await reader.readexactly(length)


def _receive(channel: socket.socket, size: int) -> bytes:
    data = bytearray(size)
    view, at = memoryview(data), 0
    while at < size:
        got = channel.recv_into(view[at:])
        if not got:
            raise EOFError("the worker closed the channel")
        at += got
    return bytes(data)


def _serve_calls(channel: socket.socket, settings: Settings, only: str | None, parent: int,
                 level: str) -> None:
    """The learning process: set up, then answer each call the worker sends until it
    closes the channel (or dies: the death signal ends this process with it)."""
    _serve(settings, only, parent, level)
    while True:
        try:
            (length,) = _LENGTH.unpack(_receive(channel, _LENGTH.size))
            function, args = pickle.loads(_receive(channel, length))
        except EOFError:
            return
        try:
            answer = pickle.dumps((True, function(*args)), pickle.HIGHEST_PROTOCOL)
        except Exception as error:  # raised in the worker, as it was here
            error.add_note("in the learning process:\n" + traceback.format_exc())
            try:
                answer = pickle.dumps((False, error), pickle.HIGHEST_PROTOCOL)
            except Exception:  # an exception that cannot be pickled
                answer = pickle.dumps((False, RuntimeError(traceback.format_exc())))
        channel.sendall(_LENGTH.pack(len(answer)) + answer)


# -- the learning process -------------------------------------------------------------

_apps: Any = None  # the process's AppParts (streams.app_parts), built by build()
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
    build(settings, only)
    collector.settle()


def build(settings: Settings, only: str | None = None) -> AppParts:
    """Build the parts the calls below work on, as the worker builds its own (one engine
    per app), and return them; a part kept by an earlier build is forgotten."""
    global _apps
    _apps = AppParts(Wiring.connect(settings, "worker"), WorkerParts.build, only)
    _pending.clear()
    return _apps


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
