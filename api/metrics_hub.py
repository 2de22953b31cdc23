"""Live metrics: one snapshot a second, served three ways (Prometheus, Server-Sent Events,
the ``metrics`` Kafka topic) and drawn by the dashboard.

A snapshot holds, per placement and variant, what the stream credited (lists shown, CTR,
take-rate, conversions with 95% intervals), and for the system: events applied per
second, consumer lag of the worker group, freshness (Kafka record time to state applied)
and this API process's request latency.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from recommender import abtest
from streamrec.percentiles import percentiles

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class MetricsHub:
    def __init__(self, settings, ops, feedback, producer, versions=None) -> None:
        self.settings = settings
        self.versions = versions  # ServingVersions: which model version this process serves
        self.ops = ops
        self.feedback = feedback
        self.producer = producer
        self.source = f"{socket.gethostname()}:{os.getpid()}"
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "streamrec_http_request_duration_seconds", "HTTP request latency by route",
            ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.shed_requests = Counter(
            "streamrec_http_requests_shed", "Requests answered 503 by load shedding, by reason "
            "(in_flight: max_requests_in_flight reached; deadline: no answer within "
            "request_deadline_seconds)", ["reason"], registry=self.registry)
        for reason in ("in_flight", "deadline"):  # exported at 0 before the first one
            self.shed_requests.labels(reason)
        self.registry.register(_SnapshotCollector(self))
        self._recent: collections.deque[tuple[float, float]] = collections.deque(maxlen=20000)
        self._previous: tuple[float, int] | None = None
        self.latest: dict[str, Any] = {}
        # Each snapshot sets the Event its readers wait on and puts a fresh one in its place:
        # waiting holds no lock, so a reader that is cancelled (its client left) cannot
        # affect another reader or the publisher (a shared asyncio.Condition could: a wait
        # cancelled while re-acquiring kept the lock, and every metric froze).
        self._published = asyncio.Event()
        self.stream_clients = 0
        self._lag_clients: tuple[AIOKafkaAdminClient, AIOKafkaConsumer] | None = None

    def observe(self, route: str, seconds: float) -> None:
        self.request_seconds.labels(route).observe(seconds)
        self._recent.append((time.monotonic(), seconds))

    def shed(self, reason: str) -> None:
        self.shed_requests.labels(reason).inc()

    async def run(self, every: float = 1.0) -> None:
        failing = False
        while True:
            try:
                # Copied here, on the event loop that appends to it: iterating the deque in
                # the thread while requests append raised "deque mutated during iteration".
                snapshot = await asyncio.to_thread(self.collect, list(self._recent))
                snapshot["consumer_lag"] = await self.consumer_lag()
                self._publish(snapshot)
                self.producer.send_soon(self.settings.metrics_topic, self.source.encode(),
                                        orjson.dumps(snapshot))
                failing = False
            except Exception as error:  # noqa: BLE001 - metrics must not take the API down
                if not failing:
                    log.warning("collecting metrics failed (%s); retrying", error)
                failing = True
            await asyncio.sleep(every)

    def _publish(self, snapshot: dict[str, Any]) -> None:
        self.latest = snapshot
        published, self._published = self._published, asyncio.Event()
        published.set()

    async def next_snapshot(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next snapshot, or the latest one after ``timeout`` seconds without one."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._published.wait()
        return self.latest

    def collect(self, latencies: list[tuple[float, float]] | None = None) -> dict[str, Any]:
        """One snapshot; ``latencies`` are (monotonic time, seconds) of recent requests."""
        now = time.time()
        applied, freshness = self.ops.read()
        rate = 0.0
        if self._previous is not None and now > self._previous[0]:
            rate = (applied - self._previous[1]) / (now - self._previous[0])
        self._previous = (now, applied)
        horizon = time.monotonic() - 10.0
        samples = list(self._recent) if latencies is None else latencies
        recent = [seconds for at, seconds in samples if at >= horizon]
        placements = {}
        for name, config in sorted(self.feedback.placements().items()):
            # Configured variants only, from the start, before anything is credited: every
            # label (Prometheus, dashboard) is a name an admin chose, never one a message
            # brought in.
            stored = self.feedback.variant_counters(name)
            counters = {variant["name"]: stored.get(variant["name"], {})
                        for variant in config.get("variants", [])}
            placements[name] = abtest.placement_report(counters)
        return {
            "time": now,
            "source": self.source,
            "serving_version": None if self.versions is None else self.versions.current,
            "events_applied": applied,
            "events_per_second": max(0.0, rate),
            "freshness_ms": percentiles(freshness[:200]),
            "api_latency_ms": {k: v * 1000 for k, v in percentiles(recent, (50, 99, 99.9)).items()},
            "api_requests_per_second": len(recent) / 10.0,
            "impressions_dropped": self.producer.dropped,
            "feedback_outcomes": self.feedback.outcomes(),
            "placements": placements,
        }

    async def consumer_lag(self) -> int | None:
        """Records in the events topic the worker group has not committed yet."""
        try:
            if self._lag_clients is None:
                admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
                consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap,
                                            group_id=None, enable_auto_commit=False)
                await admin.start()
                await consumer.start()
                self._lag_clients = (admin, consumer)
            admin, consumer = self._lag_clients
            async with asyncio.timeout(2.0):
                partitions = consumer.partitions_for_topic(self.settings.events_topic) or set()
                if not partitions:
                    await consumer._client.force_metadata_update()  # noqa: SLF001
                    partitions = consumer.partitions_for_topic(self.settings.events_topic) or set()
                topic_partitions = [TopicPartition(self.settings.events_topic, p)
                                    for p in sorted(partitions)]
                ends = await consumer.end_offsets(topic_partitions)
                committed = await admin.list_consumer_group_offsets(self.settings.worker_id)
            return int(sum(
                end - (committed[tp].offset if tp in committed and committed[tp].offset >= 0
                       else 0)
                for tp, end in ends.items()))
        except Exception as error:  # noqa: BLE001 - lag is best effort
            log.debug("consumer lag unavailable: %s", error)
            return None

    async def close(self) -> None:
        if self._lag_clients is not None:
            admin, consumer = self._lag_clients
            await consumer.stop()
            await admin.close()


class _SnapshotCollector:
    """Exposes the latest snapshot as Prometheus gauges at scrape time."""

    def __init__(self, hub: MetricsHub) -> None:
        self.hub = hub

    def collect(self):
        snapshot = self.hub.latest
        if not snapshot:
            return
        system = GaugeMetricFamily("streamrec_system", "System figures", labels=["figure"])
        system.add_metric(["events_applied"], snapshot["events_applied"])
        system.add_metric(["events_per_second"], snapshot["events_per_second"])
        if snapshot.get("consumer_lag") is not None:
            system.add_metric(["consumer_lag"], snapshot["consumer_lag"])
        for name, value in snapshot["freshness_ms"].items():
            system.add_metric([f"freshness_ms_{name}"], value)
        yield system
        variant = GaugeMetricFamily("streamrec_variant", "Per placement and variant",
                                    labels=["placement", "variant", "figure"])
        for placement, report in snapshot["placements"].items():
            for name, metrics in report["variants"].items():
                for figure in ("impressions", "clicks", "conversions", "lists_rewarded",
                               "ctr", "take_rate", "conversion_rate"):
                    variant.add_metric([placement, name, figure], metrics[figure])
        yield variant
