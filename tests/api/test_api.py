"""POST /events through Kafka and the worker, read back through every GET endpoint."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from streamrec.local.services import free_port
from streamrec.settings import Settings
from tests.api.conftest import wait_for


def _event(user: str, item: str, kind: str = "view", **extra) -> dict:
    return {"user_id": user, "item_id": item, "event_type": kind, **extra}


def _recommended(client, user: str, model: str | None = None) -> dict:
    query = {"user_id": user, "k": 10} | ({"model": model} if model else {})
    response = client.get("/recommendations", params=query)
    assert response.status_code == 200, response.text
    return response.json()


def test_events_posted_change_recommendations_similar_and_popular(client, run):
    tea, cup, pot = f"{run}-tea", f"{run}-cup", f"{run}-pot"
    batch = [_event(f"{run}-ann", tea), _event(f"{run}-ann", cup, "purchase"),
             _event(f"{run}-bob", tea), _event(f"{run}-bob", pot, "click")]
    response = client.post("/events", json=batch)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 4 and len(set(response.json()["event_ids"])) == 4

    carol = f"{run}-carol"
    assert _recommended(client, carol)["model"] == "popular"
    sent = time.monotonic()
    assert client.post("/events", json=_event(carol, tea)).status_code == 202
    result = wait_for(lambda: (r := _recommended(client, carol, "cooccurrence"))["model"]
                      == "cooccurrence" and r)
    print(f"POST /events -> visible in GET /recommendations: "
          f"{(time.monotonic() - sent) * 1000:.0f} ms")
    items = [item["item_id"] for item in result["items"]]
    assert set(items[:2]) == {cup, pot}  # tea's neighbours, the seen item excluded
    assert tea not in items
    assert result["recommendation_id"] and result["user_id"] == carol

    similar = client.get(f"/items/{tea}/similar", params={"k": 5}).json()["items"]
    assert {item["item_id"] for item in similar} == {cup, pot}
    popular = [item["item_id"] for item in client.get("/popular", params={"k": 50}).json()["items"]]
    assert tea in popular


@pytest.mark.parametrize("model", ["popular", "cooccurrence", "mf", "hybrid"])
def test_every_named_model_answers_and_excludes_seen_items(client, run, model):
    user = f"{run}-dora"
    seen = [f"{run}-i{n}" for n in range(3)]
    assert client.post("/events", json=[_event(user, item) for item in seen]).status_code == 202
    wait_for(lambda: _recommended(client, user, "cooccurrence")["model"] != "popular"
             or _recommended(client, user, "mf")["model"] == "mf")
    result = _recommended(client, user, model)
    assert result["model"] in (model, "popular")
    assert 0 < len(result["items"]) <= 10
    assert not set(seen) & {item["item_id"] for item in result["items"]}


def test_catalog_round_trip_and_category_popularity(client, run):
    item, category = f"{run}-lamp", f"{run}-lighting"
    response = client.put(f"/items/{item}", json={"categories": [category], "price": 12.5})
    assert response.status_code == 202, response.text
    stored = wait_for(lambda: (r := client.get(f"/items/{item}")).status_code == 200 and r)
    assert stored.json()["categories"] == [category]
    assert client.post("/events", json=_event(f"{run}-eve", item)).status_code == 202
    ranked = wait_for(lambda: client.get("/popular", params={"category": category}).json()["items"])
    assert [entry["item_id"] for entry in ranked] == [item]

    assert client.put(f"/users/{run}-eve", json={"properties": {"segment": "new"}}
                      ).status_code == 202
    unknown = client.put(f"/users/{run}-eve", json={"segment": "new"})
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"][-1] == "segment"
    assert client.put(f"/items/{item}", json={"item_id": "other"}).status_code == 422
    assert client.get(f"/items/{run}-missing").status_code == 404


@pytest.mark.parametrize(("body", "field"), [
    ({"item_id": "x", "event_type": "view"}, ["body", "user_id"]),
    ({"user_id": "u", "item_id": "x", "event_type": "teleport"}, ["body", "event_type"]),
    ([_event("u", "x"), _event("u", "x", timestamp="soon")], ["body", 1, "timestamp"]),
    ({"user_id": "u\x00", "item_id": "x", "event_type": "view"}, ["body", "user_id"]),
    ({"user_id": "u", "item_id": "x", "event_type": "view", "extra": 1}, ["body", "extra"]),
    ([], ["body"]),
])
def test_invalid_events_get_422_naming_the_field(client, body, field):
    response = client.post("/events", json=body)
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [field]


@pytest.mark.parametrize("query", [{"k": 0}, {"k": 501}, {"model": "magic"}, {}])
def test_invalid_queries_get_422(client, query):
    response = client.get("/recommendations", params={"user_id": "u", **query}
                          if query else {})
    assert response.status_code == 422


def test_a_batch_over_the_limit_gets_413(client, api_settings):
    body = [_event("u", "x")] * (api_settings.max_events_per_request + 1)
    assert client.post("/events", json=body).status_code == 413


def test_readyz_with_real_services(client):
    assert client.get("/readyz").json() == {"redis": "ok", "kafka": "ok"}
    assert client.get("/healthz").status_code == 200


def test_kafka_unreachable_means_503_never_202(services):
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}",
                        redis_url=services["redis_url"], produce_timeout_seconds=1.0)
    with TestClient(create_app(settings)) as client:
        response = client.post("/events", json=_event("u", "x"))
        assert response.status_code == 503
        assert response.headers["retry-after"] == str(settings.retry_after_seconds)
        assert "nothing was accepted" in response.json()["detail"]
        assert client.put("/items/x", json={}).status_code == 503
        assert client.get("/readyz").status_code == 503
        # Reads still work from Redis while Kafka is away.
        assert client.get("/popular").status_code == 200
