"""Hostile input over HTTP against the real services: every limit and nasty value gets a 4xx
that names the field, nothing rejected reaches Kafka or Redis, and the ids that are allowed
however odd (any script, emoji, the Redis key separator) round-trip without colliding."""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import wait_for
from tests.factories import event

LIMIT = 1_048_576  # STREAMREC_MAX_BODY_BYTES's default, which the session's app keeps
BATCH = 50  # the session's app's max_events_per_request


def literal_json(document: dict, **literals: str) -> bytes:
    """``document`` as JSON text, plus fields whose values are bare literals such as
    ``NaN`` that a JSON encoder refuses to write but a hostile client can send."""
    fields = [f"{json.dumps(name)}: {json.dumps(value)}" for name, value in document.items()]
    fields += [f'"{name}": {value}' for name, value in literals.items()]
    return ("{" + ", ".join(fields) + "}").encode()


def placement(**variant) -> dict:
    return {"variants": [{"name": "A", "model": "hybrid", **variant}]}


def placement_with(**literals: str) -> bytes:
    """A placement whose one variant has fields set to bare literals."""
    variant = literal_json({"name": "A", "model": "hybrid"}, **literals)
    return b'{"variants": [' + variant + b"]}"


def raw(body: bytes) -> dict:
    return {"content": body, "headers": {"content-type": "application/json"}}


def chunks(total: int, size: int = 65_536):
    """A body streamed without a Content-Length (chunked transfer encoding)."""
    for start in range(0, total, size):
        yield b" " * min(size, total - start)


