"""Contextual and clustered allocation against plain Thompson sampling, end to end through
the API, Kafka, the worker and Redis, on simulated users in two segments whose best
variant differs (mobile: popular, desktop: hybrid; each 30% against 10%). Overall the two
tie at 20%, so the plain bandit cannot beat 20%: a strategy that tells the segments apart
can reach 30%. Then the off-policy estimate of the plain bandit's converged policy, from
the contextual run's logs, is checked against what the plain bandit really earned.
The long version, with figures: ``scripts/bandit_compare.py``."""

from __future__ import annotations

import pytest

from recommender.ope import Logged, arm_stats, thompson_shares
from streamrec.sim.compare import compare
from streamrec.sim.simulator import EQUAL_SEGMENTS, Segments, Simulation
from tests.api.conftest import wait_for

pytestmark = pytest.mark.integration

MODELS = {"popular": "popular", "hybrid": "hybrid", "mf": "mf"}
# Each strategy's last 200 lists are judged per segment. At 600 requests CI once saw the
# per-device posterior still favour mf for mobile (popular 0.385 of mobile's lists); four
# runs put contextual's share at 0.56-0.75 there. At 1,000, six runs gave 0.78-0.84
# (contextual) and 0.85-0.92 (clustered), for 5 s more.
REQUESTS = 1000


def _prepare(client, simulation: Simulation) -> None:
    """Users' segments as properties, and a few events so every list has items."""
    for document in simulation.user_documents():
        assert client.put(f"/users/{document['user_id']}",
                          json={"properties": document["properties"]}).status_code == 202
    events = list(simulation.events(200))
    for first in range(0, len(events), 50):
        assert client.post("/events", json=events[first:first + 50]).status_code == 202
    last = simulation.user_id(simulation.users - 1)
    assert wait_for(lambda: client.get(f"/users/{last}").status_code == 200, timeout=60)


def _callables(client):
    def fetch(user: str, placement: str, context: dict | None = None) -> dict:
        params = {"user_id": user, "placement": placement}
        if context:
            params.update({f"context.{key}": value for key, value in context.items()})
        for _ in range(20):  # a loaded machine may shed a read (503): ask again
            answer = client.get("/recommendations", params=params)
            if answer.status_code != 503:
                break
        assert answer.status_code == 200, answer.text
        return answer.json()

    def send(events: list[dict]) -> None:
        assert client.post("/events", json=events).status_code == 202

    def configure(placement: str, body: dict) -> None:
        answer = client.put(f"/admin/placements/{placement}", json=body)
        assert answer.status_code == 200, answer.text

    return fetch, send, configure


