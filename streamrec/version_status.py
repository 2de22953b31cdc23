"""Whether a model version is live and how far behind it is: read from Kafka (the events
topic's end offsets; the members of the version's consumer group) and Redis (the offsets
its state applied).

A version is **live** when its consumer group has a member: a ``streamrec worker
[--version NAME]`` consumes for it. Its **lag** is the number of events in the events
topic after the offsets its state applied (what a rebuild or a worker has still to
learn). Promoting a version that is not live, or lags by more than
``STREAMREC_PROMOTE_MAX_LAG``, would freeze what is served (``streamrec promote``
refuses it unless forced).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streamrec.settings import Settings
from streamrec.storage import keys
from streamrec.storage.model_versions import Version, Versions, version_settings

KAFKA_SECONDS = 10.0  # bounds every look at Kafka: a status must not hang a command


@dataclass(frozen=True)
class VersionStatus:
    name: str
    live: bool | None  # None: Kafka did not answer
    workers: int  # members of the version's consumer group
    lag: int | None  # events not applied yet; None: Kafka did not answer
    error: str | None = None  # why Kafka did not answer

    def describe(self) -> str:
        """One phrase for a listing: ``live, 0 behind``, ``NOT LIVE, 312 behind``."""
        if self.error is not None:
            return f"status unknown ({self.error})"
        state = f"live ({self.workers} worker{'s' if self.workers != 1 else ''})" \
            if self.live else "NOT LIVE"
        return f"{state}, {self.lag:,} behind"


def consumer_group(settings: Settings, version: Version) -> str:
    """The consumer group of ``version``'s worker (its Faust app id)."""
    return version_settings(settings, version).worker_id


async def statuses(settings: Settings, registry: Versions, versions: dict[str, Version],
                   timeout: float = KAFKA_SECONDS, kafka: KafkaReader | None = None
                   ) -> dict[str, VersionStatus]:
    """The status of each of ``versions``; a Kafka that does not answer within ``timeout``
    gives statuses that say so (``live`` and ``lag`` None) rather than an exception.
    ``kafka`` keeps its connections from one call to the next (the API's); without it,
    connections are made for this call and closed (the CLI's)."""
    reader = kafka or KafkaReader(settings)
    try:
        async with asyncio.timeout(timeout):
            ends, starts, members = await reader.read(
                [consumer_group(settings, v) for v in versions.values()])
    except Exception as error:  # noqa: BLE001 - any Kafka failure: say so in the status
        reason = f"Kafka: {type(error).__name__} {error}".strip()
        if isinstance(error, TimeoutError):
            reason = f"Kafka: no answer within {timeout:g} s"
        await reader.close()  # connect afresh next time
        return {name: VersionStatus(name, None, 0, None, reason) for name in versions}
    finally:
        if kafka is None:
            await reader.close()
    found = {}
    for name, version in versions.items():
        applied = _applied(registry, name)
        lag = 0
        for partition, end in ends.items():
            done = applied.get(f"{settings.events_topic}:{partition}")
            lag += max(0, end - max(starts[partition], -1 if done is None else done + 1))
        workers = members.get(consumer_group(settings, version), 0)
        found[name] = VersionStatus(name, workers > 0, workers, lag)
    return found


def not_promotable(status, max_lag: int) -> str | None:
    """Why serving this version would serve stale lists, or None: what `streamrec
    promote` and ``POST /admin/versions/{name}/promote`` refuse unless forced."""
    if status.error is not None:
        return f"its status is unknown ({status.error})"
    if not status.live:
        return (f"no worker consumes for version {status.name} (its consumer group has no "
                "member), so nothing it serves would learn from new events")
    if status.lag > max_lag:
        return (f"version {status.name} is {status.lag:,} events behind the events topic "
                f"(at most STREAMREC_PROMOTE_MAX_LAG={max_lag:,})")
    return None


def _applied(registry: Versions, name: str) -> dict[str, int]:
    raw = registry.client.hgetall(keys.key(registry.prefix(name), keys.OFFSETS))
    return {field.decode(): int(value) for field, value in raw.items()}


class KafkaReader:
    """A consumer (offsets) and an admin client (groups), connected on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: tuple[AIOKafkaConsumer, AIOKafkaAdminClient] | None = None

    async def _connect(self) -> tuple[AIOKafkaConsumer, AIOKafkaAdminClient]:
        if self._clients is None:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap,
                                        group_id=None, enable_auto_commit=False)
            admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
            self._clients = (consumer, admin)  # before start: close() stops what started
            await consumer.start()
            await admin.start()
        return self._clients

    async def close(self) -> None:
        clients, self._clients = self._clients, None
        if clients is not None:
            consumer, admin = clients
            with contextlib.suppress(Exception):
                await consumer.stop()
            with contextlib.suppress(Exception):
                await admin.close()

    async def read(self, groups: list[str]
                   ) -> tuple[dict[int, int], dict[int, int], dict[str, int]]:
        """(end offset per partition, first offset per partition, members per group)."""
        consumer, admin = await self._connect()
        topic_name = self.settings.events_topic
        partitions = sorted(consumer.partitions_for_topic(topic_name) or ())
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001
            partitions = sorted(consumer.partitions_for_topic(topic_name) or ())
        topic = [TopicPartition(topic_name, p) for p in partitions]
        ends = await consumer.end_offsets(topic)
        starts = await consumer.beginning_offsets(topic)
        members: dict[str, int] = {}
        for group in groups:
            # One group per request: aiokafka 0.14 reads a v3 answer with the v2 layout
            # (without each group's authorized_operations), so a second group in the
            # same answer is misread ("Buffer underrun"); the first one reads right.
            for response in await admin.describe_consumer_groups([group]):
                # rows: (error, group, state, protocol type, protocol, members, ...)
                for row in response.groups[:1]:
                    members[row[1]] = len(row[5])
        return ({tp.partition: end for tp, end in ends.items()},
                {tp.partition: start for tp, start in starts.items()}, members)
