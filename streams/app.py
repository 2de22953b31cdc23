"""The Faust App, and nothing else."""

from __future__ import annotations

import faust

from streamrec.connections import faust_credentials
from streamrec.settings import Settings


def create_app(settings: Settings) -> faust.App:
    """The worker's App for ``settings`` (a model version's, for a version's worker: its
    consumer group and data directory). Its topics and agents are declared on it by
    :func:`streams.worker.build`."""
    return faust.App(
        settings.worker_id,
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
