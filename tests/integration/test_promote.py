"""Promote only what is kept live, against real Kafka, Redis and workers: a version's lag
and liveness are listed; promote refuses a version no worker consumes for (``--force``
promotes anyway and says what it costs); promoting the serving version changes nothing,
and rollback goes back to what served before the last real change."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time

import redis

from streamrec.settings import Settings
from streamrec.storage.model_versions import Versions
from streamrec.storage.state_store import RedisStore
from streamrec.version_status import VersionStatus, statuses
from streams.rebuild import rebuild
from streams.serving_follower import FOLLOW_SECONDS
from tests.api.conftest import wait_for
from tests.factories import produce_views


@contextlib.contextmanager
def _version_worker(env, name: str, log_path):
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamrec.cli", "worker", "--version", name],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(30)


def test_promote_refuses_what_no_worker_keeps_live(isolated_worker, services, worker_env,
                                                   tmp_path):
    names = isolated_worker
    run, topic = names["redis_prefix"], names["events_topic"]
    settings = Settings(kafka_bootstrap=services["bootstrap"], redis_url=services["redis_url"],
                        **names)
    env = dict(worker_env, **{f"STREAMREC_{k.upper()}": v for k, v in names.items()})
    client = redis.Redis.from_url(services["redis_url"])
    registry = Versions(client, run)
    main_store = RedisStore(client, run)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "streamrec.cli", *args], env=env,
                              capture_output=True, text=True, timeout=120)

    def status(name: str) -> VersionStatus:
        return asyncio.run(statuses(settings, registry, {name: registry.get(name)}))[name]

    asyncio.run(produce_views(services["bootstrap"], topic, run, 0, 300))
    assert wait_for(lambda: main_store.events_applied() == 300, timeout=90)
    asyncio.run(rebuild(settings, "v2", {"mf_dim": 8}))
    asyncio.run(produce_views(services["bootstrap"], topic, run, 300, 200))
    assert wait_for(lambda: main_store.events_applied() == 500, timeout=90)

    # Listed with its lag: 200 events behind, no worker.
    assert status("v2") == VersionStatus("v2", False, 0, 200)
    assert wait_for(lambda: status("main") == VersionStatus("main", True, 1, 0), timeout=30)
    listed = cli("versions")
    assert listed.returncode == 0, listed.stderr
    line = next(row for row in listed.stdout.splitlines() if " v2 " in row)
    assert "NOT LIVE, 200 behind" in line
    assert "live (1 worker), 0 behind" in next(
        row for row in listed.stdout.splitlines() if row.startswith("* main"))

    refused = cli("promote", "v2")
    assert refused.returncode == 1
    assert "no worker consumes for version v2" in refused.stderr
    assert "streamrec worker --version v2" in refused.stderr and "--force" in refused.stderr
    assert registry.serving() == "main" and registry.log() == []

    with _version_worker(env, "v2", tmp_path / "worker-v2.log"):
        assert wait_for(lambda: (s := status("v2")).live and s.lag == 0, timeout=90), \
            (tmp_path / "worker-v2.log").read_text()[-3000:]
        promoted = cli("promote", "v2")
        assert promoted.returncode == 0, promoted.stderr
        assert "serving v2 (was main)" in promoted.stdout and not promoted.stderr.strip()

        # Promoting what serves changes nothing, and rollback still goes back to main.
        again = cli("promote", "v2")
        assert again.returncode == 0 and "serving already: nothing changed" in again.stdout
        assert registry.promote("v2") is None
        assert [entry["action"] for entry in registry.log()] == ["promote"]
        assert cli("rollback").stdout.strip() == "serving main again"

    # Its worker left the group (the main worker stopped the one it ran for v2 too):
    # promote is refused again; --force says what it costs. While v2 served, the main
    # worker's follower (a round every FOLLOW_SECONDS) may have started a worker for it
    # that joins the group later: wait for a round after the rollback, then until each
    # one it started is stopped, and only then for the group to be empty.
    time.sleep(FOLLOW_SECONDS + 1)
    main_log = services["dir"] / f"worker-{run}.log"

    def follower_stopped_what_it_started() -> bool:
        text = main_log.read_text(errors="replace")
        return (text.count("model version v2 of app")
                == text.count("model version v2 no longer serves"))

    assert wait_for(follower_stopped_what_it_started, timeout=60), \
        main_log.read_text(errors="replace")[-3000:]
    assert wait_for(lambda: not status("v2").live, timeout=60)
    assert cli("promote", "v2").returncode == 1
    forced = cli("promote", "v2", "--force")
    assert forced.returncode == 0 and "serving v2 (was main)" in forced.stdout
    assert "warning: promoted with --force" in forced.stderr
    assert "not learned" in forced.stderr

    # The serving version is kept live: the main worker starts a worker for it, which
    # learns what came after.
    asyncio.run(produce_views(services["bootstrap"], topic, run, 500, 100))
    assert wait_for(lambda: (s := status("v2")).live and s.lag == 0, timeout=120)
    assert RedisStore(client, f"{run}.v2", catalog_prefix=run).events_applied() == 600
    assert registry.rollback() == "main"
    assert wait_for(lambda: not status("v2").live, timeout=60)  # no longer serving
    log = [entry["action"] for entry in registry.log()]
    assert log == ["rollback", "promote", "rollback", "promote"]
