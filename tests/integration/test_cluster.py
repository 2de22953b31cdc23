"""streamrec on a real three-node Redis Cluster: a crash between two of a batch's group
calls is replayed exactly, and the worker and the API serve from the cluster end to end."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from recommender.decay import ForwardDecay
from recommender.engine import Engine
from streamrec.settings import Settings
from streamrec.storage import keys
from streamrec.storage.client import connect
from streamrec.storage.state_store import RedisStore
from streams.catchup import learn_once
from streams.decode import LOG_APPEND_TIME, PlainRecord, decode_events, unapplied
from tests.api.conftest import wait_for
from tests.conftest import own_worker
from tests.factories import event, produce_views


def _records(count: int, users: int = 30, items: int = 25) -> list[PlainRecord]:
    """Views on one partition; a user's items repeat, so histories, windows and first
    touches all matter."""
    rows = []
    for n in range(count):
        user = f"u{(n * 7) % users}"
        value = orjson.dumps(event(user, f"i{(n * 13) % items}", timestamp=1_750_000_000 + n))
        rows.append(PlainRecord("events", 0, n, user.encode(), value, 1_750_000_000.0 + n,
                                LOG_APPEND_TIME))
    return rows


class Crash(Exception):
    pass


def _crashing(store: RedisStore, after: int) -> None:
    """Make ``store`` raise after ``after`` group calls of its next apply, as a SIGKILL
    between two calls would leave it."""
    real, calls = store._call, [0]

    def call(*args, **kwargs):
        if calls[0] == after:
            store._call = real
            raise Crash
        calls[0] += 1
        return real(*args, **kwargs)

    store._call = call


def _learn(engine: Engine, store: RedisStore, settings: Settings, batch: list[PlainRecord]):
    fresh, offsets = unapplied(batch, store.applied_offsets({"events:0"}))
    def decode(part):
        return decode_events(part, settings.weights(), settings.max_event_time_skew_seconds)

    learn_once(engine, store, decode, fresh, decode(fresh).interactions, offsets)


def _state(store: RedisStore, users: int = 30, items: int = 25) -> dict:
    """What the store holds; decayed values as of one time after the last record (the
    stored scores are in frames that depend on where the batches began)."""
    decay = ForwardDecay(Settings().decay_half_life_seconds)
    now = 1_800_000_000.0 + 1000
    item_ids = [f"i{n}" for n in range(items)]
    counts = store.item_counts(item_ids)
    return {
        "popular": dict(decay.values_at(store.popular(100), now)),
        "counts": {item: decay.value_at(value, counts.landmark, now)
                   for item, value in counts.scores.items()},
        "neighbours": {i: dict(decay.values_at(rows, now))
                       for i, rows in store.neighbours(item_ids, 100).items()},
        "histories": store.histories([f"u{n}" for n in range(users)], 100),
        "events": store.events_applied(),
        "offsets": store.applied_offsets(["events:0"]),
    }


def _close(a: dict, b: dict) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a))
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, tuple):
        return all(_close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("crash_after", [1, 3, 9, 17, 24, 33])
def test_a_crash_between_group_calls_is_replayed_exactly(redis_cluster, crash_after):
    """Batch 2 stops after ``crash_after`` of its group calls (1: the global state only;
    33: every group but not the offsets); the replay, in smaller batches than the first
    attempt, ends equal to a run that never crashed."""
    settings = Settings(redis_cluster=True)
    records = _records(300)
    stores = []
    for crashes in (False, True):
        client = connect(redis_cluster, cluster=True)
        store = RedisStore(client, prefix=keys.tagged(f"crash-{uuid.uuid4().hex[:8]}"))
        engine = Engine(store, settings.engine_config())
        _learn(engine, store, settings, records[:100])
        if crashes:
            _crashing(store, crash_after)
            with pytest.raises(Crash):
                _learn(engine, store, settings, records[100:250])
            assert store.applied_offsets(["events:0"]) == {"events:0": 99}
            for start in range(100, 300, 40):  # redelivered in other batch boundaries
                _learn(engine, store, settings, records[start:start + 40])
        else:
            _learn(engine, store, settings, records[100:250])
            _learn(engine, store, settings, records[250:])
        stores.append(store)
    whole, replayed = (_state(store) for store in stores)
    assert whole["events"] == replayed["events"] == 300
    assert whole["offsets"] == replayed["offsets"] == {"events:0": 299}
    assert _close(whole, replayed)


def test_worker_and_api_serve_from_the_cluster(services, worker_env, redis_cluster):
    cluster = {"redis_cluster": "true", "redis_url": redis_cluster}
    with own_worker(services, worker_env, **cluster) as names:
        settings = Settings(kafka_bootstrap=services["bootstrap"], **names)
        run = names["redis_prefix"]
        asyncio.run(produce_views(services["bootstrap"], names["events_topic"], run, 0, 400))
        store = RedisStore(connect(redis_cluster, cluster=True), settings.redis_prefix)
        assert wait_for(lambda: store.events_applied() >= 400, timeout=90), \
            "the worker on the cluster applied nothing: see its log in the services directory"
        assert store.events_applied() == 400
        client = store.client
        nodes = {client.get_node_from_key(store.key(keys.HISTORY, f"{run}-u{n}")).name
                 for n in range(50)}
        assert len(nodes) == 3  # the users' state is spread over the three nodes
        with TestClient(create_app(settings)) as api:
            assert wait_for(lambda: api.get("/readyz").status_code == 200, timeout=60)
            for model in ("popular", "cooccurrence", "mf", "hybrid"):
                answer = api.get("/recommendations", params={
                    "user_id": f"{run}-u1", "k": 5, "model": model})
                assert answer.status_code == 200, answer.text
                assert len(answer.json()["items"]) == 5, (model, answer.json())
                assert not answer.json().get("degraded"), model
            similar = api.get(f"/items/{run}-i3/similar", params={"k": 3})
            assert similar.status_code == 200 and similar.json()["items"]
            # Fresh: a new event through the API is visible in the user's next list.
            sent = api.post("/events", json=event(f"{run}-new", f"{run}-i7"))
            assert sent.status_code == 202, sent.text
            assert wait_for(lambda: store.history(f"{run}-new", 5), timeout=30)


def test_snapshots_and_version_deletes_reach_every_group(redis_cluster, tmp_path):
    from streamrec.storage.model_versions import Version, VersionError, Versions
    from streamrec.storage.snapshots import restore_snapshot, save_snapshot

    client = connect(redis_cluster, cluster=True)
    base = keys.tagged(f"snap-{uuid.uuid4().hex[:8]}")
    registry = Versions(client, base)
    settings = Settings(redis_cluster=True)
    source = RedisStore(client, registry.prefix("main"))
    engine = Engine(source, settings.engine_config())
    _learn(engine, source, settings, _records(200))
    header = save_snapshot(client, source.prefix, tmp_path / "main.snapshot")
    assert header["offsets"] == {"events:0": 199}

    registry.register(Version("copy", {}))
    copy = RedisStore(client, registry.prefix("copy"), catalog_prefix=base)
    restore_snapshot(client, tmp_path / "main.snapshot", copy.prefix)
    assert _close(_state(copy), _state(source))
    assert copy.user_factors(["u1"])["u1"].tolist() == source.user_factors(["u1"])["u1"].tolist()

    with pytest.raises(VersionError, match="layout"):
        restore_snapshot(client, tmp_path / "main.snapshot", "plain")
    removed = registry.delete("copy")
    assert removed > 2 * keys.SHARDS  # every group's keys, on every node
    assert _state(copy)["histories"] == {f"u{n}": [] for n in range(30)}
    assert _state(source)["events"] == 200
