"""Filters, availability and expiry against the real Kafka, Redis and worker: catalogs are
built by hand through PUT /items (the compacted items topic) and POST /events, and every
list endpoint is read back with and without named filters."""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from fastapi.testclient import TestClient

from api.main import create_app
from streamrec.settings import Settings
from tests.api.conftest import wait_for

MODELS = ("popular", "cooccurrence", "mf", "hybrid")


def _ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["item_id"] for item in response.json()["items"]]


def _put_items(client, items: dict[str, dict]) -> None:
    """PUT every item, then wait until the worker has stored each one as sent."""
    for item_id, body in items.items():
        assert client.put(f"/items/{item_id}", json=body).status_code == 202
    for item_id, body in items.items():
        assert wait_for(lambda i=item_id, b=body: (r := client.get(f"/items/{i}")
                                                   ).status_code == 200
                        and all(r.json()[f] == v for f, v in b.items()
                                if f not in ("created_at", "expires_at"))), item_id


def _views(client, views: dict[str, list[str]], kind: str = "view") -> None:
    events = [{"user_id": user, "item_id": item, "event_type": kind}
              for user, items in views.items() for item in items]
    for start in range(0, len(events), 50):
        assert client.post("/events", json=events[start:start + 50]).status_code == 202


def _register(client, name: str, expression: str) -> dict:
    response = client.put(f"/admin/filters/{name}", json={"expression": expression})
    assert response.status_code == 200, response.text
    return response.json()


def _listed(client, path: str, name: str | None = None, values: dict | None = None,
            **query) -> list[str]:
    params = dict(query)
    if name is not None:
        params["filter"] = name
    if values is not None:
        params["filter_values"] = orjson.dumps(values).decode()
    return _ids(client.get(path, params=params))


def _every_list(client, run: str, user: str, item: str, category: str,
                name: str | None = None, values: dict | None = None) -> dict[str, list[str]]:
    """What every list endpoint shows (recommendations per model) through a filter."""
    lists = {"/popular": _listed(client, "/popular", name, values, k=100, category=category),
             "/similar": _listed(client, f"/items/{item}/similar", name, values, k=100)}
    for model in MODELS:
        lists[model] = _listed(client, "/recommendations", name, values, user_id=user,
                               model=model, k=500)
    return lists


# --- availability and expiry --------------------------------------------------------------------

def test_unavailable_expired_and_deleted_items_are_never_shown(client, run, api_settings,
                                                               services):
    category = f"{run}-shop"
    items = {f"{run}-{name}": {"categories": [category]}
             for name in ("open", "closed", "expired", "expiring", "deleted", "fine")}
    expiring, fine, reader, anchor = f"{run}-expiring", f"{run}-fine", f"{run}-reader", \
        f"{run}-open"
    items[f"{run}-closed"]["available"] = False
    items[f"{run}-expired"]["expires_at"] = time.time() - 60
    items[expiring]["expires_at"] = time.time() + 30
    _put_items(client, items)
    # Everyone touches everything, so each item is popular, a neighbour of every other and
    # in every model; the reader touches only "open", so may be shown all the rest.
    _views(client, {f"{run}-u{n}": list(items) for n in range(6)})
    _views(client, {reader: [anchor]})
    assert wait_for(lambda: {expiring, fine} <= set(_listed(
        client, "/recommendations", user_id=reader, model="cooccurrence")))
    assert wait_for(lambda: {expiring, fine} <= set(_listed(
        client, f"/items/{anchor}/similar")))
    never = {f"{run}-closed", f"{run}-expired"}
    lists = _every_list(client, run, reader, anchor, category)
    for where, shown in lists.items():
        assert not never & set(shown), (where, shown)
    for where in ("/popular", "/similar", "cooccurrence"):
        assert {expiring, fine} <= set(lists[where]), (where, lists[where])

    producer_deletes(services["bootstrap"], api_settings.items_topic, f"{run}-deleted")
    assert wait_for(lambda: client.get(f"/items/{run}-deleted").status_code == 404)
    never.add(f"{run}-deleted")
    # Nothing is written when an item expires: its time passes, and lists drop it.
    assert wait_for(lambda: expiring not in _listed(client, "/popular", k=100,
                                                    category=category), timeout=60)
    never.add(expiring)
    lists = _every_list(client, run, reader, anchor, category)
    for where, shown in lists.items():
        assert not never & set(shown), (where, shown)
    for where in ("/popular", "/similar", "cooccurrence"):
        assert fine in lists[where], (where, lists[where])

    # A new document can bring an item back, in the next list of any route (the API's copy
    # of the withdrawn items follows the catalog's version, read with the request).
    _put_items(client, {f"{run}-closed": {"categories": [category], "available": True}})
    assert f"{run}-closed" in _listed(client, "/popular", k=100, category=category)
    for model in MODELS:
        assert f"{run}-closed" in _listed(client, "/recommendations", user_id=reader,
                                          model=model, k=500), model


