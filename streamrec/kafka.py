"""Kafka as streamrec sets it up: its topics (partitions, cleanup policies, append time)
and the one producer configuration every producer starts from."""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    TopicAlreadyExistsError,
)

from streamrec.connections import check_kafka, kafka_client_options
from streamrec.settings import Settings

log = logging.getLogger(__name__)

# The broker stamps each event with the time it appended it: the "received" time that
# bounds an event's own time (STREAMREC_MAX_EVENT_TIME_SKEW_SECONDS). No producer can set
# it, and the log keeps it, so a replay or a rebuild finds the same time again.
TIMESTAMP_TYPE = "message.timestamp.type"
APPEND_TIME = "LogAppendTime"


def producer(settings: Settings, **options: Any) -> AIOKafkaProducer:
    """A producer whose sends count once they are acknowledged: every in-sync replica has
    the record (acks=all), and a retried send is not written twice (idempotence). It
    connects as the settings say (TLS, SASL). ``options`` tune batching (``linger_ms``,
    ``max_batch_size``) for the caller's load."""
    return AIOKafkaProducer(**kafka_client_options(settings), acks="all",
                            enable_idempotence=True, **options)


# An idempotent producer whose sequence numbers no longer match the broker's (a send that
# never reached a broker that restarted: OutOfOrderSequenceNumber) never recovers on its own:
# without a new producer the API would answer 503 until it restarts. These errors replace it
# at once; any other failure lasting this long replaces it too.
BROKEN = (OutOfOrderSequenceNumber, ProducerFenced)
REPLACE_AFTER_FAILING_SECONDS = 15.0


class Replacement:
    """When a producer that keeps failing should be replaced by a new one."""

    def __init__(self, after: float = REPLACE_AFTER_FAILING_SECONDS) -> None:
        self.after = after
        self.failing_since: float | None = None

    def succeeded(self) -> None:
        self.failing_since = None

    def failed(self, error: BaseException, now: float) -> bool:
        """Record a failure; True when the producer should be replaced now."""
        if self.failing_since is None:
            self.failing_since = now
        if isinstance(error, BROKEN) or isinstance(error.__cause__, BROKEN) \
                or now - self.failing_since > self.after:
            self.failing_since = None
            return True
        return False


def topic_specs(settings: Settings) -> list[NewTopic]:
    durable = ({} if settings.topic_min_insync_replicas is None
               else {"min.insync.replicas": str(settings.topic_min_insync_replicas)})
    compacted = {"cleanup.policy": "compact", **durable}
    partitions, replicas = settings.topic_partitions, settings.topic_replication
    return [
        NewTopic(settings.events_topic, partitions, replicas,
                 topic_configs={TIMESTAMP_TYPE: APPEND_TIME, **durable}),
        NewTopic(settings.dead_letter_topic, partitions, replicas, topic_configs=durable),
        NewTopic(settings.impressions_topic, partitions, replicas, topic_configs=durable),
        NewTopic(settings.metrics_topic, 1, replicas),
        NewTopic(settings.items_topic, partitions, replicas, topic_configs=compacted),
        NewTopic(settings.users_topic, partitions, replicas, topic_configs=compacted),
    ]


async def ensure_topics(settings: Settings, role: str = "streamrec") -> None:
    """Create the topics that are missing. Raises
    :class:`~streamrec.connections.ConnectionFailed` naming ``role`` when the broker refuses
    the credentials or certificates, ``KafkaError`` when it does not answer."""
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    try:
        await admin.start()
    except KafkaError:
        await admin.close()
        await check_kafka(settings, role)  # says why, when retrying cannot mend it
        raise
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in topic_specs(settings) if spec.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another role created them first
        if settings.events_topic in existing:
            await _stamp_append_time(admin, settings.events_topic)
    finally:
        await admin.close()


async def _stamp_append_time(admin: AIOKafkaAdminClient, topic: str) -> None:
    """Make an events topic created before streamrec asked for it (or by someone else)
    stamp its records with the broker's append time. AlterConfigs replaces every config
    set on the topic, so the others set on it are sent again with it."""
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)])
        (_, _, _, _, entries) = response.resources[0]
        # Entries are (name, value, read-only, default or source, sensitive, ...): version
        # 0 says is-default, later ones the source (1: set on this topic).
        current = {name: value for name, value, read_only, source, *_ in entries
                   if not read_only and (source == 1 if response.API_VERSION else not source)}
        if dict((entry[0], entry[1]) for entry in entries).get(TIMESTAMP_TYPE) == APPEND_TIME:
            return
        (altered,) = await admin.alter_configs([ConfigResource(
            ConfigResourceType.TOPIC, topic, configs={**current, TIMESTAMP_TYPE: APPEND_TIME})])
        (error_code, message, *_) = altered.resources[0]
        if error_code:
            raise KafkaError(f"error {error_code}: {message}")
        log.info("topic %s now stamps records with the broker's append time", topic)
    except (KafkaError, ValueError, IndexError) as error:
        log.warning("could not set %s=%s on topic %s (%s): events written with a producer's "
                    "time are bounded by the worker's clock instead, which a rebuild does not "
                    "reproduce", TIMESTAMP_TYPE, APPEND_TIME, topic, error)


async def partition_ids(settings: Settings, topic: str) -> list[int]:
    """The partitions ``topic`` has now (a replay reads each of them to its end)."""
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for entry in described if entry.get("error_code", 0) == 0
                  for p in entry.get("partitions", ()))
