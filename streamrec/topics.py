"""Create streamrec's topics with the right partitions and cleanup policies."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streamrec.settings import Settings


def topic_specs(settings: Settings) -> list[NewTopic]:
    compacted = {"cleanup.policy": "compact"}
    partitions, replicas = settings.topic_partitions, settings.topic_replication
    return [
        NewTopic(settings.events_topic, partitions, replicas),
        NewTopic(settings.dead_letter_topic, partitions, replicas),
        NewTopic(settings.impressions_topic, partitions, replicas),
        NewTopic(settings.metrics_topic, 1, replicas),
        NewTopic(settings.items_topic, partitions, replicas, topic_configs=compacted),
        NewTopic(settings.users_topic, partitions, replicas, topic_configs=compacted),
    ]


async def ensure_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in topic_specs(settings) if spec.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another role created them first
    finally:
        await admin.close()
