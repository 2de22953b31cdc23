"""Impressions delivered at any load the API accepts: a producer in a thread of its own.

On the event loop, the producer's sender shares the loop with every request: while the
loop is busy (ranking, hundreds of connections) its batches sat unsent until they expired
(``KafkaTimeoutError``: 1,471 of 3,426 impressions lost at 8-32 connections). Here a
thread runs its own loop and producer, so it gets the interpreter at every switch interval
whatever the request loop has queued. Requests hand records over through a bounded
buffer (a deque: appends and pops are atomic across threads); a record Kafka does not
take is sent again until it is (a repeat is harmless: the worker counts an impression
once per ``recommendation_id``). The bound is back-pressure: while ``capacity`` records
wait, :meth:`ReliableSender.full` says so and the API sheds lists (503) rather than serve
ones it could not record. Only what is still waiting when the process stops, after
``timeout`` seconds of trying, is lost, and it is counted (``dropped``): the records
waiting and those handed to the producer whose delivery was still unknown, each once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque

from aiokafka.errors import KafkaError

from streamrec import apps, kafka
from streamrec.kafka import Replacement
from streamrec.settings import Settings

log = logging.getLogger(__name__)

IDLE_SECONDS = 0.005  # how long the sender sleeps on an empty buffer
MOST_PER_ROUND = 5000  # records handed to the producer before waiting on their delivery
# Kafka's own deadline per batch: generous, since every failure is sent again anyway.
DELIVERY_TIMEOUT_SECONDS = 30.0
DRAIN_SECONDS = 2.0  # at least this long to send what waits when the process stops


class ReliableSender:
    """Send ``(topic, key, value)`` records from any thread, retrying until Kafka takes
    them, on a producer and an event loop in a thread of their own."""

    def __init__(self, settings: Settings, capacity: int, timeout: float) -> None:
        self.settings = settings  # how to reach Kafka (TLS, SASL)
        self.bootstrap = settings.kafka_bootstrap
        self.capacity = capacity
        # How long stop() keeps trying to send what waits.
        self.timeout = max(timeout, DRAIN_SECONDS)
        self._waiting: deque[tuple[str, bytes, bytes, list | None]] = deque()
        self._stopping = threading.Event()
        # The round's records whose delivery is not known yet, and whether stop() has
        # counted what was left (the thread then counts nothing more). Under _lock: the
        # thread ends a round while stop() counts.
        self._in_flight: list[tuple[str, bytes, bytes, list | None]] = []
        self._abandoned = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.dropped = 0
        self.retried = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),),
                                        name="impressions", daemon=True)
        self._thread.start()

    def full(self) -> bool:
        return len(self._waiting) >= self.capacity

    def waiting(self) -> int:
        return len(self._waiting)

    def send(self, topic: str, key: bytes, value: bytes, app: str = apps.DEFAULT) -> None:
        """Queue a record of ``app``. Callers check :meth:`full` first; a few past the
        bound (the requests in flight meanwhile) are kept, never dropped."""
        self._waiting.append((topic, key, value, apps.record_headers(app)))

    async def stop(self) -> None:
        """Send what waits for at most ``timeout`` seconds; count the rest as dropped.

        A round can outlast that (Kafka's delivery deadline is longer): its records count
        as dropped too, and whatever the thread learns of them later changes no count."""
        self._stopping.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, self.timeout + 5.0)
        with self._lock:
            self._abandoned = True
            lost = len(self._waiting) + len(self._in_flight)
            self._waiting.clear()
            self._in_flight = []
        if lost:
            self.dropped += lost
            log.warning("%d impression(s) not sent before the API stopped", lost)

    async def _run(self) -> None:
        stop_by = None
        loop = asyncio.get_running_loop()
        replacement = Replacement()
        while True:
            producer = await self._connect()
            if producer is None:
                return
            try:
                while True:
                    if self._stopping.is_set():
                        stop_by = stop_by or loop.time() + self.timeout
                        if not self._waiting or loop.time() > stop_by:
                            return
                    if not self._waiting:
                        await asyncio.sleep(IDLE_SECONDS)
                        continue
                    error = await self._round(producer)
                    if error is None:
                        replacement.succeeded()
                    elif replacement.failed(error, loop.time()):
                        log.warning("impressions: the producer kept failing; replacing it")
                        break  # a new producer; what waits is sent again by it
            finally:
                await producer.stop()

    async def _connect(self):
        delay = 0.5
        while not self._stopping.is_set():
            producer = kafka.producer(
                self.settings, linger_ms=5,
                request_timeout_ms=int(DELIVERY_TIMEOUT_SECONDS * 1000))
            try:
                await producer.start()
                return producer
            except KafkaError as error:
                await producer.stop()
                log.warning("impressions: Kafka not reachable yet (%s); retrying in %.1f s",
                            error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        return None

    async def _round(self, producer) -> BaseException | None:
        """Send up to MOST_PER_ROUND waiting records; the first failure, if any (the failed
        ones wait again, in order)."""
        with self._lock:
            records = self._in_flight = [self._waiting.popleft()
                                         for _ in range(min(MOST_PER_ROUND,
                                                            len(self._waiting)))]
        deliveries = []
        for record in records:
            topic, key, value, headers = record
            try:
                deliveries.append(await producer.send(topic, value=value, key=key,
                                                      headers=headers))
            except KafkaError as error:
                deliveries.append(_failed(error))
        outcomes = await asyncio.gather(*deliveries, return_exceptions=True)
        failed = [record for record, outcome in zip(records, outcomes, strict=True)
                  if isinstance(outcome, BaseException)]
        with self._lock:
            self._in_flight = []
            if self._abandoned:  # stop() counted them all as dropped
                return None
            self.sent += len(records) - len(failed)
            # Back to the front, in order: Kafka is away or slow.
            self._waiting.extendleft(reversed(failed))
        if failed:
            # A pause before sending them again.
            self.retried += len(failed)
            log.warning("impressions: %d record(s) not acknowledged (%r); sending again",
                        len(failed), next(o for o in outcomes if isinstance(o, BaseException)))
            await asyncio.sleep(0.5)
            return next(o for o in outcomes if isinstance(o, BaseException))
        return None


def _failed(error: BaseException) -> asyncio.Future:
    future = asyncio.get_running_loop().create_future()
    future.set_exception(error)
    return future