def test_segment_aware_strategies_beat_plain_thompson_sampling(client, run) -> None:
    simulation = Simulation(users=200, items=100, categories=5, seed=8, prefix=f"{run}-",
                            segments=Segments())
    _prepare(client, simulation)
    fetch, send, configure = _callables(client)
    result = compare(simulation, fetch, send, configure, ["bandit", "contextual", "clustered"],
                     f"cmp-{run}", REQUESTS, MODELS)
    rewards = {strategy: result.reward(strategy) for strategy in result.results}
    print(f"reward per list over {REQUESTS} requests: {rewards}; contextual leads from "
          f"request {result.leads_from('contextual', 'bandit')}, clustered from "
          f"{result.leads_from('clustered', 'bandit')}; last 200 by segment: contextual "
          f"{result.segment_shares('contextual', 200)}, clustered "
          f"{result.segment_shares('clustered', 200)}")
    # Judged on what the choices were worth (each list's known rate): the clicks' luck
    # would make a margin of a few lists flaky. The plain bandit can be worth 20% at best.
    worth = {strategy: result.expected_reward(strategy, simulation.segments, 200)
             for strategy in result.results}
    print(f"worth per list over the last 200 requests: {worth}")
    # The best any one variant for everyone could be worth over the same requests' segment
    # mix (about 20%; more when one segment came more often): no segment-blind allocation
    # beats it in expectation. Over 200 requests its blind choices can still meet the
    # segments they suit by chance (0.220 against 0.216 once in CI): a list's worth, given
    # its variant, varies with the segment by at most half the spread of that variant's
    # rates, so allow three standard errors of that.
    plain = result.results["bandit"]
    last = plain.segments[-200:]
    blind = max(sum(simulation.segments.rate(segment, variant) for segment in last) / len(last)
                for variant in MODELS)
    spread = max(max(rates) - min(rates) for rates in (
        [simulation.segments.rate(segment, variant) for segment in set(last)]
        for variant in MODELS))
    assert worth["bandit"] <= blind + 3 * (spread / 2) / len(last) ** 0.5, (worth, blind)
    # Linear Thompson sampling learns slower than a posterior per segment (it also weighs
    # the hour and the user's activity): ahead, by less, within 1,000 requests.
    assert worth["clustered"] > worth["bandit"] + 0.02
    assert worth["contextual"] > worth["bandit"]
    for strategy in ("contextual", "clustered"):
        shares = result.segment_shares(strategy, 200)
        assert shares["mobile"].get("popular", 0) > 0.5, (strategy, shares)
        assert shares["desktop"].get("hybrid", 0) > 0.4, (strategy, shares)

    # The plain bandit's converged policy, estimated off-policy from the contextual run.
    stats = arm_stats([Logged(v, 1.0, float(r)) for v, r in zip(plain.served, plain.rewards,
                                                                 strict=True)])
    shares = thompson_shares({name: stats.get(name, (0, 0)) for name in MODELS}, floor=0.05)
    placement = f"cmp-{run}-contextual"
    report = wait_for(lambda: (r := client.post(
        f"/admin/placements/{placement}/report",
        json={"policy": {"strategy": "split", "shares": shares}}).json()).get("lists",
                                                                              0) >= REQUESTS
        and r, timeout=30)
    low, high = report["snips"]["interval"]
    print(f"plain bandit measured {rewards['bandit']:.3f} (its lists were worth "
          f"{result.expected_reward('bandit', simulation.segments):.3f}); estimated from "
          f"the contextual run's logs {report['snips']['value']:.3f} "
          f"[{low:.3f}, {high:.3f}] (SNIPS), "
          f"{report['ips']['value']:.3f} {report['ips']['interval']} (IPS), ESS "
          f"{report['effective_sample_size']}")
    # Against what the plain bandit's lists were worth; within 2.58 standard errors (99%)
    # rather than the printed 95% interval, so that one run in twenty does not fail CI.
    truth = result.expected_reward("bandit", simulation.segments)
    error = (high - low) / (2 * 1.96)
    assert abs(report["snips"]["value"] - truth) <= 2.58 * error, (truth, report["snips"])
    # The rule a contextual bandit should find, whose truth is 30%, from the same logs (the
    # device read back from the decisions' features).
    rule = client.post(f"/admin/placements/{placement}/report", json={"policy": {
        "by": "device", "choose": {"mobile": "popular", "desktop": "hybrid"}}}).json()
    print(f"the best rule per device, estimated: {rule['snips']}")
    low, high = rule["snips"]["interval"]
    assert abs(rule["snips"]["value"] - 0.30) <= 2.58 * (high - low) / (2 * 1.96)


def test_equal_variants_stay_balanced_under_the_contextual_strategy(client, run) -> None:
    simulation = Simulation(users=100, items=50, categories=5, seed=9, prefix=f"{run}-",
                            segments=EQUAL_SEGMENTS)
    _prepare(client, simulation)
    fetch, send, configure = _callables(client)
    result = compare(simulation, fetch, send, configure, ["contextual"], f"eq-{run}", 300,
                     {"left": "popular", "right": "popular"}, floor=0.1)
    shares = result.results["contextual"].shares()
    print(f"equal variants under contextual: {shares}")
    assert min(shares.values()) >= 0.2  # the floor alone guarantees 10% each
