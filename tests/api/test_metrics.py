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
    # The snapshot's gauge, not the request counters that name the placement at once.
    text = wait_for(lambda: (body := client.get("/metrics").text)
                    and f'figure="impressions",placement="{placement}"' in body and body,
                    timeout=10)
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


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text as sample name -> [(labels, value)]."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def _value(samples, name: str, **labels: str) -> float:
    return sum(value for found, value in samples.get(name, [])
               if all(found.get(k) == v for k, v in labels.items()))


def test_prometheus_carries_what_a_team_alerts_on_with_bounded_labels(client, services, run):
    from streamrec.storage.ops_stats import REASONS
    from tests.factories import produce_views

    placement = f"alerts-{run}"
    client.put(f"/admin/placements/{placement}", json={"variants": [
        {"name": "A", "model": "popular"}]})
    before = _samples(client.get("/metrics").text)
    hostile_key = f"{run}-\u0007-key"  # a context key the schema refuses
    garbage = [b"\xff not json",
               orjson.dumps({"user_id": run, "item_id": "i", "event_type": "teleport"}),
               orjson.dumps({"user_id": run, "item_id": "i", "event_type": "view",
                             "context": {hostile_key: 1}})]
    asyncio.run(produce_views(services["bootstrap"], "events", run, 0, 20, extra=garbage))
    for n in range(3):
        client.get("/recommendations", params={"user_id": f"{run}-u{n}",
                                               "placement": placement})
    client.get("/recommendations", params={"user_id": f"{run}-u", "model": "mf"})
    client.get(f"/no-such-route-{run}")

    def after():
        samples = _samples(client.get("/metrics").text)
        grown = (_value(samples, "streamrec_events_dead_lettered_total", topic="events")
                 >= _value(before, "streamrec_events_dead_lettered_total", topic="events") + 3
                 # all 20 applied too: later tests count the session's applied events
                 and _value(samples, "streamrec_events_applied_total")
                 >= _value(before, "streamrec_events_applied_total") + 20)
        return samples if grown and samples.get("streamrec_consumer_lag") else None

    samples = wait_for(after, timeout=60)
    assert samples, "the rejects or the lag never reached /metrics"
    assert "streamrec_events_duplicate_total" in samples
    assert "streamrec_impressions_dropped_total" in samples
    rejected = samples["streamrec_events_rejected_total"]
    assert {labels["reason"] for labels, _ in rejected} <= REASONS | {"other"}
    assert _value(samples, "streamrec_events_rejected_total", topic="events",
                  reason="context") >= 1
    assert all(labels["partition"].isdigit()
               for labels, _ in samples["streamrec_consumer_lag"])
    assert _value(samples, "streamrec_freshness_seconds_bucket", le="+Inf") \
        == _value(samples, "streamrec_freshness_seconds_count") >= 20
    assert _value(samples, "streamrec_http_requests_total", route="/recommendations",
                  status="200") >= 4
    assert _value(samples, "streamrec_http_requests_total", route="unmatched",
                  status="404") >= 1
    assert _value(samples, "streamrec_recommendations_served_total", placement=placement,
                  variant="A", model="popular") == 3
    assert _value(samples, "streamrec_allocation_choices_total", placement=placement,
                  variant="A") == 3
    # A forced model is served, not allocated (a user nobody knows gets "popular").
    assert _value(samples, "streamrec_recommendations_served_total",
                  placement="unallocated", variant="unallocated") >= 1
    assert _value(samples, "streamrec_dependency_up", dependency="kafka") == 1
    assert _value(samples, "streamrec_dependency_up", dependency="redis") == 1
    # No id, path or message text ever becomes a label value.
    for name, rows in samples.items():
        for labels, _ in rows:
            assert not any(run in value and name != "streamrec_variant"
                           and value != placement for value in labels.values()), (name, labels)


def test_every_dashboard_and_alert_expression_reads_a_metric_the_api_exports(client, run):
    from prometheus_client.parser import text_string_to_metric_families

    from tests.unit.test_deploy import expressions, metric_names

    placement = f"board-{run}"
    client.put(f"/admin/placements/{placement}", json={"variants": [
        {"name": "A", "model": "popular"}]})
    client.get("/recommendations", params={"user_id": f"{run}-u", "placement": placement})
    exported = {"up"}  # Prometheus' own, per scrape target
    for family in text_string_to_metric_families(client.get("/metrics").text):
        # A counter with no sample yet (nothing rejected) still declares its name.
        exported |= {family.name, *([f"{family.name}_total"] if family.type == "counter"
                                    else [])}
        exported |= {sample.name for sample in family.samples}
    read = {name for expression in expressions() for name in metric_names(expression)
            if ":" not in name}  # recording rules: their own expressions are checked
    assert read and read <= exported, sorted(read - exported)
