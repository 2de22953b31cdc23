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
        present = [spec for spec in topic_specs(settings) if spec.name in existing]
        if present:
            await _reconcile(admin, present)
    finally:
        await admin.close()


def _differs(name: str, wanted: str, value: str | None) -> bool:
    if name == "cleanup.policy":  # "compact,delete" compacts too
        return "compact" not in (value or "").split(",")
    return value != wanted


async def _reconcile(admin: AIOKafkaAdminClient, specs: list[NewTopic]) -> None:
    """Set what streamrec asks of its topics (append time, compaction, min.insync.replicas)
    on topics created before it asked, or by someone else: a producer's metadata request
    creates a missing topic with the broker's defaults where the broker allows it, and a
    role may come up before the one that creates them. AlterConfigs replaces every config
    set on a topic, so the others set on it are sent again with it; a topic already as
    asked is left alone. Partitions and replication cannot be changed this way."""
    try:
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, spec.name) for spec in specs])
    except (KafkaError, ValueError, IndexError) as error:
        log.warning("could not read the configs of topics %s (%s): those created by someone "
                    "else keep theirs", [spec.name for spec in specs], error)
        return
    resources = {resource[3]: (resource, response.API_VERSION)
                 for response in described for resource in response.resources}
    for spec in specs:
        try:
            (error, message, _, _, entries), version = resources[spec.name]
            if error:
                raise KafkaError(f"error {error}: {message}")
            # Entries are (name, value, read-only, default or source, sensitive, ...):
            # version 0 says is-default, later ones the source (1: set on this topic).
            current = {name: value for name, value, read_only, source, *_ in entries
                       if not read_only and (source == 1 if version else not source)}
            values = {entry[0]: entry[1] for entry in entries}
            changes = {name: wanted for name, wanted in spec.topic_configs.items()
                       if _differs(name, wanted, values.get(name))}
            if not changes:
                continue
            (altered,) = await admin.alter_configs([ConfigResource(
                ConfigResourceType.TOPIC, spec.name, configs={**current, **changes})])
            (error_code, message, *_) = altered.resources[0]
            if error_code:
                raise KafkaError(f"error {error_code}: {message}")
            log.warning("topic %s existed without what streamrec asks of it; set now: %s",
                        spec.name, ", ".join(f"{k}={v}" for k, v in sorted(changes.items())))
        except (KafkaError, ValueError, KeyError) as error:
            log.warning("could not set %s on topic %s (%s)%s", spec.topic_configs, spec.name,
                        error, _WITHOUT.get(spec.topic_configs.get(TIMESTAMP_TYPE), ""))


_WITHOUT = {APPEND_TIME: ": events written with a producer's time are bounded by the "
                         "worker's clock instead, which a rebuild does not reproduce"}


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
