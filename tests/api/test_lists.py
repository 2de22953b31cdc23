"""``lists:NAME`` over HTTP against the real Kafka, Redis and worker: forced with
``model=`` and as a placement's variant, screened like any model (seen items, withdrawn
items, filters), with the set's fallback for users it has no list for, in another app
under ``/apps/{app}/...``."""

from __future__ import annotations

import time

import orjson
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from streamrec import lists
from streamrec.wiring import Wiring
from tests.api.conftest import wait_for
from tests.api.test_apps import PLATFORM, apps_settings, as_key, new_app
from tests.factories import list_rows


def import_set(wiring: Wiring, tmp_path, name: str, rows: list[dict], **options
               ) -> lists.ImportReport:
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(row) for row in rows))
    return lists.import_file(wiring.list_sets(), name, path, **options)


def ids(answer) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [item["item_id"] for item in answer.json()["items"]]


@pytest.fixture
def shop(client, api_settings, run, tmp_path):
    """Items f0..f9 (the even ones staff picks), and set ``run`` ranking them for ann (all
    but f9, best first) and bob (f1, f3); ann has viewed f0, and f2 is withdrawn."""
    items = [f"{run}-f{n}" for n in range(10)]
    for n, item in enumerate(items):
        assert client.put(f"/items/{item}", json={
            "categories": [f"{run}-all"], "properties": {"pick": n % 2 == 0}}).status_code == 202
    assert client.post("/events", json={"user_id": f"{run}-ann", "item_id": items[0],
                                        "event_type": "view"}).status_code == 202
    assert client.delete(f"/items/{items[2]}").status_code == 202
    wiring = Wiring.connect(api_settings.model_copy(update={"lists_refresh_seconds": 0.2}))
    store = wiring.store()
    # Every test here sees f2 withdrawn (its deletion comes after its document).
    assert wait_for(lambda: store.history(f"{run}-ann", 5) and all(
        store.get_item(item) for item in items[3:])
        and store.screen([items[2]], time.time())[0] == {items[2]}, timeout=60)
    import_set(wiring, tmp_path, run, [
        {"user_id": f"{run}-ann", "items": items[:9]},
        {"user_id": f"{run}-bob", "items": [items[1], items[3]]}], fallback="cooccurrence")
    yield {"run": run, "items": items, "model": f"lists:{run}"}
    wiring.list_sets().delete(run)
    wiring.close()


def test_a_forced_lists_model_is_screened_like_any_model(client, shop):
    run, items, model = shop["run"], shop["items"], shop["model"]
    query = {"user_id": f"{run}-ann", "model": model, "k": 4}
    # The worker withdraws f2 a moment after it stores the documents.
    assert wait_for(lambda: ids(client.get("/recommendations", params=query))
                    == [items[1], items[3], items[4], items[5]], timeout=30)
    answer = client.get("/recommendations", params=query).json()
    assert answer["model"] == model and not any(item["backfill"] for item in answer["items"])
    assert answer["items"][0]["score"] == pytest.approx(1 / 2)  # no scores: 1 / rank

    client.put(f"/admin/filters/{run}-picks",
               json={"expression": "INCLUDE ItemID WHERE Items.pick = true"})
    assert ids(client.get("/recommendations", params={**query, "filter": f"{run}-picks",
                                                      "k": 3})) == [items[4], items[6],
                                                                    items[8]]
    short = client.get("/recommendations", params={**query, "user_id": f"{run}-bob"}).json()
    assert short["model"] == model
    assert [(item["item_id"], item["backfill"]) for item in short["items"][:2]] == [
        (items[1], False), (items[3], False)]
    assert all(item["backfill"] for item in short["items"][2:])


def test_users_without_a_list_get_the_fallback_the_set_names(client, shop):
    run = shop["run"]
    assert client.post("/events", json={"user_id": f"{run}-cat", "item_id": shop["items"][7],
                                        "event_type": "view"}).status_code == 202
    assert wait_for(lambda: client.get("/recommendations", params={
        "user_id": f"{run}-cat", "model": shop["model"]}).json()["model"] == "cooccurrence",
        timeout=60)
    stranger = client.get("/recommendations", params={"user_id": f"{run}-nobody",
                                                      "model": shop["model"]}).json()
    assert stranger["model"] == "popular"


def test_a_forced_list_set_that_does_not_exist_is_refused_naming_it(client, run):
    answer = client.get("/recommendations", params={"user_id": "ann",
                                                    "model": f"lists:{run}-nope"})
    assert answer.status_code == 422, answer.text
    assert f"no list set '{run}-nope' in this app" in answer.text


def test_a_placement_variant_serves_a_list_set(client, shop):
    run = shop["run"]
    placement = f"p{run}"
    assert client.put(f"/admin/placements/{placement}", json={
        "variants": [{"name": "batch", "model": shop["model"]}]}).status_code == 200
    answer = client.get("/recommendations", params={"user_id": f"{run}-ann",
                                                    "placement": placement, "k": 2})
    assert answer.json()["variant"] == "batch" and answer.json()["model"] == shop["model"]
    assert ids(answer)[0] == shop["items"][1]