def producer_deletes(bootstrap: str, topic: str, item_id: str) -> None:
    """A tombstone (null value) keyed by the item id, straight onto the compacted topic."""
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, None, key=item_id.encode())
        finally:
            await producer.stop()

    asyncio.run(send())


def test_a_tombstone_deletes_the_item_and_a_new_document_restores_it(client, run,
                                                                      api_settings, services):
    item, category = f"{run}-lamp", f"{run}-lights"
    _put_items(client, {item: {"categories": [category], "price": 10.0}})
    _views(client, {f"{run}-ann": [item]})
    assert wait_for(lambda: _listed(client, "/popular", category=category) == [item])
    producer_deletes(services["bootstrap"], api_settings.items_topic, item)
    assert wait_for(lambda: client.get(f"/items/{item}").status_code == 404)
    assert _listed(client, "/popular", category=category) == []
    _put_items(client, {item: {"categories": [category], "price": 11.0}})
    assert _listed(client, "/popular", category=category) == [item]


# --- filters --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shop(client):
    """40 films over three genres (a category each, and a ``genre`` property), prices 1..40,
    every tenth a ``staff_pick``; popularity falls with the number. ann purchased f1 and
    viewed f2; bob viewed f0 and f3."""
    run = uuid.uuid4().hex[:8]
    genres = ("Horror", "Comedy", "Drama")
    films = {}
    for n in range(40):
        genre = genres[n % 3]
        films[f"{run}-f{n}"] = {
            "categories": [f"{run}-all", f"{run}-{genre}"], "price": float(n + 1),
            "created_at": 1_767_225_600 + n * 86_400,
            "properties": {"genre": genre, "staff_pick": n % 10 == 0},
        }
    _put_items(client, films)
    _views(client, {f"{run}-fan{u}": [f"{run}-f{n}" for n in range(40 - u)]
                    for u in range(0, 40, 2)})
    _views(client, {f"{run}-ann": [f"{run}-f1"]}, kind="purchase")
    _views(client, {f"{run}-ann": [f"{run}-f2"], f"{run}-bob": [f"{run}-f0", f"{run}-f3"]})
    # Every event applied: 420 fan views, a purchase (weight 8) and three views; scores
    # are decayed by seconds of a week's half-life, so they add up to 431 within 0.1.
    assert wait_for(lambda: abs(sum(item["score"] for item in client.get("/popular", params={
        "k": 100, "category": f"{run}-all"}).json()["items"]) - 431) < 0.1, timeout=60)
    assert wait_for(lambda: _listed(client, "/recommendations", user_id=f"{run}-bob",
                                    model="mf", k=5) and
                    client.get("/recommendations", params={
                        "user_id": f"{run}-bob", "model": "cooccurrence"}
                    ).json()["model"] == "cooccurrence", timeout=60)
    return {"run": run, "films": films}


