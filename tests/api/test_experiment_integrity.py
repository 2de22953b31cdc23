"""The experiment cannot be fooled or flooded by clients, against a worker of its own (real
Kafka and Redis) and an API app on the same topics and keys:

- lists the allocation did not choose (a forced ``model=``, an unknown placement) count
  for no variant, and names nobody configured create no keys;
- a click that claims to precede its list, or arrives after the window whatever it
  claims, earns nothing;
- every impression on the topic is validated; what fails is dead-lettered, names nobody
  configured create no counters or Prometheus series, and unreadable stored impressions
  never stop the worker.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from recommender.attribution import ROUTE_PLACEMENTS
from streamrec.settings import Settings
from streamrec.storage import keys
from tests.api.conftest import wait_for
from tests.conftest import own_worker
from tests.factories import event
from tests.integration.test_dead_letters import _dead_letters, _produce

WINDOW = 6.0  # seconds: the stack's attribution window, short enough to outlive in a test


@pytest.fixture(scope="module")
def stack(services, worker_env):
    """(API client, the worker's settings, Redis, the worker's log)."""
    with own_worker(services, worker_env, attribution_window_seconds=str(WINDOW),
                    attribution_grace_seconds="5") as names:
        settings = Settings(kafka_bootstrap=services["bootstrap"],
                            redis_url=services["redis_url"],
                            **{k: v for k, v in names.items() if k in Settings.model_fields})
        with TestClient(create_app(settings)) as client:
            assert wait_for(lambda: client.get("/readyz").status_code == 200, timeout=60)
            warm = [event(f"warm-{n}", f"item-{m}") for n in range(3) for m in range(12)]
            assert client.post("/events", json=warm).status_code == 202
            assert wait_for(lambda: len(client.get("/popular", params={"k": 12})
                                        .json()["items"]) == 12, timeout=60)
            yield (client, names, redis.Redis.from_url(services["redis_url"]),
                   services["dir"] / f"worker-{names['worker_id']}.log")


def _outcomes(client) -> dict[str, int]:
    return client.app.state.allocation.feedback.outcomes()


def _counters(client, placement: str) -> dict:
    return client.app.state.allocation.feedback.variant_counters(placement)


def _wait_outcomes(client, expected: dict[str, int], before: dict[str, int]) -> dict:
    def grown():
        now = _outcomes(client)
        return {k: now.get(k, 0) - before.get(k, 0) for k in set(now) | set(expected)
                if now.get(k, 0) != before.get(k, 0)}
    wait_for(lambda: all(grown().get(k, 0) >= v for k, v in expected.items()), timeout=30)
    time.sleep(1.5)  # anything more that was coming
    return grown()


def _click(shown: dict, position: int = 0, **extra) -> dict:
    return event(shown["user_id"], shown["items"][position]["item_id"], "click",
                 recommendation_id=shown["recommendation_id"], **extra)


def test_lists_the_allocation_did_not_choose_count_for_no_variant(stack):
    client, names, store, _ = stack
    run = uuid.uuid4().hex[:8]
    placement = f"home-{run}"
    assert client.put(f"/admin/placements/{placement}", json={"variants": [
        {"name": "A", "model": "popular"}, {"name": "B", "model": "popular"}]}).status_code == 200

    def get(**params):
        answer = client.get("/recommendations", params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    allocated = [get(user_id=f"{run}-u{n}", placement=placement) for n in range(10)]
    forced = [get(user_id=f"{run}-f{n}", placement=placement, model=model)
              for n, model in enumerate(["popular"] * 10 + ["hybrid"] * 5)]
    unknown = [get(user_id=f"{run}-x{n}", placement=f"rnd-{uuid.uuid4().hex}")
               for n in range(300)]
    assert {entry["variant"] for entry in unknown} == {client.app.state.settings.default_model}

    # Shown just now, so that its click is within the short window however busy the machine.
    allocated.append(get(user_id=f"{run}-u10", placement=placement))
    before = _outcomes(client)
    clicks = [_click(forced[0]), _click(forced[-1]), _click(unknown[0]), _click(allocated[-1])]
    assert client.post("/events", json=clicks).status_code == 202
    grown = _wait_outcomes(client, {"not_allocated": 3, "credited": 1}, before)
    assert grown == {"not_allocated": 3, "credited": 1}

    def shown() -> int:  # impressions travel keyed by user: some partitions may lag
        return sum(c.get("impressions", 0) for c in _counters(client, placement).values())

    assert wait_for(lambda: shown() >= 11, timeout=30) and shown() == 11
    counters = _counters(client, placement)
    assert set(counters) <= {"A", "B"}  # no variant named after a forced model
    assert sum(c.get("lists_rewarded", 0) for c in counters.values()) == 1
    configured = set(client.app.state.allocation.feedback.placements())
    counted = {name.decode().rpartition(f"{keys.VARIANT_COUNTERS}{keys.SEPARATOR}")[2]
               for name in store.scan_iter(keys.key(names["redis_prefix"],
                                                    keys.VARIANT_COUNTERS, "*"))}
    # 300 names nobody configured: no keys (the routes' own lists count under theirs)
    assert counted <= configured | set(ROUTE_PLACEMENTS)


def test_clicks_before_their_list_or_after_the_window_earn_nothing(stack):
    client, _, _, _ = stack
    run = uuid.uuid4().hex[:8]
    placement = f"page-{run}"
    client.put(f"/admin/placements/{placement}", json={"variants": [
        {"name": "A", "model": "popular"}]})
    first = client.get("/recommendations", params={"user_id": f"{run}-u",
                                                   "placement": placement}).json()
    second = client.get("/recommendations", params={"user_id": f"{run}-u",
                                                    "placement": placement}).json()
    shown_at = time.time()
    before = _outcomes(client)
    assert client.post("/events", json=[
        _click(first, 0),  # honest: credited
        _click(first, 1, timestamp=1),  # claims 1970, decades before the list was shown
    ]).status_code == 202
    time.sleep(WINDOW + 1.5)
    # Received after the window, claiming a moment right after the list was shown.
    assert client.post("/events", json=[_click(second, 0, timestamp=shown_at + 0.5)]
                       ).status_code == 202
    grown = _wait_outcomes(client, {"credited": 1, "before_impression": 1, "late": 1}, before)
    assert grown == {"credited": 1, "before_impression": 1, "late": 1}
    counters = _counters(client, placement)["A"]
    assert counters["click"] == 1 and counters["lists_rewarded"] == 1


def _impression(run: str, n: int, placement: str, variant: str, **fields) -> dict:
    return {"recommendation_id": f"{run}-r{n}", "user_id": f"{run}-u", "placement": placement,
            "variant": variant, "model": "popular", "items": ["item-1", "item-2"],
            "timestamp": time.time(), **fields}


def test_impressions_are_validated_and_bad_ones_never_stop_the_worker(stack, services):
    client, names, store, worker_log = stack
    run = uuid.uuid4().hex[:8]
    placement = f"lab-{run}"
    client.put(f"/admin/placements/{placement}", json={"variants": [
        {"name": "A", "model": "popular"}]})
    assert wait_for(lambda: placement in client.get("/metrics/snapshot").json().get(
        "placements", {}), timeout=10)
    topic = names["impressions_topic"]
    key = f"{run}-u".encode()
    hostile = "<img src=x onerror=alert(1)>"
    floods = [_impression(run, n, placement, f"v-{n}") for n in range(300)]
    floods += [_impression(run, 300, placement, hostile),
               _impression(run, 301, f"nowhere-{run}", "A")]
    bad = [  # (value, what the dead letter's reason names)
        (orjson.dumps(_impression(run, 500, placement, "A", timestamp="nan")), "timestamp"),
        (orjson.dumps(_impression(run, 501, placement, "A"))[:-1] + b', "extra": 1}',
         "extra"),
        (orjson.dumps(_impression(run, 502, placement, "A"))
         .replace(b'"timestamp":', b'"timestamp": NaN, "x":'), "impression"),
        (orjson.dumps(_impression(run, 503, placement, "A", items="item-1")), "items"),
        (orjson.dumps(_impression(run, 504, "p" * 65, "A")), "placement"),
        (orjson.dumps(_impression(run, 505, placement, "A", items=["i"] * 501)), "items"),
        (orjson.dumps(_impression(run, 506, placement, "A", user_id="ann\n")), "user_id"),
        (b"\xff not JSON", "impression"),
        (None, "empty"),
    ]
    asyncio.run(_produce(services["bootstrap"], [
        (topic, key, orjson.dumps(document)) for document in floods]))
    good = _impression(run, 400, placement, "A")  # shown now: clicked within the window
    sources = asyncio.run(_produce(services["bootstrap"], [(topic, key, orjson.dumps(good))]
                                   + [(topic, key, value) for value, _ in bad]))
    # Unreadable records straight into Redis, as if anything else had written them.
    prefix = names["redis_prefix"]
    for rid, document in ((f"{run}-r600", b'{"recommendation_id": "x", "timestamp": null}'),
                          (f"{run}-r601", b"\xff garbage"), (f"{run}-r602", b"[1, 2]")):
        store.set(keys.key(prefix, keys.IMPRESSION, rid), document, ex=600)
    store.hset(keys.key(prefix, keys.IMPRESSION, f"{run}-r603"), "a", "b")

    before = _outcomes(client)
    clicks = [event(f"{run}-u", "item-1", "click", recommendation_id=f"{run}-r{n}")
              for n in (500, 600, 601, 602, 603, 0, 400)]
    assert client.post("/events", json=clicks).status_code == 202
    grown = _wait_outcomes(client, {"no_impression": 5, "not_allocated": 1, "credited": 1},
                           before)
    assert grown == {"no_impression": 5, "not_allocated": 1, "credited": 1}

    dead = asyncio.run(_dead_letters(services["bootstrap"], names["dead_letter_topic"],
                                     len(bad)))
    for (value, mention), source in zip(bad, sources[-len(bad):], strict=True):
        assert source in dead, (value, mention)
        assert mention in dead[source][2], (mention, dead[source][2])

    assert set(_counters(client, placement)) == {"A"}  # 302 names nobody configured: none
    assert _counters(client, f"nowhere-{run}") == {}
    prometheus = client.get("/metrics").text
    assert 'variant="v-' not in prometheus and "<img" not in prometheus
    assert f'placement="{placement}",variant="A"' in prometheus
    snapshot = client.get("/metrics/snapshot").json()["placements"][placement]
    assert set(snapshot["variants"]) == {"A"}
    log = worker_log.read_text()
    assert "Traceback" not in log and "TypeError" not in log, log[-3000:]
