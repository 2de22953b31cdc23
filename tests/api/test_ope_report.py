"""Off-policy evaluation against the real stack: a bandit's logged lists on the impressions
topic (each with its decision's propensity), clicks through POST /events, then
``POST /admin/placements/{name}/report`` and ``streamrec report --policy`` estimate a split
whose truth the simulation knows."""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from recommender.ope import thompson_shares
from tests.api.conftest import wait_for
from tests.integration.test_import_export import streamrec

pytestmark = pytest.mark.integration

RATES = {"A": 0.1, "B": 0.3}  # each variant's chance that a list earns a click
LISTS = 1500


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        sent = [await producer.send(topic, value) for value in values]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def bandit_run(run: str, placement: str, decisions: bool = True
               ) -> tuple[list[bytes], list[dict]]:
    """A plain Thompson-sampling bandit with a 5% floor serving ``LISTS`` lists, its
    propensities refreshed every 100 lists from the statistics so far (as the API's are
    from the worker's counters): the impressions it logs and the clicks that come back."""
    rng = np.random.default_rng(7)
    stats = {name: [0, 0] for name in RATES}
    impressions, clicks = [], []
    shares = thompson_shares({name: (0, 0) for name in RATES}, floor=0.05)
    for number in range(LISTS):
        if number % 100 == 0:
            shares = thompson_shares({k: tuple(v) for k, v in stats.items()}, floor=0.05,
                                     seed=number)
        names = list(shares)
        variant = names[int(rng.choice(len(names), p=[shares[n] for n in names]))]
        user, items = f"{run}-u{number % 300}", [f"{run}-i{number % 7}", f"{run}-j"]
        rid = f"{run}-r{number}"
        message = {"recommendation_id": rid, "user_id": user, "placement": placement,
                   "variant": variant, "model": "popular", "items": items,
                   "timestamp": time.time()}
        if decisions:
            message["decision"] = {"strategy": "bandit", "propensity": shares[variant]}
        impressions.append(orjson.dumps(message))
        stats[variant][0] += 1
        if rng.random() < RATES[variant]:
            stats[variant][1] += 1
            clicks.append({"user_id": user, "item_id": items[0], "event_type": "click",
                           "recommendation_id": rid})
    return impressions, clicks


@pytest.fixture(scope="module")
def logged(client, api_settings, services):
    """One bandit run on a placement of its own; its start time bounds what is read."""
    run = f"ope{os.getpid()}{int(time.time()) % 100000}"
    placement = f"home-{run}"
    assert client.put(f"/admin/placements/{placement}", json={
        "strategy": "bandit", "variants": [{"name": "A", "model": "popular"},
                                           {"name": "B", "model": "hybrid"}]}
                      ).status_code == 200
    started = time.time() - 1
    impressions, clicks = bandit_run(run, placement)
    asyncio.run(_produce(services["bootstrap"], api_settings.impressions_topic, impressions))
    for first in range(0, len(clicks), 50):
        answer = client.post("/events", json=clicks[first:first + 50])
        assert answer.status_code == 202, answer.text
    return {"placement": placement, "since": str(started), "clicks": len(clicks),
            "run": run}


def test_the_report_estimates_a_split_from_a_bandits_log(client, logged) -> None:
    answer = client.post(f"/admin/placements/{logged['placement']}/report", json={
        "policy": {"strategy": "split", "shares": {"A": 1, "B": 1}},
        "since": logged["since"]})
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["lists"] == LISTS
    assert report["reward_events"] == {"credited": logged["clicks"]}
    truth = (RATES["A"] + RATES["B"]) / 2
    for estimator in ("ips", "snips"):
        low, high = report[estimator]["interval"]
        assert low <= truth <= high, (estimator, report[estimator])
    # The bandit served B mostly: a 50/50 split is worth far fewer lists than were logged.
    assert 20 < report["effective_sample_size"] < LISTS / 2
    assert report["logged"]["value"] > truth  # it earned more than the split would
    assert "worse" in report["summary"] or "no clear difference" in report["summary"]


