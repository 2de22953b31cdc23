"""Metrics three ways: Prometheus text, the SSE stream, and the metrics Kafka topic."""

from __future__ import annotations

import asyncio
import time

import orjson
from aiokafka import AIOKafkaConsumer

from tests.api.conftest import wait_for


def test_prometheus_exposes_latency_system_and_variant_figures(client, run):
    placement = f"prom-{run}"
    client.put(f"/admin/placements/{placement}", json={"variants": [
        {"name": "A", "model": "popular"}]})
    client.get("/recommendations", params={"user_id": f"{run}-u", "placement": placement})
    text = wait_for(lambda: (body := client.get("/metrics").text)
                    and f'placement="{placement}"' in body and body, timeout=10)
    assert 'streamrec_http_request_duration_seconds_bucket{le="0.01",route="/recommendations"}' \
        in text
    assert 'streamrec_system{figure="events_applied"}' in text
    assert f'streamrec_variant{{figure="impressions",placement="{placement}",variant="A"}}' \
        in text


def test_the_stream_sends_a_snapshot_about_every_second(client):
    started = time.monotonic()
    snapshots = []
    with client.stream("GET", "/metrics/stream") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                snapshots.append(orjson.loads(line[len("data: "):]))
            if len(snapshots) == 3:
                break
    elapsed = time.monotonic() - started
    assert elapsed < 5
    assert {"events_per_second", "consumer_lag", "freshness_ms", "api_latency_ms",
            "placements"} <= set(snapshots[-1])
    assert snapshots[-1]["time"] > snapshots[0]["time"]


def test_snapshots_reach_the_metrics_topic(client, services):
    async def first_snapshot():
        consumer = AIOKafkaConsumer("metrics", bootstrap_servers=services["bootstrap"],
                                    auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        try:
            batch = await consumer.getmany(timeout_ms=10_000, max_records=1)
            return [orjson.loads(r.value) for rows in batch.values() for r in rows]
        finally:
            await consumer.stop()

    snapshots = wait_for(lambda: asyncio.run(first_snapshot()), timeout=20)
    assert snapshots and "events_applied" in snapshots[0]
