"""Effectively-once state: a worker killed with SIGKILL at random moments, many times, ends
with the same Redis state as one that was never interrupted: on one Redis (a batch is one
Lua call) and on a three-node Redis Cluster (a batch is one call per group of slots, so
most kills land between two of them). The events span 400 ten-minute half-lives, so the
decayed keys are rescaled several times during the run (and kills land amid rescales)."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
import uuid

import orjson
import pytest
import redis
from aiokafka import AIOKafkaProducer

from recommender.decay import RESCALE_HALF_LIVES
from streamrec.kafka import ensure_topics
from streamrec.settings import Settings
from streamrec.sim.simulator import Simulation
from streamrec.storage import keys
from streamrec.storage.client import connect
from streamrec.storage.state_store import RedisStore
from streams.catchup import CAUGHT_UP

EVENTS = 50_000
KILLS = 10
TOLERANCE = 1e-9  # relative, for sums of floats added in a different order
HALF_LIFE = 600.0  # events are ~5 s apart: 50,000 of them span ~400 half-lives
START = 1_750_000_000.0  # in the past: later event times are clamped to their arrival


def _names(run: str) -> dict[str, str]:
    return {"redis_prefix": run, "worker_id": run, "events_topic": f"{run}.events",
            "dead_letter_topic": f"{run}.dlq", "items_topic": f"{run}.items",
            "users_topic": f"{run}.users", "impressions_topic": f"{run}.impressions",
            "metrics_topic": f"{run}.metrics"}


async def _produce(bootstrap: str, topics: list[str], events: list[dict]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=20)
    await producer.start()
    try:
        for event in events:
            value, key = orjson.dumps(event), event["user_id"].encode()
            for topic in topics:
                await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def _spawn(env: dict, log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "streamrec.cli", "worker",
                             "--log-level", "warning"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def _wait_applied(store: RedisStore, count: int, process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while store.events_applied() < count:
        assert process.poll() is None, "the worker died"
        assert time.monotonic() < deadline, f"{store.events_applied()} of {count} applied"
        time.sleep(0.2)


def _state(client: redis.Redis, prefix: str, now: float) -> dict[str, dict]:
    """Every sorted set of a run's state by kind and id (a cluster's group tags left out);
    decayed ones as their values at ``now`` (raw scores are in frames that depend on where
    batches began and ended)."""
    landmarks = _landmarks(client, prefix)
    state = {}
    for key in _scan(client, prefix):
        name = key.decode().removeprefix(prefix + ":").split("}:", 1)[-1]
        kind = client.type(key).decode()
        if kind == "zset" and not name.startswith("mfchg"):
            scale = 1.0
            if name.split(":", 1)[0] in keys.DECAYED:  # its landmark field is its name
                scale = 2.0 ** ((landmarks[name] - now) / HALF_LIFE)
            state[name] = {m.decode(): s * scale for m, s in client.zrange(key, 0, -1,
                                                                            withscores=True)}
    return state


def _landmarks(client: redis.Redis, prefix: str) -> dict[str, float]:
    """Every decayed key's landmark (its kind and id -> epoch seconds)."""
    found = {}
    for name in keys.landmark_keys(prefix):
        found.update({field.decode(): float(value)
                      for field, value in client.hgetall(name).items()})
    return found


def _scan(client: redis.Redis, prefix: str):
    if not keys.is_tagged(prefix):
        yield from client.scan_iter(f"{prefix}:*", count=1000)
        return
    for pattern in (f"{prefix}:*", *keys.group_patterns(prefix)):
        yield from client.scan_iter(pattern, count=1000)


@pytest.fixture(params=["single", "cluster"])
def layout(request, services):
    """The Redis to run on: the session's one, or the three-node cluster."""
    if request.param == "single":
        return {"url": services["redis_url"], "cluster": False}
    return {"url": request.getfixturevalue("redis_cluster"), "cluster": True}