def test_switching_to_the_better_variant_is_estimated_near_its_rate(client, logged) -> None:
    report = client.post(f"/admin/placements/{logged['placement']}/report",
                         json={"policy": "B", "since": logged["since"]}).json()
    low, high = report["snips"]["interval"]
    assert low <= RATES["B"] <= high, report["snips"]
    assert report["target_shares"] == {"B": 1.0}


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"policy": {"strategy": "split", "shares": {"C": 1}}}, 422,
     "body.policy.shares.C: not a variant of this placement; one of ['A', 'B']"),
    ({"policy": {"by": "device"}}, 422, "body.policy.choose: required"),
    ({"policy": "everything"}, 422, "body.policy: 'everything' is neither current"),
    ({"policy": "B", "since": "last week"}, 422, "body.since: 'last week' is not a duration"),
])
def test_bad_policies_are_refused_naming_the_field(client, logged, body, status, message):
    answer = client.post(f"/admin/placements/{logged['placement']}/report", json=body)
    assert answer.status_code == status and message in answer.json()["detail"], answer.text


def test_an_unknown_placement_is_404(client) -> None:
    answer = client.post("/admin/placements/nobody-made-this/report", json={"policy": "A"})
    assert answer.status_code == 404
    assert "no placement named 'nobody-made-this'" in answer.json()["detail"]


def test_lists_without_a_propensity_are_refused_with_advice(client, api_settings,
                                                           services) -> None:
    run = f"opeold{os.getpid()}{int(time.time()) % 100000}"
    placement = f"old-{run}"
    client.put(f"/admin/placements/{placement}", json={
        "variants": [{"name": "A", "model": "popular"}, {"name": "B", "model": "mf"}]})
    started = time.time() - 1
    impressions, _ = bandit_run(run, placement, decisions=False)
    asyncio.run(_produce(services["bootstrap"], api_settings.impressions_topic,
                         impressions[:20]))
    answer = client.post(f"/admin/placements/{placement}/report",
                         json={"policy": "uniform", "since": str(started)})
    assert answer.status_code == 422
    assert "decision.propensity: 20 of 20 logged lists carry none" in answer.json()["detail"]


def test_the_cli_prints_the_estimates_and_a_sentence(logged, worker_env, tmp_path) -> None:
    policy = tmp_path / "split.json"
    policy.write_text('{"strategy": "split", "shares": {"A": 1, "B": 1}}')
    printed = streamrec(worker_env, "report", "--placement", logged["placement"],
                        "--policy", str(policy), "--since", logged["since"])
    assert printed.returncode == 0, printed.stderr
    assert f"{LISTS:,} lists logged" in printed.stdout
    assert "target, self-normalised IPS" in printed.stdout and "95% CI" in printed.stdout
    assert "split A 50%, B 50% would have earned a reward on about" in printed.stdout
    refused = streamrec(worker_env, "report", "--placement", logged["placement"],
                        "--policy", '{"strategy": "split", "shares": {"Z": 1}}')
    assert refused.returncode == 1
    assert "--policy: policy.shares.Z: not a variant" in refused.stderr


