"""``streamrec apps`` and ``--app`` against real Kafka, Redis and a worker: an operator
creates an app with its own settings, imports into it (its event types, its catalog
keys), rebuilds and lists its versions, exports its lists and deletes it, and the default
app sees none of it."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import redis

from streamrec.apps import Apps, app_settings
from streamrec.settings import Settings
from streamrec.storage.model_versions import Versions
from streamrec.storage.state_store import RedisStore
from streamrec.version_status import VersionStatus, statuses
from tests.conftest import own_worker
from tests.factories import event
from tests.integration.test_import_export import streamrec, wait_for

pytestmark = pytest.mark.integration


def test_an_operator_runs_an_app_from_the_cli(services, worker_env, tmp_path):
    with own_worker(services, worker_env) as names:
        env = dict(worker_env, **{f"STREAMREC_{k.upper()}": v for k, v in names.items()})
        client = redis.Redis.from_url(services["redis_url"])
        registry = Apps(client, names["redis_prefix"])

        made = streamrec(env, "apps", "create", "shop", "--set", "decay_half_life_seconds=3600",
                         "--settings", '{"event_weights": {"view": 1, "buy": 4}}')
        assert made.returncode == 0, made.stderr
        assert "created app shop" in made.stdout and made.stdout.count("sr_shop_") == 3
        refused = streamrec(env, "apps", "create", "Shop")
        assert refused.returncode == 1 and "'Shop' must be 1-32 of a-z" in refused.stderr
        assert "--app: app 'nope' does not exist" in streamrec(
            env, "event-types", "--app", "nope").stderr
        types = streamrec(env, "event-types", "--app", "shop")
        assert types.stdout.split() == ["buy", "4", "view", "1"]

        events = tmp_path / "events.jsonl"
        events.write_bytes(b"\n".join(orjson.dumps(row) for row in (
            event("ann", "tea"), event("ann", "cup", "buy"), event("bob", "tea"),
            event("bob", "tea", "like"))))  # like: a type of default's, not of shop's
        imported = streamrec(env, "import", str(events), "--app", "shop")
        assert "4 rows read, 3 sent (acknowledged by Kafka), 1 rejected" in imported.stdout
        assert "event_type: 'like' is not one of ['buy', 'view']" in imported.stdout
        items = tmp_path / "items.csv"
        items.write_text("item_id,categories\ncup,kitchen\n")
        assert streamrec(env, "import", str(items), "--kind", "items", "--app", "shop"
                         ).returncode == 0

        shop = RedisStore(client, registry.prefix("shop"))
        assert wait_for(lambda: shop.events_applied() == 3 and shop.get_item("cup"))
        default = RedisStore(client, names["redis_prefix"])
        assert default.events_applied() == 0 and default.get_item("cup") is None

        rebuilt = streamrec(env, "rebuild", "--app", "shop", "--version", "v2")
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert "rebuild v2: 3 events applied, 0 rejected" in rebuilt.stdout
        assert "streamrec worker --app shop --version v2" in rebuilt.stdout
        listed = streamrec(env, "versions", "--app", "shop").stdout
        assert "v2" in listed and "ready" in listed
        assert "v2" not in streamrec(env, "versions").stdout
        # Served, shop's v2 is kept live by a worker the main worker starts for it, in a
        # consumer group of its own, on shop's records only.
        promoted = streamrec(env, "promote", "--app", "shop", "v2", "--force")
        assert "serving v2 (was main)" in promoted.stdout, promoted.stderr
        settings = app_settings(Settings(redis_url=services["redis_url"], kafka_bootstrap=
                                         services["bootstrap"], **names),
                                registry.require("shop"))
        versions = Versions(client, registry.prefix("shop"))

        def status() -> VersionStatus:
            return asyncio.run(statuses(settings, versions, {"v2": versions.get("v2")}))["v2"]

        assert wait_for(lambda: (found := status()).live and found.lag == 0, timeout=90)
        assert status().workers == 1
        later = tmp_path / "later.jsonl"
        later.write_bytes(orjson.dumps(event("cat", "tea")))
        assert streamrec(env, "import", str(later), "--app", "shop").returncode == 0
        v2 = RedisStore(client, versions.prefix("v2"), registry.prefix("shop"))
        assert wait_for(lambda: v2.events_applied() == 4)

        users = tmp_path / "users.txt"
        users.write_text("bob\n")
        out = tmp_path / "lists.jsonl"
        exported = streamrec(env, "export", "--app", "shop", "--users", str(users),
                             "--model", "cooccurrence", "--output", str(out))
        assert exported.returncode == 0, exported.stderr
        assert [item["item_id"] for item in orjson.loads(out.read_bytes())["items"]] == ["cup"]

        apps = streamrec(env, "apps").stdout
        assert "shop" in apps and "keys admin,read,write" in apps and "3600" in apps
        deleted = streamrec(env, "apps", "delete", "shop", "--yes")
        assert "deleted app shop: 3 key(s) revoked" in deleted.stdout
        assert list(registry.scan_state("shop")) == []  # its version v2 too
        assert "shop" not in streamrec(env, "apps").stdout
        client.close()
