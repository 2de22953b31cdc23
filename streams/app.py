"""The Faust App, and nothing else."""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from streamrec.connections import faust_credentials
from streamrec.settings import Settings


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, with the worker's ``fetch_max_wait_ms``.

    Faust fixes the worker consumer's ``fetch_max_wait_ms`` at 1,500. aiokafka sends one
    fetch per broker, for the partitions with nothing left unread. So the fetch sent just
    after the events arrive names only the idle topics (impressions, items, users). The
    broker holds it the full wait, and the events topic is not fetched again until it
    returns. Events then reach the worker in bursts, 1.5 s apart."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start(), which builds the fetcher with it (aiokafka
        # 0.14, pinned); Faust passes the constant without a setting.
        consumer._fetch_max_wait_ms = self.app.conf.streamrec_fetch_max_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class App(faust.App):
    """A Faust App whose consumer waits at most ``fetch_max_wait_ms`` on a fetch."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conf.streamrec_fetch_max_wait_ms = fetch_max_wait_ms

    def _new_transport(self) -> _Transport:
        return _Transport(self.conf.broker_consumer, self)


def create_app(settings: Settings) -> faust.App:
    """The worker's App for ``settings`` (a model version's, for a version's worker: its
    consumer group and data directory). Its topics and agents are declared on it by
    :func:`streams.worker.build`."""
    return App(
        settings.worker_id,
        fetch_max_wait_ms=settings.worker_fetch_max_wait_ms,
        broker=settings.faust_broker,
        broker_credentials=faust_credentials(settings),  # TLS, SASL (managed Kafka)
        origin="streams",
        key_serializer="raw",
        value_serializer="raw",
        store="memory://",
        # Faust keeps a small data directory per app; keep it out of the working tree's root.
        datadir=f"{settings.data_dir}/faust/{{conf.name}}",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        web_enabled=False,
        Worker="streams.worker:Worker",  # ends within a bound of SIGTERM, whatever Kafka does
        # How long a dead worker holds its partitions before the group hands them on.
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_seconds / 3),
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=max(4096, 2 * settings.batch_size),
    )
