"""Cold start over HTTP against the real services: a new item's neighbours from its
catalog document, and a newcomer's chosen category."""

from __future__ import annotations

from tests.api.conftest import wait_for


def _similar(client, item: str) -> list[str]:
    return [entry["item_id"] for entry in
            client.get(f"/items/{item}/similar", params={"k": 3}).json()["items"]]


def test_a_new_item_has_content_neighbours_before_anyone_touches_it(client, run):
    documents = {
        f"{run}-voyage": {"categories": [f"{run}-sea"], "properties": {
            "title": f"Blue ocean voyage {run}"}},
        f"{run}-voyage2": {"categories": [f"{run}-sea"], "properties": {
            "title": f"Blue ocean voyage {run} returns"}},
        f"{run}-desert": {"categories": [f"{run}-sand"], "properties": {"title": "Dunes"}},
    }
    for item, document in documents.items():
        assert client.put(f"/items/{item}", json=document).status_code == 202
    assert wait_for(lambda: _similar(client, f"{run}-voyage2")[:1] == [f"{run}-voyage"],
                    timeout=30), _similar(client, f"{run}-voyage2")
    assert f"{run}-desert" not in _similar(client, f"{run}-voyage2")


def test_a_newcomer_is_shown_the_category_they_chose(client, run):
    category = f"{run}-garden"
    for n in range(3):
        item = f"{run}-rake{n}"
        assert client.put(f"/items/{item}", json={"categories": [category]}).status_code == 202
    wait_for(lambda: client.get(f"/items/{run}-rake2").status_code == 200)
    for n in range(3):
        client.post("/events", json={"user_id": f"{run}-fan{n}", "item_id": f"{run}-rake{n}",
                                     "event_type": "purchase"})
    assert wait_for(lambda: len(client.get("/popular", params={"category": category}
                                           ).json()["items"]) == 3, timeout=30)
    listed = client.get("/recommendations", params={
        "user_id": f"{run}-newcomer", "k": 5, "category": category}).json()
    assert listed["model"] == "popular"
    assert {e["item_id"] for e in listed["items"][:3]} == {f"{run}-rake{n}" for n in range(3)}
    assert len(listed["items"]) > 3  # then what is popular overall (the warm-up item at least)
