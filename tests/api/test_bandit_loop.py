"""The whole loop through Kafka, Redis, the worker and the API: simulated users with hidden
tastes click what they like; the bandit moves traffic to the variant that serves them
better, and the report names it. With equal variants, traffic stays split."""

from __future__ import annotations

import subprocess
import sys

from recommender.abtest import placement_report
from streamrec.sim.loop import run_loop
from streamrec.sim.simulator import Simulation
from tests.api.conftest import wait_for

TRAINING_EVENTS = 4000
WARM_UP = 600  # requests the bandit may spend finding the better variant (the bound)
JUDGED = 300  # requests after that, in which the better variant must dominate


def _train(client, simulation: Simulation) -> None:
    events = list(simulation.events(TRAINING_EVENTS))
    for start in range(0, len(events), 50):
        assert client.post("/events", json=events[start:start + 50]).status_code == 202
    last = events[-1]
    wait_for(lambda: any(i["item_id"] == last["item_id"] for i in client.get(
        "/recommendations", params={"user_id": "nobody-at-all", "k": 500}).json()["items"])
        or client.get("/recommendations", params={"user_id": last["user_id"],
                                                  "model": "cooccurrence"}).json()["model"]
        == "cooccurrence", timeout=60)


def _loop(client, simulation, placement: str, requests: int):
    def fetch(user: str, where: str) -> dict:
        response = client.get("/recommendations", params={"user_id": user, "placement": where})
        assert response.status_code == 200, response.text
        return response.json()

    def send(events: list[dict]) -> None:
        assert client.post("/events", json=events).status_code == 202

    return run_loop(simulation, fetch, send, requests, placement, seed=3)


def test_the_bandit_finds_the_better_variant_and_the_report_names_it(client, run, worker_env):
    simulation = Simulation(users=200, items=400, categories=10, seed=5, prefix=f"{run}-")
    _train(client, simulation)
    placement = f"bandit-{run}"
    client.put(f"/admin/placements/{placement}", json={
        "strategy": "bandit", "floor": 0.05,
        "variants": [{"name": "popular", "model": "popular"},
                     {"name": "personal", "model": "cooccurrence"}]})
    result = _loop(client, simulation, placement, WARM_UP + JUDGED)
    shares = result.shares(last=JUDGED)
    print(f"shares over the last {JUDGED} requests: {shares}; lists rewarded: "
          f"{dict(result.rewarded)}")
    assert shares.get("personal", 0) >= 0.7

    def counted():
        report = client.get(f"/admin/placements/{placement}/report").json()
        total = sum(v["impressions"] for v in report["variants"].values())
        return total >= WARM_UP + JUDGED and report

    report = wait_for(counted, timeout=30)
    variants = report["variants"]
    assert variants["personal"]["take_rate"] > variants["popular"]["take_rate"]
    recomputed = placement_report({name: {"impressions": v["impressions"],
                                          "lists_rewarded": v["lists_rewarded"]}
                                   for name, v in variants.items()}, control="popular")
    assert recomputed["comparisons"]["personal"]["lift"] > 0
    assert recomputed["comparisons"]["personal"]["p_value"] < 0.05

    printed = subprocess.run(
        [sys.executable, "-m", "streamrec.cli", "report", "--placement", placement,
         "--control", "popular"], env=worker_env, capture_output=True, text=True, check=True)
    print(printed.stdout)
    assert "personal vs popular: lift +" in printed.stdout
    assert "(significant)" in printed.stdout


def test_equal_variants_keep_sharing_the_traffic(client, run):
    simulation = Simulation(users=100, items=200, categories=5, seed=6, prefix=f"{run}-")
    placement = f"equal-{run}"
    client.put(f"/admin/placements/{placement}", json={
        "strategy": "bandit", "floor": 0.1,
        "variants": [{"name": "left", "model": "popular"},
                     {"name": "right", "model": "popular"}]})
    result = _loop(client, simulation, placement, 400)
    shares = result.shares()
    print(f"shares with equal variants: {shares}")
    assert min(shares.values()) >= 0.15  # well above the floor's 5% each
