"""Apps cannot reach each other: every route of app B, tried with each of app A's keys
(and the default app's), is a 403, admin included; a platform key reaches both. Quotas
answer 429 with Retry-After, naming the quota, and leave other apps alone."""

from __future__ import annotations

import re
import time

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from api.main import create_app
from streamrec.apps import ROLES
from streamrec.wiring import Wiring
from tests.api.conftest import wait_for
from tests.api.test_apps import DEFAULT_ADMIN, PLATFORM, apps_settings, as_key, new_app

STREAMING = "/apps/{app}/metrics/stream"  # answers forever once allowed


@pytest.fixture(scope="module")
def api(services):
    with TestClient(create_app(apps_settings(services))) as client:
        assert wait_for(lambda: client.get("/readyz").status_code == 200, timeout=60)
        yield client


@pytest.fixture(scope="module")
def two_apps(api):
    return new_app(api), new_app(api)


def app_routes(api) -> list[tuple[str, str]]:
    """Every (method, path template) an app has: enumerated, so a new route is tried too."""
    found = sorted((method, route.path) for route in iter_route_contexts(api.app.routes)
                   if route.path and route.path.startswith(("/apps/{app}", "/admin/apps/{app}"))
                   for method in route.methods or ())
    assert len(found) >= 30, found
    return found


def call(api, method: str, template: str, app: str, key: str | None):
    path = re.sub(r"\{(\w+)\}", lambda m: app if m[1] == "app" else f"iso-{m[1]}", template)
    body = {} if method in ("POST", "PUT", "PATCH") else None
    return api.request(method, path, json=body, headers={} if key is None else as_key(key))


def test_every_route_of_an_app_refuses_every_key_of_another(api, two_apps):
    (a, a_keys), (b, _) = two_apps
    strangers = {f"{a}:{role}": a_keys[role] for role in ROLES}
    strangers["default:admin"] = DEFAULT_ADMIN  # a configured key: the default app's
    refused = []
    for method, template in app_routes(api):
        for who, key in strangers.items():
            answer = call(api, method, template, b, key)
            if answer.status_code != 403 or f"app {b!r}" not in answer.json()["detail"]:
                refused.append((method, template, who, answer.status_code, answer.text[:80]))
    assert not refused


def test_a_platform_key_reaches_every_app(api, two_apps):
    (a, _), (b, _) = two_apps
    for method, template in app_routes(api):
        if template == STREAMING or template.startswith("/admin/apps/{app}") and method in (
                "DELETE", "POST"):  # deleting the app or rotating its keys: test_apps.py
            continue
        for app in (a, b):
            answer = call(api, method, template, app, PLATFORM["X-API-Key"])
            assert answer.status_code not in (401, 403), (method, template, answer.text)
            if answer.status_code == 404:  # a resource of the app, not the app
                assert not answer.json()["detail"].startswith("app:"), answer.text


def test_an_app_key_reaches_its_own_app(api, two_apps):
    (a, a_keys), _ = two_apps
    assert api.get(f"/apps/{a}/popular", headers=as_key(a_keys["read"])).status_code == 200
    assert api.get(f"/admin/apps/{a}", headers=as_key(a_keys["admin"])).status_code == 200
    # ...and no bare route: those are the default app's.
    assert api.get("/popular", headers=as_key(a_keys["admin"])).status_code == 403


def _retry_after(answer) -> int:
    assert answer.status_code == 429, answer.text
    return int(answer.headers["Retry-After"])


def test_requests_over_the_quota_get_429_and_others_do_not(api):
    name, made = new_app(api, requests_per_second=2)
    other, other_keys = new_app(api)
    path, key = f"/apps/{name}/popular", as_key(made["read"])
    answers = [api.get(path, headers=key) for _ in range(4)]
    assert [a.status_code for a in answers[:2]] == [200, 200]
    refused = answers[-1]
    assert _retry_after(refused) >= 1
    assert "requests_per_second" in refused.json()["detail"] and name in refused.text
    assert all(api.get(f"/apps/{other}/popular", headers=as_key(other_keys["read"])
                       ).status_code == 200 for _ in range(10))
    time.sleep(0.6)  # 2 a second: a token is back
    assert api.get(path, headers=key).status_code == 200


def test_events_over_the_quota_get_429_naming_it(api):
    # Slow enough that however long Kafka takes to acknowledge the first batch (a topic
    # being made), its debt is not paid before the second: a batch above the bucket is
    # admitted once, when the bucket is full, and leaves it owing.
    name, made = new_app(api, events_per_second=0.1)
    key = as_key(made["write"])
    batch = [{"user_id": "ann", "item_id": f"i{n}", "event_type": "view"} for n in range(3)]
    assert api.post(f"/apps/{name}/events", json=batch, headers=key).status_code == 202
    refused = api.post(f"/apps/{name}/events", json=batch[0], headers=key)
    assert _retry_after(refused) >= 10 and "events_per_second" in refused.json()["detail"]


def test_a_full_catalog_takes_no_new_item(api, services):
    name, made = new_app(api, max_items=2)
    key = as_key(made["admin"])
    wiring = Wiring.connect(apps_settings(services))
    try:  # two items applied, as the worker applies them
        wiring.for_app(name).store().put_items([("a", {"item_id": "a"}),
                                                ("b", {"item_id": "b"})])
    finally:
        wiring.close()
    assert wait_for(lambda: api.put(f"/apps/{name}/items/c", json={}, headers=key
                                    ).status_code == 429, timeout=5)
    refused = api.put(f"/apps/{name}/items/c", json={}, headers=key)
    assert _retry_after(refused) >= 1 and "max_items" in refused.json()["detail"]
    assert api.put(f"/apps/{name}/items/a", json={"categories": ["x"]}, headers=key
                   ).status_code == 202  # replacing one is no new item


def test_quotas_change_over_http(api):
    name, made = new_app(api, requests_per_second=1)
    key = as_key(made["read"])
    api.get(f"/apps/{name}/popular", headers=key)
    assert api.get(f"/apps/{name}/popular", headers=key).status_code == 429
    lifted = api.patch(f"/admin/apps/{name}", json={"settings": {"requests_per_second": None}},
                       headers=PLATFORM)
    assert lifted.status_code == 200 and "requests_per_second" not in lifted.json()["settings"]
    assert all(api.get(f"/apps/{name}/popular", headers=key).status_code == 200
               for _ in range(5))


def test_a_request_over_the_quota_is_refused_before_its_body_is_read(api):
    name, made = new_app(api, requests_per_second=1)
    key = {**as_key(made["write"]), "Content-Type": "application/json"}
    assert api.post(f"/apps/{name}/events", content=b"{not json", headers=key
                    ).status_code == 422
    assert _retry_after(api.post(f"/apps/{name}/events", content=b"{not json", headers=key))
    missing = api.post("/apps/no-such-app/events", content=b"{not json", headers=PLATFORM)
    assert missing.status_code == 404


def test_an_apps_requests_are_timed_under_the_app_route(api, two_apps):
    (a, a_keys), _ = two_apps
    assert api.get(f"/apps/{a}/popular", headers=as_key(a_keys["read"])).status_code == 200
    text = api.get("/metrics").text
    assert 'route="/apps/{app}/popular"' in text and f"/apps/{a}/" not in text
