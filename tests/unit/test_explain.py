"""``recommender.explain``: every model's list with why each item is there, on the in-memory
store; the reasons add up to the scores the lists carry."""

from __future__ import annotations

import pytest

from recommender.base import MODELS, Interaction
from recommender.engine import Engine, EngineConfig
from recommender.explain import explain
from recommender.store import InMemoryStore

NOW = 1_800_000_000.0


def _events(users: int = 10) -> list[Interaction]:
    """Two groups touching their own items in order, and a ``hit`` everybody clicks."""
    events = []
    for n in range(users):
        group = "a" if n % 2 == 0 else "b"
        for step in range(4):
            events.append(Interaction(f"{group}-user-{n}", f"{group}-item-{(n + step) % 5}",
                                      NOW - 3600 + 60 * n + step, 1.0, "view"))
        events.append(Interaction(f"{group}-user-{n}", "hit", NOW - 60 + n, 2.0, "click"))
    return sorted(events, key=lambda event: event.timestamp)


@pytest.fixture(scope="module")
def engine() -> Engine:
    engine = Engine(InMemoryStore(seed=1), EngineConfig(seed=1, mf_dim=8))
    engine.learn_many(_events())
    return engine


def test_every_model_is_listed_as_the_engine_serves_it(engine):
    found = explain(engine, "a-user-0", 4, NOW)
    assert set(found["lists"]) == set(MODELS)
    for model in MODELS:
        served = engine.recommend("a-user-0", 4, NOW, model)
        assert [(i["item_id"], i["score"]) for i in found["lists"][model]["items"]] == \
            [(item, pytest.approx(score)) for item, score in served.items]


def test_the_history_is_newest_first_with_event_types(engine):
    history = explain(engine, "a-user-0", 4, NOW)["history"]
    assert history[0] == {"item_id": "hit", "time": pytest.approx(NOW - 60), "positive": True,
                          "event_types": ["click"]}
    assert [entry["time"] for entry in history] == sorted(
        (entry["time"] for entry in history), reverse=True)


def test_cooccurrence_reasons_name_the_recent_items_and_add_up_to_the_score(engine):
    found = explain(engine, "a-user-0", 4, NOW)
    recent = set(found["recent"])
    items = found["lists"]["cooccurrence"]["items"]
    assert items
    for item in items:
        why = item["why"]["cooccurrence"]
        assert why["from"] and {part["item_id"] for part in why["from"]} <= recent
        assert why["score"] == pytest.approx(item["score"])
        amounts = [part["amount"] for part in why["from"]]
        assert amounts == sorted(amounts, reverse=True)


def test_mf_and_popularity_reasons_are_the_lists_scores(engine):
    found = explain(engine, "a-user-0", 4, NOW)
    assert found["has_factors"]
    for item in found["lists"]["mf"]["items"]:
        assert item["why"]["mf"]["score"] == pytest.approx(item["score"], rel=1e-4)
    stranger = explain(engine, "nobody", 3, NOW)["lists"]["popular"]["items"]
    assert stranger[0]["item_id"] == "hit"
    for rank, item in enumerate(stranger, start=1):
        assert item["why"]["popular"] == {"score": pytest.approx(item["score"]), "rank": rank}


def test_the_hybrids_fusion_points_add_up_to_its_score(engine):
    found = explain(engine, "a-user-0", 4, NOW)
    assert found["fusion"]["leader"] == "hybrid"  # nothing tallied yet: the fusion leads
    for item in found["lists"]["hybrid"]["items"]:
        sources = item["why"]["hybrid"]["sources"]
        assert sum(source["points"] for source in sources.values()) == pytest.approx(
            item["score"])
        assert any(source["rank"] for source in sources.values())


def test_an_unknown_user_has_no_history_and_popular_lists(engine):
    found = explain(engine, "nobody", 3, NOW)
    assert found["history"] == [] and found["recent"] == [] and not found["has_factors"]
    assert {listed["model"] for listed in found["lists"].values()} == {"popular"}
    for listed in found["lists"].values():
        for item in listed["items"]:
            assert item["why"]["cooccurrence"] == {"score": 0, "rank": None, "from": [],
                                                   "content": 0.0}


def test_what_content_adds_for_a_recent_item_nobody_else_touched_is_named():
    engine = Engine(InMemoryStore(seed=1), EngineConfig(seed=1, mf_dim=8))
    engine.store.put_items([
        ("new", {"item_id": "new", "categories": ["tea"], "properties": {"title": "Tea"}}),
        ("kin", {"item_id": "kin", "categories": ["tea"], "properties": {"title": "Tea"}})])
    engine.learn_many(_events() + [Interaction("loner", "new", NOW - 30, 1.0, "view"),
                                   Interaction("other", "kin", NOW - 20, 1.0, "view")])
    found = explain(engine, "loner", 4, NOW)
    kin = next(item for item in found["lists"]["cooccurrence"]["items"]
               if item["item_id"] == "kin")
    why = kin["why"]["cooccurrence"]
    assert why["from"] == [] and why["content"] > 0
    assert why["score"] == pytest.approx(kin["score"])