def _number(item_id: str) -> int:
    return int(item_id.rsplit("-f", 1)[1])


def _film(shop, item_id: str) -> dict:
    return shop["films"][item_id]


def test_exclude_by_category_on_every_list(client, shop):
    run = shop["run"]
    _register(client, f"{run}-no-horror",
              f'EXCLUDE ItemID WHERE Items.categories IN ("{run}-Horror")')
    lists = _every_list(client, run, f"{run}-bob", f"{run}-f3", f"{run}-all",
                        f"{run}-no-horror")
    for where, shown in lists.items():
        mine = [item for item in shown if item.startswith(f"{run}-f")]
        assert mine or where in ("mf", "hybrid", "popular"), where  # others' items may rank
        assert all(_film(shop, item)["properties"]["genre"] != "Horror" for item in mine), where
    assert len(lists["/popular"]) == 40 - 14  # 14 of the 40 are horror films


def test_include_with_parameters_and_a_list_parameter(client, shop):
    run = shop["run"]
    _register(client, f"{run}-cheap",
              "INCLUDE ItemID WHERE Items.price < $MAX_PRICE AND Items.available = true "
              "AND Items.categories IN ($GENRES)")
    genres = [f"{run}-Comedy", f"{run}-Drama"]
    lists = _every_list(client, run, f"{run}-bob", f"{run}-f3", f"{run}-all", f"{run}-cheap",
                        {"MAX_PRICE": "20", "GENRES": genres})
    for where, shown in lists.items():
        assert shown, where
        for item in shown:
            film = _film(shop, item)
            assert film["price"] < 20 and film["properties"]["genre"] != "Horror", where
    expected = [item for item in _listed(client, "/popular", k=100, category=f"{run}-all")
                if _number(item) < 19 and _number(item) % 3 != 0]
    assert lists["/popular"] == expected  # every match, most popular first
    assert _listed(client, "/popular", f"{run}-cheap", {"MAX_PRICE": 20, "GENRES": genres},
                   k=3) == expected[:3]


def test_exclude_what_the_user_purchased(client, shop):
    run = shop["run"]
    _register(client, f"{run}-unbought",
              'EXCLUDE ItemID WHERE Interactions.event_type IN ("purchase")')
    ann = f"{run}-ann"
    everything = _listed(client, "/popular", k=100, category=f"{run}-all")
    assert {f"{run}-f1", f"{run}-f2"} <= set(everything)
    unbought = _listed(client, "/popular", f"{run}-unbought", k=100, category=f"{run}-all",
                       user_id=ann)
    assert unbought == [item for item in everything if item != f"{run}-f1"]
    similar = _listed(client, f"/items/{run}-f0/similar", f"{run}-unbought", k=100,
                      user_id=ann)
    assert similar and f"{run}-f1" not in similar
    assert f"{run}-f1" in _listed(client, f"/items/{run}-f0/similar", k=100)
    # Without a user nobody has bought anything.
    assert _listed(client, "/popular", f"{run}-unbought", k=100,
                   category=f"{run}-all") == everything
    _register(client, f"{run}-bought",
              'INCLUDE ItemID WHERE Interactions.event_type = "purchase"')
    assert _listed(client, "/popular", f"{run}-bought", k=100, category=f"{run}-all",
                   user_id=ann) == [f"{run}-f1"]


