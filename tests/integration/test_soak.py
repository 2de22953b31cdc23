"""A short soak against real processes (the session's Kafka and Redis, a worker and an API
of its own): every event applied, every request answered, a row per interval, a verdict."""

from __future__ import annotations

from streamrec.measure import soak
from streamrec.measure.soak import SoakConfig

CONFIG = SoakConfig(duration=40, interval=5, event_rate=100, request_rate=20, users=1_000,
                    items=500, warmup_events=1_000)


def test_a_short_soak_answers_everything_and_reports_every_interval(services, monkeypatch,
                                                                     tmp_path):
    monkeypatch.setenv("STREAMREC_KAFKA_BOOTSTRAP", services["bootstrap"])
    monkeypatch.setenv("STREAMREC_REDIS_URL", services["redis_url"])
    lines: list[str] = []
    report = soak.run(CONFIG, lines.append, tmp_path)

    assert report.error_count == 0, report.errors
    assert report.events_sent == report.events_applied == 4_000
    assert report.requests == 800
    assert len(report.rows) == 8
    assert all(row.requests and row.p99_ms is not None for row in report.rows)
    assert all(row.memory_mib[role] for row in report.rows for role in soak.MEMORY_COLUMNS)
    assert [line for line in lines if line.startswith("elapsed")] == [soak.header()]
    assert sum(1 for line in lines if line.strip()[:1].isdigit()) == 8
    # The floor of 20 MiB is far above what 40 s at these rates moves (a few MiB): growth
    # past it here is a leak, not noise.
    assert {t.role for t in report.trends} == set(soak.MEMORY_COLUMNS)
    assert report.passed
    assert soak.summary(report)[-1] == "verdict: PASS"