@pytest.mark.timeout(900)
def test_killed_worker_ends_with_the_state_of_an_uninterrupted_one(services, worker_env,
                                                                   tmp_path, layout):
    runs = {"steady": f"steady{uuid.uuid4().hex[:6]}", "killed": f"killed{uuid.uuid4().hex[:6]}"}
    envs = {}
    for label, run in runs.items():
        names = _names(run)
        envs[label] = dict(worker_env, STREAMREC_MAX_NEIGHBOURS="1000000",
                           STREAMREC_DECAY_HALF_LIFE_SECONDS=str(HALF_LIFE),
                           STREAMREC_POPULARITY_HALF_LIFE_SECONDS=str(HALF_LIFE),
                           STREAMREC_REDIS_URL=layout["url"],
                           STREAMREC_REDIS_CLUSTER=str(layout["cluster"]).lower(),
                           STREAMREC_SESSION_TIMEOUT_SECONDS="6",
                           **{f"STREAMREC_{k.upper()}": v for k, v in names.items()})
        asyncio.run(ensure_topics(Settings(kafka_bootstrap=services["bootstrap"],
                                           **names)))
    simulation = Simulation(users=2000, items=600, categories=12, seed=11)
    events = list(simulation.events(EVENTS, start=START))
    end = max(event["timestamp"] for event in events)
    asyncio.run(_produce(services["bootstrap"],
                         [f"{runs['steady']}.events", f"{runs['killed']}.events"], events))
    client = connect(layout["url"], layout["cluster"])
    if layout["cluster"]:
        runs = {label: keys.tagged(run) for label, run in runs.items()}
    stores = {label: RedisStore(client, run) for label, run in runs.items()}

    with open(tmp_path / "steady.log", "wb") as log:
        steady = _spawn(envs["steady"], log)
        _wait_applied(stores["steady"], EVENTS, steady, timeout=400)
        steady.terminate()
        steady.wait(30)

    rng = random.Random(5)
    progress = []
    with open(tmp_path / "killed.log", "wb") as log:
        for _ in range(KILLS):
            before = stores["killed"].events_applied()
            victim = _spawn(envs["killed"], log)
            # Kill it mid-work: once it has applied something (the group first has to give
            # up on the previous victim), at a random moment within the next 0.4 s, so that
            # every one of the kills lands before the last event is applied.
            deadline = time.monotonic() + 90
            while stores["killed"].events_applied() == before and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.4))
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            progress.append(stores["killed"].events_applied())
        survivor = _spawn(envs["killed"], log)
        _wait_applied(stores["killed"], EVENTS, survivor, timeout=400)
        time.sleep(2)  # anything counted twice would show now
        survivor.terminate()
        survivor.wait(30)
    print(f"events applied when each SIGKILL landed: {progress}")
    caught_up = (tmp_path / "killed.log").read_text(errors="replace").count(CAUGHT_UP)
    print(f"batches a kill cut between two group calls, replayed group by group: {caught_up}")
    assert len({p for p in progress if 0 < p < EVENTS}) == KILLS, "a kill missed the work"

    assert stores["killed"].events_applied() == EVENTS == stores["steady"].events_applied()
    # Rescales happened: each moves popularity's landmark by a little more than 64
    # half-lives (plus at most a batch's event time), so past 4 * 64 means at least 3.
    for run in runs.values():
        moved = (_landmarks(client, run)["pop"] - START) / HALF_LIFE
        print(f"{run}: popularity's landmark {moved:.0f} half-lives after the first event")
        assert moved > 4 * RESCALE_HALF_LIVES
    steady_state = _state(client, runs["steady"], end)
    killed_state = _state(client, runs["killed"], end)
    assert steady_state.keys() == killed_state.keys()
    for name, scores in steady_state.items():
        other = killed_state[name]
        assert scores.keys() == other.keys(), name
        for member, score in scores.items():
            if name.startswith("hist:"):
                assert other[member] == score, (name, member)  # timestamps: exact
            else:  # far below the smallest normal double, a rescale may have written 0
                assert other[member] == pytest.approx(score, rel=TOLERANCE, abs=1e-300), \
                    (name, member)
    def offsets(run: str) -> dict[str, int]:
        stored = client.hgetall(f"{run}:offsets")
        return {k.decode().rpartition(":")[2]: int(v) for k, v in stored.items()}

    assert offsets(runs["killed"]) == offsets(runs["steady"])
