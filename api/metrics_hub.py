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
import redis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from recommender import abtest
from streamrec.connections import kafka_client_options
from streamrec.percentiles import percentiles
from streamrec.storage.ops_stats import OpsFigures

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class MetricsHub:
    def __init__(self, settings, ops, feedback, producer, versions=None,
                 lag_from: MetricsHub | None = None) -> None:
        self.settings = settings
        # An app's hub (api/apps.py) takes the consumer lag from the default app's: the
        # topics and the worker group are shared, so the lag is the same, and a Kafka
        # admin client per app would cost connections. It does not publish its snapshots
        # to the metrics topic either (they would read as the deployment's).
        self.lag_from = lag_from
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
        # Labels are route templates, status codes, model names and the names of configured
        # placements and variants: never an id, never a name a request made up.
        self.requests = Counter(
            "streamrec_http_requests", "HTTP requests answered, by route template and status "
            "code (route \"unmatched\": no route)", ["route", "status"], registry=self.registry)
        self.served = Counter(
            "streamrec_recommendations_served", "Lists served by GET /recommendations, by "
            "placement, variant and the model that ranked them (placement and variant "
            "\"unallocated\": a forced model or a placement nobody configured)",
            ["placement", "variant", "model"], registry=self.registry)
        self.choices = Counter(
            "streamrec_allocation_choices", "Variants the placements' allocations (split or "
            "bandit) chose", ["placement", "variant"], registry=self.registry)
        self.figures = OpsFigures()
        self.lag_by_partition: dict[int, int] = {}
        self.reachable = {"kafka": False, "redis": False}
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

    def observe(self, route: str, seconds: float, status: int | None = None) -> None:
        self.request_seconds.labels(route).observe(seconds)
        self._recent.append((time.monotonic(), seconds))
        if status is not None:
            self.count(route, status)

    def count(self, route: str, status: int) -> None:
        self.requests.labels(route, str(status)).inc()

    def serve(self, placement: str, variant: str, model: str, allocated: bool) -> None:
        """A list was served; ``allocated``: the placement's allocation chose ``variant``
        (so both are configured names)."""
        if allocated:
            self.choices.labels(placement, variant).inc()
        else:
            placement = variant = "unallocated"
        self.served.labels(placement, variant, model).inc()

    def shed(self, reason: str) -> None:
        self.shed_requests.labels(reason).inc()

    async def run(self, every: float = 1.0) -> None:
        failing = False
        while True:
            try:
                # Copied here, on the event loop that appends to it: iterating the deque in
                # the thread while requests append raised "deque mutated during iteration".
                try:
                    snapshot = await asyncio.to_thread(self.collect, list(self._recent))
                except redis.RedisError:
                    # Set on the outcome only: a scrape during a round sees the last one.
                    self.reachable["redis"] = False
                    raise
                self.reachable["redis"] = True
                if self.lag_from is None:
                    lag = await self.consumer_lag()
                else:
                    shared = self.lag_from
                    lag = dict(shared.lag_by_partition) if shared.reachable["kafka"] else None
                self.reachable["kafka"] = lag is not None
                self.lag_by_partition = lag or {}
                snapshot["consumer_lag"] = None if lag is None else sum(lag.values())
                self._publish(snapshot)
                if self.lag_from is None:
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
        figures = self.ops.read()
        self.figures = figures
        applied, freshness = figures.events_applied, figures.freshness_samples
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
            "duplicate_events": figures.events_duplicate,
            "events_per_second": max(0.0, rate),
            "events_dead_lettered": sum(figures.rejects.values()),
            "freshness_ms": percentiles(freshness[:200]),
            "api_latency_ms": {k: v * 1000 for k, v in percentiles(recent, (50, 99, 99.9)).items()},
            "api_requests_per_second": len(recent) / 10.0,
            "impressions_dropped": self.producer.dropped,
            "feedback_outcomes": self.feedback.outcomes(),
            "placements": placements,
        }

    async def consumer_lag(self) -> dict[int, int] | None:
        """Per partition, records in the events topic the worker group has not committed
        yet; None when Kafka does not answer."""
        try:
            if self._lag_clients is None:
                admin = AIOKafkaAdminClient(**kafka_client_options(self.settings))
                consumer = AIOKafkaConsumer(**kafka_client_options(self.settings),
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
            return {tp.partition: int(end - (committed[tp].offset if tp in committed
                                             and committed[tp].offset >= 0 else 0))
                    for tp, end in ends.items()}
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
        if snapshot:
            yield from self.snapshot_figures(snapshot)
        yield from self.hub_figures()

    def snapshot_figures(self, snapshot: dict[str, Any]):
        system = GaugeMetricFamily("streamrec_system", "System figures", labels=["figure"])
        system.add_metric(["events_applied"], snapshot["events_applied"])
        # Records left out for repeating an applied event_id (retries, re-imports).
        system.add_metric(["duplicate_events"], snapshot.get("duplicate_events", 0))
        system.add_metric(["events_per_second"], snapshot["events_per_second"])
        if snapshot.get("consumer_lag") is not None:
            system.add_metric(["consumer_lag"], snapshot["consumer_lag"])
        for name, value in snapshot["freshness_ms"].items():
            system.add_metric([f"freshness_ms_{name}"], value)
        yield system
        # This process's impressions Kafka never took (lost at shutdown, or best-effort
        # records refused): clicks on those lists count as no_impression.
        dropped = CounterMetricFamily("streamrec_impressions_dropped",
                                      "Records this API process never got into Kafka "
                                      "(impressions still waiting at shutdown, best-effort "
                                      "records refused)")
        dropped.add_metric([], snapshot.get("impressions_dropped", 0))
        yield dropped
        variant = GaugeMetricFamily("streamrec_variant", "Per placement and variant",
                                    labels=["placement", "variant", "figure"])
        for placement, report in snapshot["placements"].items():
            for name, metrics in report["variants"].items():
                for figure in ("impressions", "clicks", "conversions", "lists_rewarded",
                               "ctr", "take_rate", "conversion_rate"):
                    variant.add_metric([placement, name, figure], metrics[figure])
        yield variant

    def hub_figures(self):
        """The worker's counters (from Redis), lag and reachability, as Prometheus types."""
        hub, figures = self.hub, self.hub.figures
        applied = CounterMetricFamily("streamrec_events_applied",
                                      "Events the worker applied to the state")
        applied.add_metric([], figures.events_applied)
        yield applied
        duplicate = CounterMetricFamily(
            "streamrec_events_duplicate", "Events skipped as repeats of an event_id already "
            "applied (a retried batch): counted by the worker under the stats hash's "
            "duplicates field")
        duplicate.add_metric([], figures.events_duplicate)
        yield duplicate
        rejected = CounterMetricFamily(
            "streamrec_events_rejected", "Records the worker refused and dead-lettered, by "
            "source topic and the field the reason names (\"other\" for any other)",
            labels=["topic", "reason"])
        dead = CounterMetricFamily("streamrec_events_dead_lettered",
                                   "Records sent to the dead-letter topic, by source topic",
                                   labels=["topic"])
        by_topic: dict[str, int] = collections.Counter()
        for (topic, reason), count in sorted(figures.rejects.items()):
            rejected.add_metric([topic, reason], count)
            by_topic[topic] += count
        for topic in (hub.settings.events_topic, hub.settings.impressions_topic,
                      hub.settings.items_topic, hub.settings.users_topic):
            dead.add_metric([topic], by_topic.get(topic, 0))
        yield rejected
        yield dead
        lag = GaugeMetricFamily("streamrec_consumer_lag", "Records in the events topic the "
                                "worker group has not committed, per partition",
                                labels=["topic", "partition"])
        for partition, records in sorted(hub.lag_by_partition.items()):
            lag.add_metric([hub.settings.events_topic, str(partition)], records)
        yield lag
        freshness = HistogramMetricFamily(
            "streamrec_freshness_seconds", "Kafka record time to state applied, every record "
            "the worker applied", sum_value=figures.freshness_sum,
            buckets=[("+Inf" if bound == float("inf") else str(bound), count)
                     for bound, count in figures.freshness_buckets] or [("+Inf", 0)])
        yield freshness
        up = GaugeMetricFamily("streamrec_dependency_up", "1 when this API process's last "
                               "metrics round reached the dependency", labels=["dependency"])
        for name, reachable in sorted(hub.reachable.items()):
            up.add_metric([name], 1.0 if reachable else 0.0)
        yield up
