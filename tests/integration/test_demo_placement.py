"""The closed loop's placement exists wherever the loop runs (``streamrec up``, compose's
simulator): ``simulate --loop-api`` configures it as the README's bandit unless an admin
configured it already. Real Kafka and Redis."""

from __future__ import annotations

import subprocess
import sys
import uuid

import redis

from streamrec.storage.feedback_store import RedisFeedback


def _simulate(worker_env, placement: str) -> subprocess.CompletedProcess:
    # The loop's API is nowhere: only the placement and a few events are wanted here.
    return subprocess.run(
        [sys.executable, "-m", "streamrec.cli", "simulate", "--events", "5", "--rate", "0",
         "--users", "10", "--items", "200", "--categories", "5", "--loop-api", "http://127.0.0.1:9",
         "--placement", placement], env=worker_env, capture_output=True, text=True,
        timeout=120)


def test_simulate_configures_the_demo_bandit_once(services, worker_env):
    feedback = RedisFeedback(redis.Redis.from_url(services["redis_url"]))
    placement = f"home-{uuid.uuid4().hex[:8]}"
    first = _simulate(worker_env, placement)
    assert first.returncode == 0, first.stderr
    assert f"configured placement {placement!r}" in first.stdout
    config = feedback.placements()[placement]
    assert config["strategy"] == "bandit" and config["floor"] == 0.05
    assert [v["model"] for v in config["variants"]] == ["hybrid", "mf", "popular"]
    assert feedback.placement_log(placement)[0]["author"] == "streamrec simulate"

    # An admin's own configuration is never replaced.
    feedback.put_placement({**config, "strategy": "split"}, "admin", 1.0)
    again = _simulate(worker_env, placement)
    assert "configured placement" not in again.stdout
    assert feedback.placements()[placement]["strategy"] == "split"
    assert len(feedback.placement_log(placement)) == 2