def test_a_targeted_placements_report_splits_by_targeting(client, api_settings, services,
                                                         worker_env) -> None:
    run = f"opetg{os.getpid()}{int(time.time()) % 100000}"
    placement = f"ca-{run}"
    answer = client.put(f"/admin/placements/{placement}", json={
        "target": {"country": "CA"}, "default_variant": "A",
        "variants": [{"name": "A", "model": "popular"}, {"name": "B", "model": "mf"}]})
    assert answer.status_code == 200, answer.text
    started = time.time() - 1
    impressions, clicks = [], []
    for number in range(200):
        inside = number % 2 == 0
        variant = ("A", "B")[number % 4 // 2] if inside else "A"
        rid, user = f"{run}-r{number}", f"{run}-u{number % 20}"
        decision = ({"strategy": "split", "propensity": 0.5, "targeted": True} if inside
                    else {"strategy": "split", "propensity": 1.0, "targeted": False})
        impressions.append(orjson.dumps({
            "recommendation_id": rid, "user_id": user, "placement": placement,
            "variant": variant, "model": "popular", "items": [f"{run}-i"],
            "timestamp": time.time(), "allocated": inside, "decision": decision}))
        if number % 5 == 0:  # every fifth list: 20 of 100 inside, 20 of 100 outside
            clicks.append({"user_id": user, "item_id": f"{run}-i", "event_type": "click",
                           "recommendation_id": rid})
    asyncio.run(_produce(services["bootstrap"], api_settings.impressions_topic, impressions))
    assert client.post("/events", json=clicks).status_code == 202
    report = wait_for(lambda: (r := client.post(
        f"/admin/placements/{placement}/report",
        json={"policy": "current", "since": str(started)}).json()).get(
            "reward_events", {}).get("credited") == 20 and r, timeout=30)
    assert report, "the clicks on targeted lists were not all found"
    split = report["by_targeting"]
    assert (split["targeted"]["lists"], split["targeted"]["rewarded"]) == (100, 20)
    assert (split["not_targeted"]["lists"], split["not_targeted"]["rewarded"]) == (100, 20)
    assert split["not_targeted"]["variants"] == {"A": {
        "lists": 100, "rewarded": 20, "take_rate": 0.2, "take_rate_interval": [0.1334, 0.2888]}}
    assert report["lists"] == 100  # the policy is judged on the targeted lists only
    shown = client.get(f"/admin/placements/{placement}/report").json()
    assert shown["targeting"]["target"] == {"country": ["CA"]}
    printed = streamrec(worker_env, "report", "--placement", placement, "--policy", "current",
                        "--since", str(started))
    assert "not targeted: 100 lists, take-rate 20.00%" in printed.stdout, printed.stderr


def test_an_apps_report_reads_that_apps_lists_only(services, worker) -> None:
    """Lists served by the real API under /apps/{app}/ (split decisions logged with the
    app's header) are evaluated under the same prefix, and belong to no other app."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from tests.api.test_apps import PLATFORM, apps_settings, new_app

    with TestClient(create_app(apps_settings(services))) as api:
        assert wait_for(lambda: api.get("/readyz").status_code == 200, timeout=60)
        app, _ = new_app(api)
        base = f"/apps/{app}"
        assert api.post(f"{base}/events", headers=PLATFORM, json=[
            {"user_id": "seed", "item_id": f"item-{n}", "event_type": "view"} for n in range(5)]
                        ).status_code == 202
        assert wait_for(lambda: api.get(f"{base}/popular", headers=PLATFORM).json().get(
            "items"), timeout=60)
        placement = f"home-{app}"
        assert api.put(f"{base}/admin/placements/{placement}", headers=PLATFORM, json={
            "variants": [{"name": "A", "model": "popular"}, {"name": "B", "model": "popular"}]}
                       ).status_code == 200
        started = time.time() - 1
        served = [api.get(f"{base}/recommendations", headers=PLATFORM,
                          params={"user_id": f"u{n}", "placement": placement}).json()
                  for n in range(40)]
        clicks = [{"user_id": shown["user_id"], "item_id": shown["items"][0]["item_id"],
                   "event_type": "click", "recommendation_id": shown["recommendation_id"]}
                  for shown in served if shown["variant"] == "A"]
        assert api.post(f"{base}/events", headers=PLATFORM, json=clicks).status_code == 202

        def evaluated():
            answer = api.post(f"{base}/admin/placements/{placement}/report", headers=PLATFORM,
                              json={"policy": "A", "since": str(started)})
            report = answer.json()
            return (answer.status_code == 200 and report["lists"] == 40
                    and report["reward_events"].get("credited") == len(clicks) and report)

        report = wait_for(evaluated, timeout=30)
        assert report, "the app's lists or clicks were not all found"
        assert report["app"] == app and report["snips"]["value"] == 1.0
        assert report["variants"]["A"] == {"lists": len(clicks), "rewarded": len(clicks)}
        # The default app has no placement of that name: nothing of the app's is its own.
        assert api.post(f"/admin/placements/{placement}/report", headers=PLATFORM,
                        json={"policy": "A"}).status_code == 404