def test_an_apps_set_serves_under_its_routes_only(services, tmp_path, run):
    with TestClient(create_app(apps_settings(services))) as api:
        name, made = new_app(api)
        read = as_key(made["read"])
        base = Wiring.connect(apps_settings(services))
        try:
            import_set(base.for_app(name), tmp_path, "nightly",
                       list_rows(["ann"], ["tea", "cup", "pot"], k=2))
            query = {"user_id": "ann", "model": "lists:nightly"}
            answer = wait_for(lambda: api.get(f"/apps/{name}/recommendations", params=query,
                                              headers=read).json()["model"] == "lists:nightly")
            assert answer
            assert ids(api.get(f"/apps/{name}/recommendations", params=query,
                               headers=read)) == ["tea", "cup"]
            # default has no set of that name
            other = api.get("/recommendations", params=query, headers=PLATFORM)
            assert other.status_code == 422 and "no list set 'nightly'" in other.text
        finally:
            base.close()


def test_the_fresh_blend_adds_neighbours_of_what_the_user_touched_since(
        client, api_settings, run, tmp_path):
    """ann's list was made before she viewed ``x``; others viewed ``x`` then ``y``: with
    ``--blend`` her list takes ``y`` in, without it her list stays as imported."""
    listed = [f"{run}-l{n}" for n in range(4)]
    x, y = f"{run}-x", f"{run}-y"
    wiring = Wiring.connect(api_settings.model_copy(update={"lists_refresh_seconds": 0.2}))
    try:
        import_set(wiring, tmp_path, f"{run}-b", [{"user_id": f"{run}-ann", "items": listed}],
                   blend=0.5)
        import_set(wiring, tmp_path, f"{run}-p", [{"user_id": f"{run}-ann", "items": listed}])
        events = [{"user_id": f"{run}-o{n}", "item_id": item, "event_type": "view"}
                  for n in range(3) for item in (x, y)]
        events.append({"user_id": f"{run}-ann", "item_id": x, "event_type": "view"})
        assert client.post("/events", json=events).status_code == 202

        def blended() -> list[str]:
            return ids(client.get("/recommendations", params={
                "user_id": f"{run}-ann", "model": f"lists:{run}-b", "k": 5}))

        assert wait_for(lambda: y in blended(), timeout=60), blended()
        assert set(blended()) == {*listed, y}
        plain = ids(client.get("/recommendations", params={
            "user_id": f"{run}-ann", "model": f"lists:{run}-p", "k": 4}))
        assert plain == listed
    finally:
        wiring.list_sets().delete(f"{run}-b")
        wiring.list_sets().delete(f"{run}-p")
        wiring.close()


def test_similar_item_lists_serve_the_items_similar_route(client, api_settings, run,
                                                          tmp_path, shop):
    """A set imported with ``--similar`` ranks ``GET /items/{id}/similar?model=lists:NAME``,
    screened like co-occurrence's list (withdrawn f2 and the item itself never show); a
    short list is filled, flagged ``backfill``; an item the set has no list for is ranked
    by co-occurrence, and the answer says so."""
    items = shop["items"]
    model = f"lists:{run}-s"
    wiring = Wiring.connect(api_settings.model_copy(update={"lists_refresh_seconds": 0.2}))
    try:
        report = import_set(wiring, tmp_path, f"{run}-s", [
            {"item_id": items[0], "items": [items[5], items[2], items[0], items[3]]},
            {"item_id": items[1], "items": [items[7]]}], similar=True)
        assert report.item_lists == 2

        def similar(item: str, **params):
            answer = client.get(f"/items/{item}/similar", params={"model": model, **params})
            assert answer.status_code == 200, answer.text
            return answer.json()

        assert wait_for(lambda: similar(items[0], k=2)["model"] == model, timeout=30)
        answer = similar(items[0], k=2)
        assert [(item["item_id"], item["backfill"]) for item in answer["items"]] == [
            (items[5], False), (items[3], False)]
        short = similar(items[1], k=3)
        assert short["model"] == model and short["items"][0] == {
            "item_id": items[7], "score": 1.0, "backfill": False}
        assert all(item["backfill"] for item in short["items"][1:])
        assert items[1] not in {item["item_id"] for item in short["items"]}
        unlisted = similar(items[4])
        assert unlisted["model"] == "cooccurrence"
        plain = client.get(f"/items/{items[0]}/similar").json()
        assert plain["model"] == "cooccurrence"
        refused = client.get(f"/items/{items[0]}/similar", params={"model": "mf"})
        assert refused.status_code == 422 and "'mf' ranks no similar items" in refused.text
        missing = client.get(f"/items/{items[0]}/similar",
                             params={"model": f"lists:{run}-nope"})
        assert missing.status_code == 422 and f"no list set '{run}-nope'" in missing.text
    finally:
        wiring.list_sets().delete(f"{run}-s")
        wiring.close()