def test_similar_items_like_the_current_item(client, shop):
    run = shop["run"]
    _register(client, f"{run}-same-genre",
              "INCLUDE ItemID WHERE Items.genre = CurrentItem.genre "
              "AND Items.price <= CurrentItem.price")
    current = f"{run}-f30"  # a horror film at 31
    similar = _listed(client, f"/items/{current}/similar", f"{run}-same-genre", k=100)
    assert similar
    assert all(_film(shop, i)["properties"]["genre"] == "Horror"
               and _film(shop, i)["price"] <= 31 for i in similar)
    for path, query in (("/popular", {}), ("/recommendations", {"user_id": f"{run}-bob"})):
        response = client.get(path, params={"filter": f"{run}-same-genre", **query})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", "filter"]
        assert "CurrentItem" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize(("condition", "wanted"), [
    ('Items.genre NOT IN ("Horror", "Drama")', lambda n, f: f["properties"]["genre"] == "Comedy"),
    ('Items.genre != "Comedy" AND Items.price >= 35',
     lambda n, f: f["properties"]["genre"] != "Comedy" and f["price"] >= 35),
    ('(Items.genre = "Horror" OR Items.staff_pick = true) AND Items.price <= 20',
     lambda n, f: (f["properties"]["genre"] == "Horror" or n % 10 == 0) and f["price"] <= 20),
    ('Items.created_at > "2026-02-01T00:00:00Z"', lambda n, f: n > 31),
    ("Items.price > 38 OR Items.price < 2", lambda n, f: n in (0, 38, 39)),
])
def test_comparisons_and_boolean_logic(client, shop, condition, wanted):
    run = shop["run"]
    name = f"{run}-{uuid.uuid4().hex[:6]}"
    _register(client, name, f"INCLUDE ItemID WHERE {condition}")
    shown = _listed(client, "/popular", name, k=100, category=f"{run}-all")
    expected = [item for item in _listed(client, "/popular", k=100, category=f"{run}-all")
                if wanted(_number(item), _film(shop, item))]
    assert expected and shown == expected


def test_a_filter_removing_nine_in_ten_still_fills_the_list(client, shop):
    run = shop["run"]
    _register(client, f"{run}-picks", "INCLUDE ItemID WHERE Items.staff_pick = true")
    picks = {f"{run}-f{n}" for n in range(0, 40, 10)}  # f0 f10 f20 f30: a tenth
    for model in MODELS:
        shown = _listed(client, "/recommendations", f"{run}-picks", user_id=f"{run}-ann",
                        model=model, k=4)
        assert set(shown) == picks, model  # ann interacted with f1 and f2 only
    assert set(_listed(client, "/popular", f"{run}-picks", k=4)) == picks


def test_a_known_users_short_list_keeps_its_model_and_flags_popular_backfill(client, shop):
    """The README's "Short lists": a filter leaving a known user fewer than k of the model's
    own items answers them, then popular ones flagged ``backfill``, under the model's name;
    ``popular`` names only a user nobody knows."""
    run = shop["run"]
    solo = f"{run}-solo"  # viewed by one loner only: nobody's co-occurrence neighbour
    _put_items(client, {solo: {"categories": [f"{run}-all"], "properties": {"solo": True}}})
    _views(client, {f"{run}-loner": [solo]})
    _register(client, f"{run}-solo", "INCLUDE ItemID WHERE Items.solo = true")
    query = {"filter": f"{run}-solo", "model": "cooccurrence", "k": 5}
    assert wait_for(lambda: client.get("/recommendations", params={
        **query, "user_id": f"{run}-nobody"}).json()["items"], timeout=60)
    known = client.get("/recommendations", params={**query, "user_id": f"{run}-ann"}).json()
    assert known["model"] == "cooccurrence"
    assert known["items"] == [{"item_id": solo, "score": 0.0, "backfill": True}]
    unfiltered = client.get("/recommendations", params={
        "user_id": f"{run}-ann", "model": "cooccurrence", "k": 40}).json()
    flags = [item["backfill"] for item in unfiltered["items"]]
    assert unfiltered["model"] == "cooccurrence" and flags == sorted(flags)  # own first
    stranger = client.get("/recommendations", params={**query, "user_id": f"{run}-nobody"})
    assert stranger.json()["model"] == "popular"
    assert [(item["item_id"], item["backfill"]) for item in stranger.json()["items"]] == [
        (solo, False)]
    # Similar items: co-occurrence neighbours, then content ones flagged (solo has none).
    similar = wait_for(lambda: client.get(f"/items/{solo}/similar", params={"k": 3}
                                          ).json()["items"], timeout=30)
    assert similar and all(item["backfill"] for item in similar)
    touched = client.get(f"/items/{run}-f1/similar", params={"k": 3}).json()["items"]
    assert touched and not any(item["backfill"] for item in touched)


