"""The shared event types in real Redis: seeded once from the settings, changed through
the CLI, read by import as by the API and the worker."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
import redis

from streamrec.data.importer import shared_event_types
from streamrec.settings import Settings
from streamrec.storage.event_weights import EventTypeError, RedisEventWeights

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix() -> str:
    return f"types-{uuid.uuid4().hex[:8]}"


def test_seeded_once_then_changed_only_on_purpose(services, prefix):
    client = redis.Redis.from_url(services["redis_url"])
    shared = RedisEventWeights(client, prefix)
    assert shared.seed({"view": 1.0, "click": 2.0}) == {"view": 1.0, "click": 2.0}
    # Another role with other settings finds the table and takes it as it is.
    assert shared.seed({"view": 5.0}) == {"view": 1.0, "click": 2.0}
    assert shared.put("like", 3.0) == {"view": 1.0, "click": 2.0, "like": 3.0}
    assert shared.remove("nope") is None
    assert shared.remove("click") == {"view": 1.0, "like": 3.0}
    with pytest.raises(EventTypeError, match="weight"):
        shared.put("bad", float("nan"))
    shared.remove("like")
    with pytest.raises(EventTypeError, match="only event type"):
        shared.remove("view")
    assert shared.read() == {"view": 1.0}
    client.close()


def test_the_cli_changes_what_import_accepts(services, worker_env, prefix):
    env = dict(worker_env, STREAMREC_REDIS_PREFIX=prefix)

    def streamrec(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "streamrec.cli", "event-types", *args],
                              env=env, capture_output=True, text=True, timeout=60)

    settings = Settings(redis_url=services["redis_url"], redis_prefix=prefix)
    assert "like" not in shared_event_types(settings)
    added = streamrec("set", "like", "3")
    assert added.returncode == 0, added.stderr
    assert "like" in added.stdout and "purchase" in added.stdout  # seeded, then added
    assert "like" in shared_event_types(settings)
    assert "like" in streamrec().stdout
    assert streamrec("set", "bad name", "1").returncode == 2
    assert streamrec("set", "like", "-1").returncode == 2
    missing = streamrec("remove", "nope")
    assert missing.returncode == 1 and "'nope' is not an event type" in missing.stderr
    assert streamrec("remove", "like").returncode == 0
    assert "like" not in shared_event_types(settings)