TOO_LONG = "x" * 257
HOSTILE = [
    # (name, method, url, request keyword arguments, status, where the answer points)
    ("body over the limit", "post", "/events", raw(b" " * (LIMIT + 1)), 413, ("body",)),
    ("streamed body over the limit", "post", "/events",
     {"content": lambda: chunks(LIMIT + 1), "headers": {"content-type": "application/json"}},
     413, ("body",)),
    ("too many events", "post", "/events", {"json": [event()] * (BATCH + 1)}, 413, ("body",)),
    ("not UTF-8", "post", "/events", raw(b'{"user_id": "\xff\xfe"}'), 400, ("body",)),
    ("truncated JSON", "post", "/events", raw(b'{"user_id": "ann", "item_'), 422, ("body",)),
    ("JSON null", "post", "/events", raw(b"null"), 422, ("body",)),
    ("JSON string", "post", "/events", {"json": "view"}, 422, ("body",)),
    ("empty list", "post", "/events", {"json": []}, 422, ("body",)),
    ("overlong user_id", "post", "/events", {"json": event(user=TOO_LONG)}, 422,
     ("body", "user_id")),
    ("overlong item_id in a batch", "post", "/events",
     {"json": [event(), event(item=TOO_LONG)]}, 422, ("body", 1, "item_id")),
    ("overlong event_id", "post", "/events", {"json": event(event_id=TOO_LONG)}, 422,
     ("body", "event_id")),
    ("NUL in user_id", "post", "/events", {"json": event(user="ann\x00")}, 422,
     ("body", "user_id")),
    ("newline in item_id", "post", "/events", {"json": event(item="tea\nDELETE")}, 422,
     ("body", "item_id")),
    ("escape in user_id", "post", "/events", {"json": event(user="\x1b[31mann")}, 422,
     ("body", "user_id")),
    ("DEL in recommendation_id", "post", "/events",
     {"json": event(recommendation_id="r\x7f")}, 422, ("body", "recommendation_id")),
    ("C1 next-line in user_id", "post", "/events", {"json": event(user="ann\x85")}, 422,
     ("body", "user_id")),
    ("user_id a number", "post", "/events", {"json": event(user=12)}, 422, ("body", "user_id")),
    ("value a string", "post", "/events", {"json": event(value="5")}, 422, ("body", "value")),
    ("value NaN", "post", "/events", raw(literal_json(event(), value="NaN")), 422,
     ("body", "value")),
    ("value Infinity", "post", "/events", raw(literal_json(event(), value="Infinity")), 422,
     ("body", "value")),
    ("value -Infinity", "post", "/events", raw(literal_json(event(), value="-Infinity")), 422,
     ("body", "value")),
    ("value overflowing to infinity", "post", "/events",
     raw(literal_json(event(), value="1e999")), 422, ("body", "value")),
    ("timestamp NaN", "post", "/events", raw(literal_json(event(), timestamp="NaN")), 422,
     ("body", "timestamp")),
    ("timestamp Infinity", "post", "/events", raw(literal_json(event(), timestamp="Infinity")),
     422, ("body", "timestamp")),
    ("timestamp -Infinity", "post", "/events",
     raw(literal_json(event(), timestamp="-Infinity")), 422, ("body", "timestamp")),
    ("NaN in context", "post", "/events", raw(literal_json(event(), context='{"score": NaN}')),
     422, ("body", "context")),
    ("negative timestamp", "post", "/events", {"json": event(timestamp=-1)}, 422,
     ("body", "timestamp")),
    ("timestamp in the year 3000", "post", "/events", {"json": event(timestamp=32_503_680_000)},
     422, ("body", "timestamp")),
    ("timestamp in milliseconds", "post", "/events",
     {"json": event(timestamp=1_700_000_000_000)}, 422, ("body", "timestamp")),
    ("date-time in the year 3000", "post", "/events",
     {"json": event(timestamp="3000-01-01T00:00:00Z")}, 422, ("body", "timestamp")),
    ("date-time before 1970", "post", "/events",
     {"json": event(timestamp="1969-12-31T23:59:59Z")}, 422, ("body", "timestamp")),
    ("date-time without a zone", "post", "/events",
     {"json": event(timestamp="2026-01-01T00:00:00")}, 422, ("body", "timestamp")),
    ("unknown field", "post", "/events", {"json": event(colour="red")}, 422, ("body", "colour")),
    ("unknown event type", "post", "/events", {"json": event(kind="teleport")}, 422,
     ("body", "event_type")),
    ("too many context entries", "post", "/events",
     {"json": event(context={f"k{n}": n for n in range(33)})}, 422, ("body", "context")),
    ("overlong context value", "post", "/events",
     {"json": event(context={"note": "x" * 1025})}, 422, ("body", "context")),
    ("too many item properties", "put", "/items/hostile-tea",
     {"json": {"properties": {f"p{n}": n for n in range(65)}}}, 422, ("body", "properties")),
    ("too many categories", "put", "/items/hostile-tea",
     {"json": {"categories": [f"c{n}" for n in range(33)]}}, 422, ("body", "categories")),
    ("control character in a category", "put", "/items/hostile-tea",
     {"json": {"categories": ["tea\ttime"]}}, 422, ("body", "categories", 0)),
    ("price NaN", "put", "/items/hostile-tea", raw(literal_json({}, price="NaN")), 422,
     ("body", "price")),
    ("created_at in milliseconds", "put", "/items/hostile-tea",
     {"json": {"created_at": 1_700_000_000_000}}, 422, ("body", "created_at")),
    ("unknown item field", "put", "/items/hostile-tea", {"json": {"colour": "green"}}, 422,
     ("body", "colour")),
    ("item_id differing from the path", "put", "/items/hostile-tea",
     {"json": {"item_id": "hostile-cup"}}, 422, ("body", "item_id")),
    ("too many user properties", "put", "/users/hostile-ann",
     {"json": {"properties": {f"p{n}": n for n in range(65)}}}, 422, ("body", "properties")),
    ("unknown user field", "put", "/users/hostile-ann", {"json": {"tier": "gold"}}, 422,
     ("body", "tier")),
    ("control character in a path id", "get", "/items/tea%0Acup", {}, 422, ("path", "item_id")),
    ("overlong path id", "get", f"/items/{TOO_LONG}", {}, 422, ("path", "item_id")),
    ("placement weight Infinity", "put", "/admin/placements/hostile",
     raw(placement_with(weight="Infinity")), 422, ("body", "variants", 0, "weight")),
    ("placement blend weight Infinity", "put", "/admin/placements/hostile",
     raw(placement_with(params='{"hybrid_mf": Infinity}')), 422,
     ("body", "variants", 0, "params")),
    ("unknown placement field", "put", "/admin/placements/hostile",
     {"json": {**placement(), "stratgey": "bandit"}}, 422, ("body", "stratgey")),
    ("overlong author header", "put", "/admin/placements/hostile",
     {"json": placement(), "headers": {"X-Streamrec-Author": "a" * 129}}, 422,
     ("header", "X-Streamrec-Author")),
    ("log limit 0", "get", "/admin/placements/hostile/log", {"params": {"limit": 0}}, 422,
     ("query", "limit")),
    ("user_id with a control character", "get", "/recommendations",
     {"params": {"user_id": "ann\x01"}}, 422, ("query", "user_id")),
    ("overlong user_id", "get", "/recommendations", {"params": {"user_id": TOO_LONG}}, 422,
     ("query", "user_id")),
    ("no user_id", "get", "/recommendations", {}, 422, ("query", "user_id")),
    ("k=0", "get", "/recommendations", {"params": {"user_id": "ann", "k": 0}}, 422,
     ("query", "k")),
    ("k=501", "get", "/recommendations", {"params": {"user_id": "ann", "k": 501}}, 422,
     ("query", "k")),
    ("k=10**9", "get", "/recommendations", {"params": {"user_id": "ann", "k": 10**9}}, 422,
     ("query", "k")),
    ("k=abc", "get", "/recommendations", {"params": {"user_id": "ann", "k": "abc"}}, 422,
     ("query", "k")),
    ("k=Infinity", "get", "/popular", {"params": {"k": "Infinity"}}, 422, ("query", "k")),
    ("k=-1", "get", "/items/tea/similar", {"params": {"k": -1}}, 422, ("query", "k")),
    ("unknown model", "get", "/recommendations", {"params": {"user_id": "ann", "model": "x"}},
     422, ("query", "model")),
    ("placement with a slash", "get", "/recommendations",
     {"params": {"user_id": "ann", "placement": "../home"}}, 422, ("query", "placement")),
    ("overlong category", "get", "/popular", {"params": {"category": "c" * 129}}, 422,
     ("query", "category")),
]


