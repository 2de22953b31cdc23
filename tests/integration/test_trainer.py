"""The trainer end to end against real Kafka, Redis and a worker: events through the
topic, ``streamrec trainer --once``, runs published with lineage that matches the topic's
offsets and the events' times, ``ease`` and ``ials`` served (with ``model=`` and as a
placement variant) and fresh (an event sent after training changes the list), promote and
rollback between two runs, and an app's runs apart from the default app's."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import orjson
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fastapi.testclient import TestClient

from api.main import create_app
from streamrec.settings import Settings
from streamrec.storage.state_store import RedisStore
from streamrec.storage.trained_runs import TrainedRuns
from streamrec.wiring import Wiring
from tests.api.conftest import wait_for
from tests.factories import taste_groups

# Small and quick: the point is the path, not the model.
FAST = {"trainer_ials_factors": "8", "trainer_ials_iterations": "10",
        "trainer_ials_regularization": "1.0", "trainer_ease_regularization": "1.0",
        "trainer_min_events": "50", "trained_refresh_seconds": "0.2"}


def _events(start: float, app: str | None = None) -> list[dict]:
    """Three taste groups of 40 users over 8 items each, one event a second from
    ``start`` (in the past: event times are kept as sent)."""
    return [{"user_id": e.user_id, "item_id": e.item_id, "event_type": "view",
             "timestamp": e.timestamp, **({"app": app} if app else {})}
            for e in taste_groups(users=40, items=8, start=start)]


async def _produce(bootstrap: str, topic: str, events: list[dict], app: str | None = None
                   ) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    headers = [("app", app.encode())] if app else None
    try:
        for event in events:
            await producer.send(topic, orjson.dumps(event), key=event["user_id"].encode(),
                                headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


async def _offsets(bootstrap: str, topic: str) -> dict[str, list[int]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)
                      or await _partitions(consumer, topic)]
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        return {f"{topic}:{tp.partition}": [starts[tp], ends[tp] - 1] for tp in partitions
                if ends[tp] > starts[tp]}
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


def _env(worker_env: dict, names: dict) -> dict:
    return dict(worker_env, **{f"STREAMREC_{k.upper()}": v for k, v in {**names, **FAST}.items()})


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamrec.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def _listed(client: TestClient, user: str, model: str) -> tuple[str, list[str]]:
    answer = client.get("/recommendations", params={"user_id": user, "model": model, "k": 5})
    if answer.status_code != 200:  # shed on a loaded machine: ask again
        return "", []
    body = answer.json()
    return body["model"], [item["item_id"] for item in body["items"] if not item.get("backfill")]


def test_a_trainer_cycle_publishes_serves_and_switches_runs(isolated_worker, services,
                                                             worker_env):
    names = isolated_worker
    env = _env(worker_env, names)
    bootstrap, topic = services["bootstrap"], names["events_topic"]
    client = redis.Redis.from_url(services["redis_url"])
    sent = _events(start=time.time() - 3600)
    asyncio.run(_produce(bootstrap, topic, sent))
    store = RedisStore(client, names["redis_prefix"])
    assert wait_for(lambda: store.events_applied() >= len(sent), timeout=90)

    trained = _cli(env, "trainer", "--once", "--models", "ease,ials")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "ease@1 trained on 480 events" in trained.stdout, trained.stdout
    assert "ials@1 trained on 480 events" in trained.stdout, trained.stdout

    runs = TrainedRuns(client, names["redis_prefix"])
    offsets = asyncio.run(_offsets(bootstrap, topic))
    for model in ("ease", "ials"):
        run = runs.get(model, 1)
        assert run is not None and run.status == "complete"
        assert run.lineage["offsets"] == offsets  # every record of the topic, from-to
        assert run.lineage["event_time"] == [min(e["timestamp"] for e in sent),
                                             max(e["timestamp"] for e in sent)]
        assert (run.lineage["events"], run.lineage["users"], run.lineage["items"]) == (
            480, 120, 24)
        assert run.offline is not None and run.offline["recall@10"] > 0.3
        assert run.training_seconds > 0 and run.peak_memory_bytes > 0
        assert runs.serving_run(model) == 1
        assert runs.card(model)["run"] == f"{model}@1"

    settings = Settings(kafka_bootstrap=bootstrap, redis_url=services["redis_url"],
                        **names, **FAST)
    with TestClient(create_app(settings)) as http:
        # Ready first: its producer may still be connecting (run alone, on a broker that
        # just started, POST /events answered 503 "not connected to Kafka yet").
        assert wait_for(lambda: http.get("/readyz").status_code == 200, timeout=60)
        for model in ("ease", "ials"):
            used, items = _listed(http, "g1-u0", model)
            assert used == model and items and all(i.startswith("g1-") for i in items[:3])

        # Fresh: a user the runs never saw, whose three events arrive after training, is
        # served their group's items by both models as soon as the worker applies them.
        for n in range(3):
            assert http.post("/events", json={"user_id": "newcomer", "item_id": f"g2-i{n}",
                                              "event_type": "view"}).status_code == 202
        for model in ("ease", "ials"):
            assert wait_for(lambda m=model: (lambda got: got[0] == m and got[1] and all(
                i.startswith("g2-") for i in got[1][:3]))(_listed(http, "newcomer", m)),
                timeout=60), _listed(http, "newcomer", model)

        # A placement variant served by a trained run.
        assert http.put("/admin/placements/shelf", json={
            "strategy": "split", "variants": [{"name": "batch", "model": "ease"}]}
                        ).status_code == 200
        answer = wait_for(lambda: (lambda r: r.status_code == 200 and r.json())(
            http.get("/recommendations", params={"user_id": "g0-u1", "placement": "shelf"})))
        assert answer["model"] == "ease" and answer["variant"] == "batch"

        # A second cycle publishes ease@2 and promotes it; promote ease@1 and roll back.
        again = _cli(env, "trainer", "--once", "--models", "ease")
        assert again.returncode == 0 and "ease@2" in again.stdout, again.stderr[-3000:]
        assert runs.serving_run("ease") == 2
        lineage = runs.get("ease", 2).lineage
        assert lineage["events"] == 483  # the newcomer's events count
        listed = _cli(env, "versions")
        assert listed.returncode == 0, listed.stderr
        rows = [row for row in listed.stdout.splitlines() if "ease@" in row]
        assert [row.startswith("*") for row in rows] == [False, True], listed.stdout
        assert "offsets" in rows[0] and "recall@10" in rows[0]

        back = _cli(env, "promote", "ease@1")
        assert back.returncode == 0 and runs.serving_run("ease") == 1, back.stderr
        assert runs.card("ease")["run"] == "ease@1"
        refused = _cli(env, "promote", "ease@9")
        assert refused.returncode == 1 and "ease@9 does not exist" in refused.stderr
        rolled = _cli(env, "rollback", "--model", "ease")
        assert rolled.returncode == 0 and "ease@2" in rolled.stdout, rolled.stderr
        assert runs.serving_run("ease") == 2
        used, items = _listed(http, "g1-u0", "ease")
        assert used == "ease" and items

        # The same over HTTP (admin).
        found = wait_for(lambda: (lambda r: r.status_code == 200 and r)(
            http.get("/admin/versions/runs")))  # a read may be shed on a loaded machine
        assert found, http.get("/admin/versions/runs").text
        listed = found.json()
        assert [(run["name"], run["serving"]) for run in listed["ease"]] == [
            ("ease@1", False), ("ease@2", True)]
        switched = http.post("/admin/versions/ease@1/promote")
        assert switched.status_code == 200 and switched.json()["previous"] == "ease@2"
        assert http.post("/admin/versions/ease@7/promote").status_code == 409
        undone = http.post("/admin/versions/rollback", params={"model": "ease"})
        assert undone.json() == {"serving": "ease@2"} and runs.serving_run("ease") == 2


def test_an_apps_runs_are_its_own_and_a_short_log_is_a_clear_error(isolated_worker, services,
                                                                   worker_env):
    names = isolated_worker
    env = _env(worker_env, names)
    bootstrap, topic = services["bootstrap"], names["events_topic"]
    client = redis.Redis.from_url(services["redis_url"])
    settings = Settings(kafka_bootstrap=bootstrap, redis_url=services["redis_url"], **names)
    base = Wiring(settings, client)
    base.apps().create("shop")

    # No topic: one clear line, status 1, nothing published. (A topic of its own: the
    # worker creates the events topic when it starts, which may be before this line.)
    missing = f"{topic}.missing"
    empty = _cli(dict(env, STREAMREC_EVENTS_TOPIC=missing), "trainer", "--once", "--app", "shop",
                 "--models", "ease")
    assert empty.returncode == 1
    assert f"topic {missing!r} does not exist" in empty.stderr, empty.stderr[-2000:]
    assert base.for_app("shop").trained_runs().serving_run("ease") is None

    asyncio.run(_produce(bootstrap, topic, _events(time.time() - 3600), app="shop"))
    assert wait_for(lambda: base.for_app("shop").store().events_applied() >= 480, timeout=90)
    trained = _cli(env, "trainer", "--once", "--all-apps", "--models", "ease")
    assert "app shop: ease@1" in trained.stdout, trained.stdout + trained.stderr[-2000:]
    # The default app's part says why it trained nothing; the cycle goes on.
    assert "app default: 0 events" in trained.stderr
    assert "STREAMREC_TRAINER_MIN_EVENTS" in trained.stderr
    shop = base.for_app("shop").trained_runs()
    assert shop.serving_run("ease") == 1
    assert TrainedRuns(client, names["redis_prefix"]).serving_run("ease") is None

    # A cycle reads the newest STREAMREC_TRAINER_MAX_EVENTS records, each partition its
    # share, and its lineage says which.
    bounded = _cli(dict(env, STREAMREC_TRAINER_MAX_EVENTS="200"), "trainer", "--once",
                   "--app", "shop", "--models", "ease")
    assert "app shop: ease@2" in bounded.stdout, bounded.stdout + bounded.stderr[-2000:]
    lineage = shop.get("ease", 2).lineage
    whole = asyncio.run(_offsets(bootstrap, topic))
    assert 190 <= lineage["events"] <= 200
    assert sum(high - low + 1 for low, high in lineage["offsets"].values()) == lineage["events"]
    assert all(lineage["offsets"][name][1] == high for name, (_, high) in whole.items())
