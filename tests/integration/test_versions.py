"""Model versions against real Kafka, Redis, worker and API: a rebuild with other
hyperparameters while the main version serves, its own worker carrying it on, promote and
rollback while requests keep succeeding, snapshots, and deletion."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from streamrec.settings import Settings
from streamrec.storage import keys
from streamrec.storage.model_versions import Version, VersionError, Versions
from streamrec.storage.snapshots import restore_snapshot, save_snapshot
from streamrec.storage.state_store import RedisStore
from streams.rebuild import rebuild
from tests.api.conftest import wait_for
from tests.factories import produce_views


@pytest.fixture
def setup(services, isolated_worker):
    names = isolated_worker
    settings = Settings(kafka_bootstrap=services["bootstrap"], redis_url=services["redis_url"],
                        **names)
    client = redis.Redis.from_url(services["redis_url"], protocol=2)
    return settings, client, names


def _dimension(store: RedisStore) -> int:
    item = store.sample_items(1)[0]
    return len(store.item_factors([item])[item])


def test_rebuild_promote_and_rollback_while_requests_succeed(setup, worker_env, services,
                                                             tmp_path):
    settings, client, names = setup
    run, topic = names["redis_prefix"], names["events_topic"]
    main_store = RedisStore(client, run)
    asyncio.run(produce_views(services["bootstrap"], topic, run, 0, 1500))
    assert wait_for(lambda: main_store.events_applied() == 1500, timeout=90)

    with TestClient(create_app(settings)) as api:
        assert wait_for(lambda: api.get("/readyz").status_code == 200, timeout=60)
        statuses: list[int] = []
        stop = threading.Event()

        def keep_asking() -> None:
            n = 0
            while not stop.is_set():
                user = f"{run}-u{n % 50}"
                statuses.append(api.get("/recommendations",
                                        params={"user_id": user, "model": "mf"}).status_code)
                n += 1
                time.sleep(0.01)

        asker = threading.Thread(target=keep_asking)
        asker.start()
        try:
            report = asyncio.run(rebuild(settings, "v2", {"mf_dim": 8, "hybrid_popular": 0.5}))
            assert (report.events, report.rejected, report.skipped) == (1500, 0, 0)
            registry = Versions(client, run)
            assert registry.get("v2").status == "ready"
            v2 = RedisStore(client, f"{run}.v2", catalog_prefix=run)
            assert v2.events_applied() == 1500
            assert (_dimension(main_store), _dimension(v2)) == (33, 9)  # dim + bias slot
            # The same users, the same history: the count-like state matches exactly.
            assert v2.history(f"{run}-u7", 200) == main_store.history(f"{run}-u7", 200)

            # Its own worker carries it on from the rebuild's offsets: nothing twice.
            env = dict(worker_env, **{f"STREAMREC_{k.upper()}": v for k, v in names.items()})
            with open(tmp_path / "worker-v2.log", "wb") as log:
                worker = subprocess.Popen(
                    [sys.executable, "-m", "streamrec.cli", "worker", "--version", "v2"],
                    env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                asyncio.run(produce_views(services["bootstrap"], topic, run, 1500, 500))
                assert wait_for(lambda: v2.events_applied() == 2000, timeout=90), \
                    (tmp_path / "worker-v2.log").read_text()[-3000:]
                assert wait_for(lambda: main_store.events_applied() == 2000, timeout=60)
                time.sleep(2)
                assert v2.events_applied() == 2000
            finally:
                worker.terminate()
                worker.wait(30)

            # Listed with whether a worker keeps each live and how far behind it is.
            def listed_versions() -> dict:
                return {v["name"]: v for v in api.get("/admin/versions").json()}

            assert wait_for(lambda: not listed_versions()["v2"]["live"], timeout=60)
            both = listed_versions()
            assert (both["v2"]["lag"], both["v2"]["events_applied"]) == (0, 2000)
            assert both["main"]["serving"] and both["main"]["live"]
            assert both["v2"]["settings"] == {"mf_dim": 8, "hybrid_popular": 0.5}
            asyncio.run(produce_views(services["bootstrap"], topic, run, 2000, 10))
            assert wait_for(lambda: main_store.events_applied() == 2010, timeout=60)
            assert listed_versions()["v2"]["lag"] == 10

            def snapshot_names(version: str) -> bool:
                return api.get("/metrics/snapshot").json().get("serving_version") == version

            before = api.get("/recommendations", params={"user_id": f"{run}-u3"}).json()
            assert before["version"] == "main"
            assert wait_for(lambda: snapshot_names("main"), timeout=10)
            assert registry.promote("v2", "test") == "main"
            assert wait_for(lambda: api.app.state.versions.current == "v2", timeout=5)
            listed = api.get("/recommendations", params={"user_id": f"{run}-u3",
                                                         "model": "mf"}).json()
            assert listed["model"] == "mf" and len(listed["items"]) == 10
            assert listed["version"] == "v2"  # the response names the version that ranked it
            assert wait_for(lambda: snapshot_names("v2"), timeout=10)
            with pytest.raises(VersionError, match="serving"):
                registry.delete("v2")

            assert registry.rollback("test") == "main"
            assert wait_for(lambda: api.app.state.versions.current == "main", timeout=5)
            # The worker the main worker ran for v2 while it served has stopped.
            assert wait_for(lambda: not listed_versions()["v2"]["live"], timeout=60)
            with pytest.raises(VersionError, match="nothing to roll back"):
                registry.rollback("test")
            assert [e["action"] for e in registry.log()] == ["rollback", "promote"]
        finally:
            stop.set()
            asker.join()
    assert len(statuses) > 50 and set(statuses) == {200}, set(statuses)

    removed = registry.delete("v2")
    assert removed > 0 and registry.get("v2") is None
    assert not list(client.scan_iter(match=keys.pattern(f"{run}.v2", keys.HISTORY)))
    assert main_store.events_applied() == 2010  # the main state untouched


def test_snapshot_restore_and_rebuild_from_it(setup, services, tmp_path):
    settings, client, names = setup
    run, topic = names["redis_prefix"], names["events_topic"]
    main_store = RedisStore(client, run)
    asyncio.run(produce_views(services["bootstrap"], topic, run, 0, 800))
    assert wait_for(lambda: main_store.events_applied() == 800, timeout=90)

    path = tmp_path / "main.snapshot"
    header = save_snapshot(client, run, path)
    assert header["keys"] > 50 and sum(header["offsets"].values()) > 0
    restore_snapshot(client, path, f"{run}.copy")
    copy = RedisStore(client, f"{run}.copy", catalog_prefix=run)
    assert copy.events_applied() == 800
    assert copy.history(f"{run}-u1", 200) == main_store.history(f"{run}-u1", 200)
    vector = main_store.user_factors([f"{run}-u1"])[f"{run}-u1"]
    assert np.array_equal(copy.user_factors([f"{run}-u1"])[f"{run}-u1"], vector)

    # A rebuild from the snapshot replays only what came after it.
    asyncio.run(produce_views(services["bootstrap"], topic, run, 800, 200))
    report = asyncio.run(rebuild(settings, "fromsnap", {}, snapshot=path))
    assert (report.events, report.skipped) == (200, 800)
    rebuilt = RedisStore(client, f"{run}.fromsnap", catalog_prefix=run)
    assert rebuilt.events_applied() == 1000
    Versions(client, run).delete("fromsnap")


def test_version_rules(setup):
    settings, client, names = setup
    registry = Versions(client, names["redis_prefix"])
    with pytest.raises(VersionError, match="must be 1-20"):
        registry.register(Version("Bad Name"))
    with pytest.raises(VersionError, match="does not exist"):
        registry.promote("ghost")
    registry.register(Version("wip", status="building"))
    with pytest.raises(VersionError, match="building, not ready"):
        registry.promote("wip")
    with pytest.raises(VersionError, match="base state"):
        registry.delete("main")
    registry.delete("wip")
