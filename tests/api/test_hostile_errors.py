"""Errors that must be 4xx, whatever the input, against the real services: a lone
surrogate anywhere, the key checked before the body is parsed, every 400 naming the
body, and numbers so large they would break scores or splits."""

from __future__ import annotations

import json
import math

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from streamrec.settings import Settings
from tests.api.conftest import wait_for
from tests.factories import event

KEY = "hostile-errors-admin-key"
SURROGATE = "\\udfff"  # as a client writes it in JSON text: a lone low surrogate


def _raw(text: str) -> dict:
    return {"content": text.encode(), "headers": {"content-type": "application/json"}}


# (route, method, body as JSON text holding a lone surrogate, where the 422 points)
SURROGATES = [
    ("post", "/events", f'{{"user_id": "{SURROGATE}", "item_id": "tea", "event_type": "view"}}',
     ("body", "user_id")),
    ("post", "/events", f'[{{"user_id": "ann", "item_id": "tea", "event_type": "view", '
                        f'"context": {{"note": "a{SURROGATE}"}}}}]', ("body", 0, "context")),
    ("put", "/items/hostile-sur", f'{{"categories": ["tea{SURROGATE}"]}}',
     ("body", "categories", 0)),
    ("put", "/users/hostile-sur", f'{{"properties": {{"{SURROGATE}": 1}}}}',
     ("body", "properties")),
    ("put", "/admin/placements/hostile-sur",
     f'{{"variants": [{{"name": "A{SURROGATE}", "model": "popular"}}]}}',
     ("body", "variants", 0, "name")),
    ("put", "/admin/filters/hostile-sur",
     f'{{"expression": "EXCLUDE ItemID WHERE Items.categories IN (\\"{SURROGATE}\\")"}}',
     ("body", "expression")),
    ("put", "/admin/filters/hostile-sur", f'{{"expression{SURROGATE}": 1}}', ("body",)),
]


@pytest.mark.parametrize(("method", "url", "text", "where"), SURROGATES,
                         ids=[f"{m} {u} {w}" for m, u, _, w in SURROGATES])
def test_a_lone_surrogate_is_a_422_naming_the_field(client, method, url, text, where):
    response = client.request(method.upper(), url, **_raw(text))
    assert response.status_code == 422, response.text
    locations = [tuple(error["loc"]) for error in response.json()["detail"]]
    assert any(location[:len(where)] == where for location in locations), locations


@pytest.mark.parametrize("url", ["/recommendations?user_id=%ED%BF%BF",
                                 "/recommendations?user_id=ann&placement=%ED%BF%BF",
                                 "/items/%ED%BF%BF/similar", "/popular?category=%ED%BF%BF"])
def test_bytes_that_are_no_characters_in_a_url_never_break_the_answer(client, url):
    response = client.get(url)  # Starlette reads them as U+FFFD: a 422 or an answer
    assert response.status_code in (200, 422), response.text
    json.loads(response.text)


@pytest.fixture(scope="module")
def keyed(services):
    settings = Settings(kafka_bootstrap=services["bootstrap"], redis_url=services["redis_url"],
                        api_keys={KEY: "admin"})
    with TestClient(create_app(settings)) as client:
        assert wait_for(lambda: client.get("/readyz").status_code == 200, timeout=60)
        yield client


DEEP = "[" * 100_000 + "]" * 100_000
BROKEN = [("broken JSON", '{"user_id": "ann", "item_'), ("deep nesting", DEEP),
          ("nested 900 deep", "[" * 900 + "]" * 900),
          ("nested 500 deep in context", '{"user_id": "ann", "item_id": "t", "event_type": '
                                         '"view", "context": {"a": ' + "[" * 500 + "]" * 500
                                         + "}}"),
          ("lone surrogate", f'{{"user_id": "{SURROGATE}"}}'), ("not UTF-8", None),
          ("too large", " " * 2_000_000)]
