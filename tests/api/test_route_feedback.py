"""Clicks on the lists of ``/popular``, ``/items/{id}/similar`` and ``streamrec export``
are credited, over the session's real Kafka, Redis and worker: each list carries a
``recommendation_id`` and is logged as an impression the way ``/recommendations`` is."""

from __future__ import annotations

import time

import orjson
import redis

from streamrec.data import export as exporting
from streamrec.storage.feedback_store import RedisFeedback
from tests.api.conftest import wait_for


def _seed(client, run: str) -> None:
    """Three users who each viewed the same four items: popular, and neighbours."""
    events = [{"user_id": f"{run}-seed{u}", "item_id": f"{run}-i{i}", "event_type": "view"}
              for u in range(3) for i in range(4)]
    assert client.post("/events", json=events).status_code == 202
    wait_for(lambda: len(client.get(f"/items/{run}-i0/similar").json()["items"]) >= 3)


def _clicks(feedback: RedisFeedback, placement: str) -> int:
    return feedback.variant_counters(placement).get(placement, {}).get("click", 0)


def _click(client, user: str, listed: dict, position: int = 0) -> None:
    click = {"user_id": user, "item_id": listed["items"][position]["item_id"],
             "event_type": "click", "recommendation_id": listed["recommendation_id"]}
    assert client.post("/events", json=click).status_code == 202


def test_clicks_on_popular_and_similar_lists_are_credited(client, run, api_settings):
    _seed(client, run)
    feedback = RedisFeedback(redis.Redis.from_url(api_settings.redis_url),
                             api_settings.redis_prefix)
    before = {name: _clicks(feedback, name) for name in ("popular", "similar")}
    outcomes = feedback.outcomes()

    popular = client.get("/popular", params={"k": 5}).json()  # anonymous: anyone may click
    similar = client.get(f"/items/{run}-i0/similar", params={"user_id": f"{run}-ann"}).json()
    assert len(popular["recommendation_id"]) == 32 and similar["items"]
    assert popular["recommendation_id"] != similar["recommendation_id"]
    _click(client, f"{run}-bob", popular)
    _click(client, f"{run}-ann", similar, position=1)
    _click(client, f"{run}-bob", similar)  # not the user the list was shown to

    assert wait_for(lambda: _clicks(feedback, "popular") > before["popular"]
                    and _clicks(feedback, "similar") > before["similar"], timeout=30)
    assert _clicks(feedback, "popular") == before["popular"] + 1
    assert _clicks(feedback, "similar") == before["similar"] + 1
    assert feedback.variant_counters("similar")["similar"].get("click@1", 0) >= 1
    after = wait_for(lambda: (now := feedback.outcomes()).get("other_user", 0)
                     > outcomes.get("other_user", 0) and now, timeout=30)
    assert after.get("no_impression", 0) == outcomes.get("no_impression", 0)
    feedback.client.close()


def test_route_placements_cannot_be_configured(client):
    config = {"variants": [{"name": "A", "model": "popular"}]}
    for name in ("popular", "similar"):
        answer = client.put(f"/admin/placements/{name}", json=config)
        assert answer.status_code == 422
        assert "reserved" in answer.text


def test_a_click_on_an_exported_list_is_credited(client, run, api_settings, tmp_path):
    _seed(client, run)
    placement = f"mail-{run}"
    config = {"variants": [{"name": "A", "model": "popular"}]}
    assert client.put(f"/admin/placements/{placement}", json=config).status_code == 200
    users = tmp_path / "users.txt"
    users.write_text(f"{run}-seed0\n{run}-carol\n")
    output = tmp_path / "lists.jsonl"
    exporting.run(api_settings, output, users, 3, None, placement, show_progress=False)
    lines = [orjson.loads(line) for line in output.read_bytes().splitlines()]
    assert [line["user_id"] for line in lines] == [f"{run}-seed0", f"{run}-carol"]
    carol = lines[1]
    assert carol["variant"] == "A" and len(carol["recommendation_id"]) == 32

    feedback = RedisFeedback(redis.Redis.from_url(api_settings.redis_url),
                             api_settings.redis_prefix)
    assert feedback.variant_counters(placement)["A"]["impressions"] == 2  # before any worker
    _click(client, f"{run}-carol", carol)
    assert wait_for(lambda: feedback.variant_counters(placement)["A"].get("click"), timeout=30)
    time.sleep(0.5)
    assert feedback.variant_counters(placement)["A"]["click"] == 1
    feedback.client.close()