def send(client, method: str, url: str, arguments: dict):
    if callable(arguments.get("content")):  # a generator is spent once sent: a fresh one
        arguments = {**arguments, "content": arguments["content"]()}
    return client.request(method.upper(), url, **arguments)


def assert_refused(response, status: int, where: tuple) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    if isinstance(detail, str):  # 400 and 413 name the body in words
        assert where == ("body",) and "body" in detail, detail
    else:  # 422: pydantic's list of errors, each with the path to its field
        locations = [tuple(error["loc"]) for error in detail]
        assert any(location[:len(where)] == where for location in locations), locations


@pytest.mark.parametrize(("method", "url", "arguments", "status", "where"),
                         [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE])
def test_hostile_request_is_refused_naming_the_field(client, method, url, arguments, status,
                                                     where):
    assert_refused(send(client, method, url, arguments), status, where)


def _history(client, user: str) -> set[str]:
    return {item for item, _ in client.app.state.versions.engine.store.history(user, 200)}


def test_hostile_requests_leave_a_normal_users_state_alone(client, run):
    user = f"{run}-normal"
    first = [event(user, f"{run}-tea"), event(user, f"{run}-cup", "purchase")]
    assert client.post("/events", json=first).status_code == 202
    assert wait_for(lambda: _history(client, user) == {f"{run}-tea", f"{run}-cup"})

    for _, method, url, arguments, status, where in HOSTILE:
        assert_refused(send(client, method, url, arguments), status, where)

    # The user's events are one partition, in order: once the next event is applied,
    # anything a hostile request had slipped in before it would be too.
    assert client.post("/events", json=event(user, f"{run}-pot")).status_code == 202
    assert wait_for(lambda: f"{run}-pot" in _history(client, user))
    assert _history(client, user) == {f"{run}-tea", f"{run}-cup", f"{run}-pot"}
    answer = client.get("/recommendations", params={"user_id": user, "model": "cooccurrence"})
    assert answer.status_code == 200
    assert not {f"{run}-tea", f"{run}-cup", f"{run}-pot"} & {
        item["item_id"] for item in answer.json()["items"]}


def test_unicode_ids_are_accepted_and_round_trip(client, run):
    user, item, other = f"ユーザー-ü-🙂-{run}", f"お茶-ß-🍵-{run}", f"カップ-ø-☕-{run}"
    category = f"飲み物-🫖-{run}"
    response = client.put(f"/items/{item}", json={"categories": [category]})
    assert response.status_code == 202 and response.json()["id"] == item
    stored = wait_for(lambda: (r := client.get(f"/items/{item}")).status_code == 200 and r)
    assert stored.json()["item_id"] == item and stored.json()["categories"] == [category]

    assert client.post("/events", json=[event(user, item), event(user, other)]).status_code == 202
    assert wait_for(lambda: _history(client, user) == {item, other})
    similar = client.get(f"/items/{item}/similar").json()["items"]
    assert [entry["item_id"] for entry in similar] == [other]
    answer = client.get("/recommendations", params={"user_id": user}).json()
    assert answer["user_id"] == user
    assert not {item, other} & {entry["item_id"] for entry in answer["items"]}
    in_category = client.get("/popular", params={"category": category}).json()["items"]
    assert [entry["item_id"] for entry in in_category] == [item]


def test_ids_holding_the_key_separator_do_not_collide(client, run):
    # Keys end with the id (streamrec/keys.py), so "a" and "a:b" are different keys; an id
    # that looked like another key's structure must not read or write that key.
    short, long = f"{run}-a", f"{run}-a:b"
    batch = [event(short, f"{run}-x"), event(long, f"{run}-x:y"), event(long, f"{run}-z")]
    assert client.post("/events", json=batch).status_code == 202
    assert wait_for(lambda: _history(client, long) == {f"{run}-x:y", f"{run}-z"})
    assert wait_for(lambda: _history(client, short) == {f"{run}-x"})

    neighbours = client.get(f"/items/{run}-x:y/similar").json()["items"]
    assert [entry["item_id"] for entry in neighbours] == [f"{run}-z"]
    assert client.get(f"/items/{run}-x/similar").json()["items"] == []

    for item, category in ((f"{run}-x", "short"), (f"{run}-x:y", "long")):
        assert client.put(f"/items/{item}", json={"categories": [category]}).status_code == 202
    for item, category in ((f"{run}-x", "short"), (f"{run}-x:y", "long")):
        stored = wait_for(lambda i=item: (r := client.get(f"/items/{i}")).status_code == 200
                          and r.json())
        assert stored["item_id"] == item and stored["categories"] == [category]