def test_a_filter_that_leaves_nothing_gives_empty_lists(client, shop):
    run = shop["run"]
    _register(client, f"{run}-nothing", "INCLUDE ItemID WHERE Items.price < 0")
    lists = _every_list(client, run, f"{run}-bob", f"{run}-f3", f"{run}-all", f"{run}-nothing")
    assert lists == {where: [] for where in lists}
    overall = client.get("/popular", params={"filter": f"{run}-nothing"})
    assert overall.status_code == 200 and overall.json()["items"] == []


# --- the admin API and request errors -----------------------------------------------------------

def test_filters_are_registered_versioned_listed_and_deleted(client, run):
    name = f"{run}-admin"
    first = _register(client, name, "INCLUDE ItemID WHERE Items.price < $MAX_PRICE")
    assert (first["version"], first["action"], first["parameters"]) == (1, "INCLUDE",
                                                                        ["MAX_PRICE"])
    second = _register(client, name, 'EXCLUDE ItemID WHERE Items.genre IN ("Horror")')
    assert (second["version"], second["parameters"]) == (2, [])
    listed = client.get("/admin/filters").json()
    assert listed[name]["expression"] == 'EXCLUDE ItemID WHERE Items.genre IN ("Horror")'
    assert client.get("/popular", params={"filter": name}).status_code == 200
    assert client.delete(f"/admin/filters/{name}").status_code == 204
    assert name not in client.get("/admin/filters").json()
    gone = client.get("/popular", params={"filter": name})
    assert gone.status_code == 422 and name in gone.json()["detail"][0]["msg"]
    assert client.delete(f"/admin/filters/{name}").status_code == 404


@pytest.mark.parametrize(("expression", "message"), [
    ('EXCLUDE ItemID WHERE Items.genre IN', "expected ( after IN at position 36"),
    ('EXCLUDE ItemID WHERE Items.genre IN ()', "expected a value after (, found ) at position 38"),
    ("INCLUDE ItemID WHERE " + "(" * 50 + "Items.a = 1" + ")" * 50, "nested deeper than 8"),
    ("INCLUDE ItemID WHERE " + " OR ".join(f"Items.a = {n}" for n in range(21)),
     "more than 20 conditions"),
    ("INCLUDE ItemID WHERE Items.a IN (" + ",".join(["1"] * 101) + ")", "more than 100 values"),
    ("INCLUDE ItemID WHERE Items.a = 1 " + " " * 1000, "longer than 1000 characters"),
    ("INCLUDE ItemID WHERE Items.a = 1; DROP TABLE items", "unexpected character ';'"),
    ("INCLUDE ItemID WHERE Items.a = \"\x00\"", "control character U+0000"),
    ("INCLUDE ItemID WHERE __import__('os').system('id')", "unexpected character"),
    ("", "the expression is empty"),
])
def test_hostile_expressions_get_422_naming_the_position(client, run, expression, message):
    response = client.put(f"/admin/filters/{run}-hostile", json={"expression": expression})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "expression"] and message in detail["msg"]
    assert f"{run}-hostile" not in client.get("/admin/filters").json()


@pytest.mark.parametrize(("name", "body"), [
    ("bad name", {"expression": "INCLUDE ItemID WHERE Items.a = 1"}),
    ("x" * 65, {"expression": "INCLUDE ItemID WHERE Items.a = 1"}),
    ("ok", {}),
    ("ok", {"expression": 5}),
    ("ok", {"expression": "INCLUDE ItemID WHERE Items.a = 1", "extra": 1}),
])
def test_malformed_registrations_get_422(client, name, body):
    assert client.put(f"/admin/filters/{name}", json=body).status_code == 422


