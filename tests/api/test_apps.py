"""Apps over HTTP against the real Kafka and Redis: create one, use its keys on its
routes, change its settings, rotate its keys, delete it and find nothing of it left."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi.testclient import TestClient

from api.main import create_app
from streamrec.apps import ROLES, app_prefix
from streamrec.settings import Settings
from streamrec.storage import keys
from streamrec.wiring import Wiring
from tests.api.conftest import wait_for

PLATFORM_KEY = "platform-key-" + "p" * 16
DEFAULT_ADMIN = "default-admin-" + "a" * 16
KEY_BOUND = 0.5  # app_key_cache_seconds here: a rotated key is refused within it


def apps_settings(services, **overrides) -> Settings:
    return Settings(kafka_bootstrap=services["bootstrap"], redis_url=services["redis_url"],
                    api_keys={PLATFORM_KEY: "platform", DEFAULT_ADMIN: "admin"},
                    app_refresh_seconds=0.2, app_key_cache_seconds=KEY_BOUND, **overrides)


@pytest.fixture(scope="module")
def api(services):
    with TestClient(create_app(apps_settings(services))) as client:
        assert wait_for(lambda: client.get("/readyz").status_code == 200, timeout=60)
        yield client


def as_key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


PLATFORM = as_key(PLATFORM_KEY)


def new_app(api, **settings) -> tuple[str, dict[str, str]]:
    """A fresh app (the session's Redis is shared by every test) and its keys."""
    name = f"shop-{uuid.uuid4().hex[:8]}"
    answer = api.post("/admin/apps", json={"name": name, "settings": settings},
                      headers=PLATFORM)
    assert answer.status_code == 201, answer.text
    return name, answer.json()["api_keys"]


def test_an_app_is_made_with_one_key_per_role_and_serves_at_once(api):
    started = time.perf_counter()
    name, made = new_app(api, event_weights={"view": 1, "like": 3}, default_model="popular")
    assert set(made) == set(ROLES)
    popular = api.get(f"/apps/{name}/popular", headers=as_key(made["read"]))
    listed = api.get(f"/apps/{name}/recommendations", params={"user_id": "ann"},
                     headers=as_key(made["read"]))
    print(f"\nPOST /admin/apps to a first list: {time.perf_counter() - started:.3f} s")
    assert popular.status_code == 200 and listed.status_code == 200, listed.text
    assert listed.json()["model"] == "popular"
    # Its event types are its own, from its event_weights.
    types = api.get(f"/apps/{name}/admin/event-types", headers=as_key(made["admin"]))
    assert types.json() == {"view": 1.0, "like": 3.0}
    accepted = api.post(f"/apps/{name}/events", headers=as_key(made["write"]),
                        json={"user_id": "ann", "item_id": "tea", "event_type": "like"})
    assert accepted.status_code == 202, accepted.text
    # A type of the deployment's table that the app does not have is refused, naming it.
    refused = api.post(f"/apps/{name}/events", headers=as_key(made["write"]),
                       json={"user_id": "ann", "item_id": "tea", "event_type": "purchase"})
    assert refused.status_code == 422 and "purchase" in refused.text
    assert api.put(f"/apps/{name}/items/tea", json={"categories": ["drinks"]},
                   headers=as_key(made["admin"])).status_code == 202
    assert api.put(f"/apps/{name}/admin/placements/home", headers=as_key(made["admin"]),
                   json={"variants": [{"name": "A", "model": "popular"}]}).status_code == 200
    placements = api.get(f"/apps/{name}/admin/placements", headers=as_key(made["admin"]))
    assert list(placements.json()) == ["home"]
    # The default app's placements are another app's: they do not show it.
    default = api.get("/admin/placements", headers=as_key(DEFAULT_ADMIN)).json()
    assert "home" not in default or default["home"] != placements.json()["home"]


def test_listing_and_reading_apps(api):
    name, made = new_app(api, requests_per_second=50)
    listed = api.get("/admin/apps", headers=PLATFORM).json()
    assert listed[0]["name"] == "default" and name in {app["name"] for app in listed}
    own = api.get(f"/admin/apps/{name}", headers=as_key(made["admin"]))
    assert own.status_code == 200
    described = own.json()
    assert described["settings"] == {"requests_per_second": 50}
    assert set(described["keys"]) == set(ROLES)
    assert made["admin"] not in own.text  # keys are shown once, when made
    # Only the platform lists, creates and deletes apps.
    for call in (lambda h: api.get("/admin/apps", headers=h),
                 lambda h: api.post("/admin/apps", json={"name": "x-" + name}, headers=h),
                 lambda h: api.delete(f"/admin/apps/{name}", headers=h)):
        assert call(as_key(made["admin"])).status_code == 403
        assert call(as_key(DEFAULT_ADMIN)).status_code == 403


def test_bad_names_and_settings_are_refused_naming_what(api):
    wrong = api.post("/admin/apps", json={"name": "Shop"}, headers=PLATFORM)
    assert wrong.status_code == 422 and "'Shop'" in wrong.json()["detail"]
    wrong = api.post("/admin/apps", json={"name": "ok-name", "settings": {"half_life": 3}},
                     headers=PLATFORM)
    assert wrong.status_code == 422 and "settings.half_life" in wrong.json()["detail"]
    assert api.post("/admin/apps", json={"name": "default"}, headers=PLATFORM
                    ).status_code == 422
    name, _ = new_app(api)
    again = api.post("/admin/apps", json={"name": name}, headers=PLATFORM)
    assert again.status_code == 409 and "exists already" in again.json()["detail"]


def test_an_unknown_app_is_a_404_naming_it(api):
    missing = api.get("/apps/no-such-app/popular", headers=PLATFORM)
    assert missing.status_code == 404 and "'no-such-app'" in missing.json()["detail"]
    assert api.get("/admin/apps/no-such-app", headers=PLATFORM).status_code == 404
    assert api.get("/apps/Not_An_App/popular", headers=PLATFORM).status_code == 422


def test_default_is_the_bare_routes_app(api):
    bare = api.get("/admin/event-types", headers=as_key(DEFAULT_ADMIN)).json()
    prefixed = api.get("/apps/default/admin/event-types", headers=as_key(DEFAULT_ADMIN))
    assert prefixed.status_code == 200 and prefixed.json() == bare
    refused = api.patch("/admin/apps/default", json={"settings": {"default_model": "mf"}},
                        headers=PLATFORM)
    assert refused.status_code == 422 and "settings.default_model" in refused.text
    assert api.delete("/admin/apps/default", headers=PLATFORM).status_code == 422


def test_changed_settings_apply(api):
    name, made = new_app(api, decay_half_life_seconds=3600)
    assert api.get(f"/apps/{name}/popular", headers=as_key(made["read"])).status_code == 200
    contexts = api.app.state.apps
    assert contexts.contexts[name].settings.decay_half_life_seconds == 3600
    wrong = api.patch(f"/admin/apps/{name}", json={"settings": {"decay_half_life_seconds": -1}},
                      headers=PLATFORM)
    assert wrong.status_code == 422 and "settings.decay_half_life_seconds" in wrong.text
    changed = api.patch(f"/admin/apps/{name}", headers=PLATFORM, json={"settings": {
        "decay_half_life_seconds": 60, "event_weights": {"purchase": 9}}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["settings"]["decay_half_life_seconds"] == 60
    assert api.get(f"/apps/{name}/popular", headers=as_key(made["read"])).status_code == 200
    assert contexts.contexts[name].settings.decay_half_life_seconds == 60
    types = api.get(f"/apps/{name}/admin/event-types", headers=as_key(made["admin"])).json()
    assert types["purchase"] == 9.0


def test_rotated_keys_stop_working_within_the_bound(api, services):
    name, made = new_app(api)
    path = f"/apps/{name}/popular"
    with TestClient(create_app(apps_settings(services))) as other:  # a second API process
        assert other.get(path, headers=as_key(made["read"])).status_code == 200  # cached
        rotated = api.post(f"/admin/apps/{name}/keys", json={"role": "read"},
                           headers=as_key(made["admin"]))  # an app's admin rotates its own
        assert rotated.status_code == 200, rotated.text
        fresh = rotated.json()["api_keys"]
        assert set(fresh) == {"read"} and fresh["read"] != made["read"]
        rotated_at = time.monotonic()
        assert api.get(path, headers=as_key(made["read"])).status_code == 401  # this process
        assert api.get(path, headers=as_key(fresh["read"])).status_code == 200
        assert wait_for(lambda: other.get(path, headers=as_key(made["read"])).status_code
                        == 401, timeout=5)
        assert time.monotonic() - rotated_at <= KEY_BOUND + 0.3
        assert other.get(path, headers=as_key(made["admin"])).status_code == 200  # kept
        everything = api.post(f"/admin/apps/{name}/keys", json={}, headers=PLATFORM).json()
        assert set(everything["api_keys"]) == set(ROLES)
        assert api.get(path, headers=as_key(made["admin"])).status_code == 401
        wrong = api.post(f"/admin/apps/{name}/keys", json={"role": "owner"}, headers=PLATFORM)
        assert wrong.status_code == 422 and "'owner'" in wrong.text


def _app_keys(client, prefix: str) -> list[bytes]:
    """Every key under the app's prefix and its versions' (``sr@shop:*``, ``sr@shop.v2:*``)."""
    return sorted({key for match in (":*", ".*") for key in client.scan_iter(
        match=keys.escape(prefix) + match, count=1000)})


def new_app_named(api, name: str) -> dict[str, str]:
    answer = api.post("/admin/apps", json={"name": name}, headers=PLATFORM)
    assert answer.status_code == 201, answer.text
    return answer.json()["api_keys"]


def test_delete_removes_every_key_of_the_app(api, services):
    name, made = new_app(api, event_weights={"view": 1})
    admin = as_key(made["admin"])
    assert api.put(f"/apps/{name}/admin/placements/home", headers=admin,
                   json={"variants": [{"name": "A", "model": "popular"}]}).status_code == 200
    assert api.put(f"/apps/{name}/admin/filters/cheap", headers=admin, json={
        "expression": "INCLUDE ItemID WHERE Items.price <= $MAX"}).status_code == 200
    wiring = Wiring.connect(apps_settings(services))
    try:
        # State the worker would write: a catalog document and a user's history.
        store = wiring.for_app(name).store()
        store.put_items([("tea", {"item_id": "tea", "categories": ["drinks"]})])
        prefix = app_prefix(wiring.settings.redis_prefix, name)
        before = _app_keys(wiring.client, prefix)
        assert len(before) >= 4, before
        other = name + "-2"  # a name that starts the same: its state must survive
        new_app_named(api, other)
        assert api.put(f"/apps/{other}/admin/placements/home", headers=PLATFORM,
                       json={"variants": [{"name": "A", "model": "popular"}]}
                       ).status_code == 200
        others = _app_keys(wiring.client, app_prefix(wiring.settings.redis_prefix, other))
        deleted = api.delete(f"/admin/apps/{name}", headers=PLATFORM)
        assert deleted.status_code == 200, deleted.text
        answer = deleted.json()
        assert answer["redis_keys_removed"] == len(before)
        assert answer["api_keys_revoked"] == len(ROLES)
        assert "retention" in answer["kafka_records"]
        assert _app_keys(wiring.client, prefix) == []
        assert not wiring.apps().key_roles(name)
        assert api.get(f"/apps/{name}/popular", headers=admin).status_code == 401
        assert api.get(f"/apps/{name}/popular", headers=PLATFORM).status_code == 404
        assert api.get(f"/apps/{other}/popular", headers=PLATFORM).status_code == 200
        assert _app_keys(wiring.client, app_prefix(wiring.settings.redis_prefix, other)
                         ) == others
        # The second sweep finds nothing more (no process serves it any longer).
        time.sleep(answer["second_sweep_seconds"] + 0.5)
        assert _app_keys(wiring.client, prefix) == []
    finally:
        wiring.close()


async def _records_after(bootstrap: str, topic: str, offsets: dict, want) -> list:
    """Records of ``topic`` from ``offsets`` on until ``want(records)`` holds (10 s)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        for partition, offset in offsets.items():
            consumer.seek(partition, offset)
        found: list = []
        deadline = time.monotonic() + 10
        while not want(found) and time.monotonic() < deadline:
            for rows in (await consumer.getmany(timeout_ms=500)).values():
                found += rows
        return found
    finally:
        await consumer.stop()


async def _ends(bootstrap: str, topic: str) -> dict:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        # As api/metrics_hub.py reads them: topics() does not fill the consumer's metadata.
        await consumer._client.force_metadata_update()  # noqa: SLF001
        partitions = [TopicPartition(topic, p)
                      for p in consumer.partitions_for_topic(topic) or ()]
        assert partitions, f"no partitions of {topic}"
        return await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()


def test_records_of_an_app_carry_its_name(api, services):
    name, made = new_app(api)
    settings = api.app.state.settings
    event_id = f"ev-{uuid.uuid4().hex}"
    # Once before reading where the topics end: each exists from its first record on.
    api.post(f"/apps/{name}/events", headers=as_key(made["write"]), json={
        "user_id": "ann", "item_id": "tea", "event_type": "view", "event_id": event_id})
    api.put(f"/apps/{name}/items/tea", json={}, headers=as_key(made["admin"]))
    events = asyncio.run(_ends(services["bootstrap"], settings.events_topic))
    items = asyncio.run(_ends(services["bootstrap"], settings.items_topic))
    assert api.post(f"/apps/{name}/events", headers=as_key(made["write"]), json={
        "user_id": "ann", "item_id": "tea", "event_type": "view", "event_id": event_id}
                    ).status_code == 202
    assert api.put(f"/apps/{name}/items/tea", json={}, headers=as_key(made["admin"])
                   ).status_code == 202

    def event_found(rows) -> bool:
        return any(event_id.encode() in (row.value or b"") for row in rows)

    rows = asyncio.run(_records_after(services["bootstrap"], settings.events_topic, events,
                                      event_found))
    sent = [row for row in rows if event_id.encode() in (row.value or b"")]
    assert sent and all(dict(row.headers)["app"] == name.encode() for row in sent)
    key = f"{name}/tea".encode()
    rows = asyncio.run(_records_after(services["bootstrap"], settings.items_topic, items,
                                      lambda rows: any(row.key == key for row in rows)))
    item = [row for row in rows if row.key == key]
    assert item and dict(item[0].headers)["app"] == name.encode()


def test_a_deleted_app_leaves_every_process_within_the_refresh(api, services):
    name, made = new_app(api)
    path = f"/apps/{name}/popular"
    with TestClient(create_app(apps_settings(services))) as other:
        assert other.get(path, headers=PLATFORM).status_code == 200
        context = other.app.state.apps.contexts[name]
        assert api.delete(f"/admin/apps/{name}", headers=PLATFORM).status_code == 200
        bound = other.app.state.settings.app_refresh_seconds
        deleted_at = time.monotonic()
        assert wait_for(lambda: name not in other.app.state.apps.contexts, timeout=5)
        assert time.monotonic() - deleted_at <= bound + 0.5
        assert context.closed
        assert other.get(path, headers=PLATFORM).status_code == 404
        assert wait_for(lambda: other.get(path, headers=as_key(made["read"])).status_code
                        == 401, timeout=5)


def test_an_apps_metrics_are_its_own_and_collected_once_read(api):
    name, made = new_app(api)
    admin = as_key(made["admin"])
    assert api.put(f"/apps/{name}/admin/placements/shelf", headers=admin,
                   json={"variants": [{"name": "A", "model": "popular"}]}).status_code == 200
    assert api.get(f"/apps/{name}/recommendations", params={"user_id": "ann",
                   "placement": "shelf"}, headers=as_key(made["read"])).status_code == 200
    context = api.app.state.apps.contexts[name]
    assert context._collecting is None  # serving lists costs no metrics round
    assert wait_for(lambda: api.get(f"/apps/{name}/metrics/snapshot", headers=admin
                                    ).json().get("placements"), timeout=10) == {
        "shelf": api.get(f"/apps/{name}/metrics/snapshot", headers=admin
                         ).json()["placements"]["shelf"]}
    assert "streamrec_recommendations_served" in api.get(f"/apps/{name}/metrics",
                                                         headers=admin).text
