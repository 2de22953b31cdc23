"""Cold start through the engine on the in-memory store: new items get content
neighbours, a newcomer's chosen category, exploration of new items."""

from __future__ import annotations

from recommender.base import Interaction
from recommender.engine import Engine, EngineConfig
from recommender.store import InMemoryStore

NOW = 1_800_000_000.0
CATALOG = {
    "alien": {"categories": ["sci-fi"], "properties": {"title": "Alien"}},
    "aliens": {"categories": ["sci-fi"], "properties": {"title": "Aliens"}},
    "alien3": {"categories": ["sci-fi"], "properties": {"title": "Alien 3"},
               "created_at": NOW - 3600},  # new
    "heat": {"categories": ["crime"], "properties": {"title": "Heat"}},
    "ronin": {"categories": ["crime"], "properties": {"title": "Ronin"},
              "created_at": NOW - 60},  # new
    "old": {"categories": ["crime"], "properties": {"title": "Old"},
            "created_at": NOW - 30 * 86400},  # created long ago
}


def engine(**config) -> Engine:
    store = InMemoryStore()
    store.put_items([(item, {"item_id": item, **doc}) for item, doc in CATALOG.items()])
    built = Engine(store, EngineConfig(epoch=0.0, **config))
    # Popularity and co-occurrence among the old items only: nobody touched the new ones.
    built.learn_many([Interaction(user, item, NOW - 1000 + n, 1.0) for n, (user, item) in
                      enumerate([("u1", "alien"), ("u1", "aliens"), ("u2", "heat"),
                                 ("u2", "old"), ("u3", "heat")])])
    return built


def test_a_new_item_gets_neighbours_from_its_content():
    assert engine().similar("alien", 5, NOW)[0][0] == "aliens"  # co-occurrence first
    similar = [item for item, _ in engine().similar("alien3", 3, NOW)]
    assert similar[:2] == ["alien", "aliens"]  # nobody touched it: its content decides


def test_content_neighbours_follow_the_co_occurrence_ones_flagged_as_backfill():
    touched = engine().similar_items("alien", 3, NOW)
    assert touched.model == "cooccurrence"
    assert touched.items[0][0] == "aliens" and "aliens" not in touched.backfill
    assert [item for item, _ in touched.items[1:]] == sorted(touched.backfill, key=[
        item for item, _ in touched.items].index) and touched.backfill  # content, after
    new = engine().similar_items("alien3", 3, NOW)
    assert new.backfill == {item for item, _ in new.items}  # content only


def test_a_user_of_a_new_item_gets_its_content_neighbours_not_just_popular():
    cold = engine()
    cold.learn_many([Interaction("newbie", "alien3", NOW - 10, 1.0)])
    result = cold.recommend("newbie", 2, NOW, model="cooccurrence")
    assert result.model == "cooccurrence"
    assert [item for item, _ in result.items] == ["alien", "aliens"]
    off = engine(content_weight=0.0)
    off.learn_many([Interaction("newbie", "alien3", NOW - 10, 1.0)])
    unaided = off.recommend("newbie", 2, NOW, model="cooccurrence")
    # Known, but co-occurrence has nothing: its list is popular backfill, flagged.
    assert unaided.model == "cooccurrence"
    assert unaided.backfill == {item for item, _ in unaided.items} and unaided.items


def test_a_newcomer_gets_the_category_they_chose_first():
    result = engine().recommend("stranger", 3, NOW, model="hybrid", category="sci-fi")
    assert result.model == "popular"
    assert [item for item, _ in result.items][:2] == ["aliens", "alien"]  # then the rest
    assert len(result.items) == 3


def test_exploration_gives_new_items_the_last_places():
    explored = engine(exploration_share=0.5)
    result = explored.recommend("u1", 4, NOW, model="cooccurrence")
    items = [item for item, _ in result.items]
    assert len(items) == 4 and set(items[2:]) <= {"alien3", "ronin"}
    assert items[2] == "alien3"  # the new item most like u1's latest ("aliens") first
    assert "old" not in items[2:]  # created a month ago: not new
    plain = [i for i, _ in engine().recommend("u1", 4, NOW, model="cooccurrence").items]
    assert not {"alien3", "ronin"} & set(plain)  # no exploration, no new items
    popular = explored.recommend("u1", 4, NOW, model="popular")
    assert not {"alien3", "ronin"} & {item for item, _ in popular.items}