BODY_ROUTES = [("post", "/events"), ("put", "/items/hostile-auth"),
               ("put", "/users/hostile-auth"), ("put", "/admin/placements/hostile-auth"),
               ("put", "/admin/filters/hostile-auth")]


def _broken(text: str | None, **headers: str) -> dict:
    body = b'{"user_id": "\xff\xfe"}' if text is None else text.encode()
    return {"content": body, "headers": {"content-type": "application/json", **headers}}


@pytest.mark.parametrize(("method", "url"), BODY_ROUTES, ids=[u for _, u in BODY_ROUTES])
def test_the_key_is_checked_before_the_body_is_read(keyed, method, url):
    for name, text in BROKEN:
        response = keyed.request(method.upper(), url, **_broken(text))
        assert response.status_code == 401, (name, response.status_code, response.text[:200])
        assert response.json()["detail"] == "X-API-Key: required"


@pytest.mark.parametrize(("method", "url"), BODY_ROUTES, ids=[u for _, u in BODY_ROUTES])
def test_with_a_key_every_400_and_413_detail_starts_with_body(keyed, method, url):
    statuses = {}
    for name, text in BROKEN:
        response = keyed.request(method.upper(), url, **_broken(text, **{"X-API-Key": KEY}))
        statuses[name] = response.status_code
        detail = response.json()["detail"]
        if response.status_code in (400, 413):
            assert detail.startswith("body"), (name, detail)
        else:
            assert response.status_code == 422, (name, response.text[:300])
            assert all(error["loc"][0] == "body" for error in detail), (name, detail)
    assert statuses["deep nesting"] == 400 and statuses["not UTF-8"] == 400
    assert statuses["too large"] == 413


BIG = 1e308


@pytest.mark.parametrize(("variant", "where"), [
    ({"name": "A", "model": "hybrid", "params": {"hybrid_mf": BIG}},
     ("body", "variants", 0, "params")),
    ({"name": "A", "model": "hybrid", "params": {"hybrid_popular": 1e6 + 1}},
     ("body", "variants", 0, "params")),
    ({"name": "A", "model": "popular", "weight": BIG}, ("body", "variants", 0, "weight")),
])
def test_numbers_beyond_their_bounds_are_refused(client, run, variant, where):
    response = client.put(f"/admin/placements/big-{run}", json={"variants": [
        variant, {"name": "B", "model": "popular"}]})
    assert response.status_code == 422, response.text
    locations = [tuple(error["loc"]) for error in response.json()["detail"]]
    assert any(location[:len(where)] == where for location in locations), locations


def test_the_largest_allowed_numbers_keep_scores_and_splits_sound(client, run):
    client.post("/events", json=[event(f"{run}-u{n}", f"{run}-i{m}")
                                 for n in range(3) for m in range(4)])
    assert wait_for(lambda: len(client.get("/popular", params={"k": 4}).json()["items"]) == 4)
    top = {name: 1e6 for name in ("hybrid_mf", "hybrid_cooccurrence", "hybrid_popular")}
    placement = f"top-{run}"
    assert client.put(f"/admin/placements/{placement}", json={"variants": [
        {"name": "A", "model": "hybrid", "params": top, "weight": 1e6},
        {"name": "B", "model": "hybrid", "weight": 1e6}]}).status_code == 200
    answers = [client.get("/recommendations", params={"user_id": f"{run}-u{n % 3}",
                                                      "placement": placement})
               for n in range(40)] + [
        client.get("/recommendations", params={"user_id": f"{run}-new{n}",
                                               "placement": placement}) for n in range(40)]
    lists = [answer.json() for answer in answers]
    scores = [item["score"] for entry in lists for item in entry["items"]]
    assert scores and all(isinstance(s, float) and math.isfinite(s) for s in scores)
    assert {entry["variant"] for entry in lists} == {"A", "B"}  # equal weights: both serve
