"""The events topic stamps every record with the broker's append time, the "received" time
that bounds an event's own: a new topic is created so, and one that existed before is set so
by the next role that starts, keeping whatever else was set on it."""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streamrec.kafka import ensure_topics
from streamrec.settings import Settings
from tests.api.conftest import wait_for

FAR_AHEAD_MS = 4_102_444_800_000  # 2100


async def _configs(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)])
        return {entry[0]: entry[1] for entry in response.resources[0][4]}
    finally:
        await admin.close()


async def _create(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs=configs)])
    finally:
        await admin.close()


async def _round_trip(bootstrap: str, topic: str) -> tuple[float, int]:
    """Produce one record claiming a time far ahead; the time and type it is read back with."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}", key=b"k", timestamp_ms=FAR_AHEAD_MS)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 30)
        return record.timestamp / 1000, record.timestamp_type
    finally:
        await consumer.stop()


def _settings(bootstrap: str, run: str) -> Settings:
    return Settings(kafka_bootstrap=bootstrap, events_topic=f"{run}.events",
                    dead_letter_topic=f"{run}.dlq", items_topic=f"{run}.items",
                    users_topic=f"{run}.users", impressions_topic=f"{run}.impressions",
                    metrics_topic=f"{run}.metrics")


def test_new_and_existing_events_topics_stamp_the_append_time(services):
    bootstrap = services["bootstrap"]
    new, old = (_settings(bootstrap, f"topics{uuid.uuid4().hex[:6]}") for _ in range(2))
    asyncio.run(_create(bootstrap, old.events_topic, {"retention.ms": "123456789"}))
    for settings in (new, old):
        asyncio.run(ensure_topics(settings))
        configs = wait_for(lambda s=settings: (c := asyncio.run(_configs(
            bootstrap, s.events_topic)))["message.timestamp.type"] == "LogAppendTime" and c,
            timeout=30, every=0.5)
        assert configs, settings.events_topic
        sent = time.time()
        at, kind = asyncio.run(_round_trip(bootstrap, settings.events_topic))
        assert kind == 1 and sent - 5 < at < time.time() + 5  # the broker's, not 2100
    assert configs["retention.ms"] == "123456789"  # what was set before stays
    asyncio.run(ensure_topics(old))  # a role starting again changes nothing more
    assert asyncio.run(_configs(bootstrap, old.events_topic))["retention.ms"] == "123456789"


def test_topics_created_by_someone_else_get_what_streamrec_asks_of_them(services):
    """A topic the broker created with its defaults (a producer's metadata request, before
    the worker ran) is compacted, or gets min.insync.replicas, when a role starts."""
    bootstrap = services["bootstrap"]
    run = f"topics{uuid.uuid4().hex[:6]}"
    settings = _settings(bootstrap, run).model_copy(
        update={"topic_min_insync_replicas": 2})
    asyncio.run(_create(bootstrap, settings.items_topic, {"retention.ms": "123456789"}))
    asyncio.run(_create(bootstrap, settings.dead_letter_topic, {}))
    asyncio.run(_create(bootstrap, settings.metrics_topic, {"cleanup.policy": "delete"}))
    asyncio.run(ensure_topics(settings))

    def configs(topic: str) -> dict[str, str]:
        return wait_for(lambda: (c := asyncio.run(_configs(bootstrap, topic)))
                        ["min.insync.replicas"] == "2" and c, timeout=30, every=0.5)

    items = configs(settings.items_topic)
    assert items and items["cleanup.policy"] == "compact"
    assert items["retention.ms"] == "123456789"  # what was set before stays
    assert configs(settings.dead_letter_topic)["cleanup.policy"] == "delete"
    metrics = asyncio.run(_configs(bootstrap, settings.metrics_topic))
    assert metrics["cleanup.policy"] == "delete"  # streamrec asks nothing of it
    assert metrics["min.insync.replicas"] == "1"
