"""The arena's placement report over HTTP and in the CLI: each variant's offline metrics
from the card of what serves its model, beside its live figures, and the advice in words,
against the real worker's counters."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import orjson
import pytest
import redis

from streamrec.storage import keys
from tests.api.conftest import wait_for
from tests.api.test_ope_report import _produce
from tests.integration.test_import_export import streamrec

pytestmark = pytest.mark.integration


def test_the_report_shows_cards_beside_live_figures_and_says_what_to_do(
        client, api_settings, services, run, worker_env) -> None:
    imported = f"lists:arena{run}"
    card = {"model": imported, "kind": "imported", "run": "g1", "made_at": time.time(),
            "lineage": {}, "hyperparameters": {},
            "offline": {"recall@10": 0.25, "ndcg@10": 0.125, "users": 80, "slice": "last 10%"}}
    redis.Redis.from_url(services["redis_url"]).hset(
        keys.key(api_settings.redis_prefix, keys.MODEL_CARDS), imported, orjson.dumps(card))
    placement = f"arena-{run}"
    assert client.put(f"/admin/placements/{placement}", json={"variants": [
        {"name": "stream", "model": "popular"}, {"name": "batch", "model": imported}]}
                      ).status_code == 200
    rng = np.random.default_rng(1)
    impressions, clicks = [], []
    for number in range(800):
        variant = "batch" if number % 2 else "stream"
        rid, user = f"{run}-r{number}", f"{run}-u{number % 100}"
        impressions.append(orjson.dumps({
            "recommendation_id": rid, "user_id": user, "placement": placement,
            "variant": variant, "model": imported if variant == "batch" else "popular",
            "items": [f"{run}-i1"], "timestamp": time.time(),
            "decision": {"strategy": "split", "propensity": 0.5}}))
        if rng.random() < (0.30 if variant == "batch" else 0.10):
            clicks.append({"user_id": user, "item_id": f"{run}-i1", "event_type": "click",
                           "recommendation_id": rid})
    asyncio.run(_produce(services["bootstrap"], api_settings.impressions_topic, impressions))
    for first in range(0, len(clicks), 50):
        assert client.post("/events", json=clicks[first:first + 50]).status_code == 202

    def counted():
        report = client.get(f"/admin/placements/{placement}/report",
                            params={"control": "stream"}).json()
        rewarded = sum(v["lists_rewarded"] for v in report["variants"].values())
        return rewarded == len(clicks) and report

    report = wait_for(counted, timeout=60)
    assert report, "the worker did not credit every click"
    batch, stream = report["variants"]["batch"], report["variants"]["stream"]
    assert batch["model"] == imported and stream["model"] == "popular"
    assert batch["offline"]["recall@10"] == 0.25 and batch["offline"]["kind"] == "imported"
    assert stream["offline"] is None
    assert report["advice"].startswith("switch to batch: its take-rate"), report["advice"]

    printed = streamrec(worker_env, "report", "--placement", placement, "--control", "stream")
    assert printed.returncode == 0, printed.stderr
    assert "recall@10 0.250, ndcg@10 0.125 (imported run g1)" in printed.stdout
    assert "advice: switch to batch" in printed.stdout
