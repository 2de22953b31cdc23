"""The API's Kafka producer: acks=all, idempotent, and honest about failure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from api.impressions import ReliableSender
from streamrec import apps, kafka
from streamrec.kafka import REPLACE_AFTER_FAILING_SECONDS, Replacement
from streamrec.settings import Settings

log = logging.getLogger(__name__)

class KafkaUnavailable(RuntimeError):
    """Kafka did not acknowledge in time; nothing may be reported as accepted."""


class EventProducer:
    """Starts in the background and keeps retrying, so the API can come up before Kafka."""

    def __init__(self, settings: Settings, timeout: float, impression_buffer: int = 10_000
                 ) -> None:
        self.settings = settings
        self.bootstrap = settings.kafka_bootstrap
        self.timeout = timeout
        self._producer: AIOKafkaProducer | None = None
        self._starter: asyncio.Task | None = None
        self._background: set[asyncio.Future] = set()
        self._best_effort_dropped = 0  # best-effort records Kafka never took
        self._replacement = Replacement(max(REPLACE_AFTER_FAILING_SECONDS, 3 * timeout))
        self.replaced = 0  # producers replaced because they kept failing
        # Impressions: on a producer of their own, in a thread of their own (api.impressions).
        self.impressions = ReliableSender(settings, impression_buffer, timeout)

    @property
    def dropped(self) -> int:
        """Records never sent: best-effort ones Kafka refused, and impressions still
        waiting when the process stopped."""
        return self._best_effort_dropped + self.impressions.dropped

    def start(self) -> None:
        self._starter = asyncio.create_task(self._start_until_connected())
        self.impressions.start()

    async def _start_until_connected(self) -> None:
        delay = 0.5
        while True:
            producer = kafka.producer(self.settings, linger_ms=1,
                                      request_timeout_ms=int(self.timeout * 1000))
            try:
                await producer.start()
            except KafkaError as error:
                await producer.stop()
                log.warning("Kafka not reachable yet (%s); retrying in %.1f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            self._producer = producer
            log.info("Kafka producer connected to %s", self.bootstrap)
            return

    async def stop(self) -> None:
        if self._starter is not None:
            self._starter.cancel()
        if self._background:
            await asyncio.wait(self._background, timeout=self.timeout)
        if self._producer is not None:
            await self._producer.stop()
        await self.impressions.stop()

    async def send_all(self, topic: str, messages: Sequence[tuple[bytes, bytes | None]],
                       app: str = apps.DEFAULT) -> None:
        """Produce every ``(key, value)`` of ``app`` and return once Kafka acknowledged all
        of them (a None value is a tombstone)."""
        headers = apps.record_headers(app)
        if self._producer is None:
            raise KafkaUnavailable("not connected to Kafka yet")
        try:
            async with asyncio.timeout(self.timeout):
                futures = [
                    await self._producer.send(topic, value=value, key=key, headers=headers)
                    for key, value in messages
                ]
                await asyncio.gather(*futures)
        except (TimeoutError, KafkaError) as error:
            if self._replacement.failed(error, asyncio.get_running_loop().time()):
                self._replace()
            raise KafkaUnavailable(f"Kafka did not acknowledge: {error!r}") from error
        self._replacement.succeeded()

    def _replace(self) -> None:
        """Swap a producer that keeps failing for a new one (in the background: this
        request has already failed; the next ones wait for the new producer)."""
        broken, self._producer = self._producer, None
        self.replaced += 1
        log.warning("Kafka producer kept failing; replacing it (%d so far)", self.replaced)
        if broken is not None:
            stopping = asyncio.ensure_future(broken.stop())
            self._background.add(stopping)
            stopping.add_done_callback(self._background.discard)
        self._starter = asyncio.create_task(self._start_until_connected())

    def send_soon(self, topic: str, key: bytes, value: bytes) -> bool:
        """Hand a record to the producer's buffer without waiting for Kafka (impressions:
        best effort, off the request path). False when it could not even be buffered."""
        if self._producer is None:
            return False
        task = asyncio.ensure_future(self._deliver(topic, key, value))
        self._background.add(task)
        task.add_done_callback(self._sent)
        return True

    async def _deliver(self, topic: str, key: bytes, value: bytes) -> None:
        assert self._producer is not None
        delivered = await self._producer.send(topic, value=value, key=key)
        await delivered

    def _sent(self, task: asyncio.Future) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._best_effort_dropped += 1
            log.warning("a best-effort record was not sent: %r", task.exception())

    async def ready(self) -> bool:
        if self._producer is None:
            return False
        try:
            async with asyncio.timeout(2.0):
                await self._producer.client.fetch_all_metadata()
            return True
        except (TimeoutError, KafkaError):
            return False


class _AppImpressions:
    def __init__(self, sender: ReliableSender, app: str) -> None:
        self.sender = sender
        self.app = app

    def full(self) -> bool:
        return self.sender.full()

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.sender.send(topic, key, value, app=self.app)


class AppProducer:
    """The process's producer as one app's routes use it: every record carries the app
    (:func:`streamrec.apps.record_headers`), catalog keys are the app's
    (:func:`streamrec.apps.record_key`). One per app context."""

    def __init__(self, producer: EventProducer, app: str) -> None:
        self.producer = producer
        self.app = app
        self.impressions = _AppImpressions(producer.impressions, app)

    def key(self, identifier: str) -> bytes:
        """The Kafka key of the app's catalog record (item or user) ``identifier``."""
        return apps.record_key(self.app, identifier).encode()

    async def send_all(self, topic: str, messages: Sequence[tuple[bytes, bytes | None]]
                       ) -> None:
        await self.producer.send_all(topic, messages, app=self.app)

    async def ready(self) -> bool:
        return await self.producer.ready()