def test_request_errors_name_the_filter_or_the_parameter(client, run):
    name = f"{run}-priced"
    _register(client, name, "INCLUDE ItemID WHERE Items.price < $MAX_PRICE")
    cases = [
        ({"filter": f"{run}-unknown"}, "filter", f"no filter named '{run}-unknown'"),
        ({"filter": name}, "filter_values", "$MAX_PRICE is missing"),
        ({"filter": name, "filter_values": "{}"}, "filter_values", "$MAX_PRICE is missing"),
        ({"filter": name, "filter_values": '{"MAX_PRICE": 5, "MIN": 1}'}, "filter_values",
         "$MIN is not a parameter"),
        ({"filter": name, "filter_values": '{"MAX_PRICE": [1, 2]}'}, "filter_values",
         "takes one value, not a list"),
        ({"filter": name, "filter_values": "MAX_PRICE:20"}, "filter_values", "not JSON"),
        ({"filter": name, "filter_values": "[20]"}, "filter_values", "JSON object"),
        ({"filter": name, "filter_values": '{"MAX_PRICE": NaN}'}, "filter_values",
         "not JSON"),
        ({"filter_values": '{"MAX_PRICE": 5}'}, "filter_values", "without filter"),
        ({"filter": "no such; name"}, "filter", "pattern"),
    ]
    for query, field, message in cases:
        for path, extra in (("/popular", {}), ("/items/x/similar", {}),
                            ("/recommendations", {"user_id": f"{run}-u"})):
            response = client.get(path, params={**query, **extra})
            assert response.status_code == 422, (path, query, response.text)
            detail = response.json()["detail"][0]
            assert detail["loc"] == ["query", field], (path, query, detail)
            assert message in detail["msg"], (path, query, detail)


def test_a_filter_registered_in_one_process_works_at_once_in_another(client, run,
                                                                     api_settings):
    name = f"{run}-shared"
    settings = api_settings.model_copy(update={"filter_refresh_seconds": 0.2})
    with TestClient(create_app(settings)) as other:
        assert other.get("/popular", params={"filter": name}).status_code == 422
        _register(client, name, "INCLUDE ItemID WHERE Items.price < 0")
        assert other.get("/popular", params={"filter": name}).json()["items"] == []
        assert client.delete(f"/admin/filters/{name}").status_code == 204
        assert wait_for(lambda: other.get("/popular", params={"filter": name}
                                          ).status_code == 422, timeout=5)


def test_filters_need_an_admin_key_to_change_and_a_read_key_to_use(services, run):
    reader, admin = "r" * 16 + "-filters", "a" * 16 + "-filters"
    settings = Settings(kafka_bootstrap=services["bootstrap"], redis_url=services["redis_url"],
                        api_keys={reader: "read", admin: "admin"})
    body = {"expression": "INCLUDE ItemID WHERE Items.price < 0"}
    with TestClient(create_app(settings)) as secured:
        as_reader, as_admin = {"X-API-Key": reader}, {"X-API-Key": admin}
        path = f"/admin/filters/{run}-keyed"
        assert secured.put(path, json=body).status_code == 401
        assert secured.put(path, json=body, headers=as_reader).status_code == 403
        assert secured.get("/admin/filters", headers=as_reader).status_code == 403
        assert secured.put(path, json=body, headers=as_admin).status_code == 200
        listed = secured.get("/popular", params={"filter": f"{run}-keyed"}, headers=as_reader)
        assert listed.status_code == 200 and listed.json()["items"] == []
        assert secured.delete(path, headers=as_reader).status_code == 403
        assert secured.delete(path, headers=as_admin).status_code == 204
