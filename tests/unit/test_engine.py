"""The Engine's contract on the in-memory store: what it learns from a batch, and what
each model recommends from it (the worker and the API run the same code on Redis)."""

from __future__ import annotations

import pytest

from recommender.base import MODELS, Interaction
from recommender.engine import Engine, EngineConfig
from recommender.filters import parse
from recommender.store import InMemoryStore

NOW = 1_800_000_000.0


def _taste(users: int = 12, seed: int = 3) -> list[Interaction]:
    """Two groups of users, each touching its own items: ``a-*`` or ``b-*``, plus a
    ``hit`` everybody views."""
    events = []
    for n in range(users):
        group = "a" if n % 2 == 0 else "b"
        user = f"{group}-user-{n}"
        for step, item in enumerate([f"{group}-item-{(n + i) % 5}" for i in range(4)]):
            events.append(Interaction(user, item, NOW - 3600 + 60 * n + step, 1.0, "view"))
        events.append(Interaction(user, "hit", NOW - 60 + n, 2.0, "click"))
    return sorted(events, key=lambda e: e.timestamp)


def _engine(events: list[Interaction] | None = None, seed: int = 0, **config) -> Engine:
    engine = Engine(InMemoryStore(seed=seed), EngineConfig(seed=seed, mf_dim=8, **config))
    engine.learn_many(_taste() if events is None else events, {"events:0": 99})
    return engine


def test_a_batch_is_one_update_with_its_offsets():
    engine = _engine()
    assert engine.store.events_applied() == len(_taste())
    assert engine.store.applied_offsets(["events:0", "events:1"]) == {"events:0": 99}


@pytest.mark.parametrize("model", MODELS)
def test_every_model_answers_k_items_never_ones_the_user_touched(model):
    engine = _engine()
    touched = {e.item_id for e in _taste() if e.user_id == "a-user-0"}
    result = engine.recommend("a-user-0", 3, NOW, model)
    items = [item for item, _ in result.items]
    assert len(items) == len(set(items)) <= 3
    assert not touched & set(items)
    assert all(score == score for _, score in result.items)  # finite, not NaN


@pytest.mark.parametrize("model", MODELS)
def test_an_unknown_user_gets_popular_items(model):
    result = _engine().recommend("nobody", 3, NOW, model)
    assert result.model == "popular"
    assert result.items[0][0] == "hit"  # the most weighted item


def _with_strangers() -> Engine:
    """``_taste`` plus ``z``, in a category of its own, that only a loner touched (nobody's
    neighbour), and a critic whose one event is a dislike (known, but without factors)."""
    engine = Engine(InMemoryStore(seed=0), EngineConfig(seed=0, mf_dim=8))
    engine.store.put_items([("z", {"item_id": "z", "categories": ["z"]})])
    engine.learn_many(_taste() + [Interaction("loner", "z", NOW - 30, 1.0, "view"),
                                  Interaction("critic", "a-item-0", NOW - 20, -1.0, "dislike")])
    return engine


@pytest.mark.parametrize("model", ["cooccurrence", "mf", "hybrid"])
def test_a_known_users_list_is_the_models_own_then_flagged_popular_backfill(model):
    engine = _with_strangers()
    popular = {item for item, _ in engine.popular(20, NOW)}
    only_z = parse('INCLUDE ItemID WHERE Items.categories IN ("z")').bind()
    nothing = parse('INCLUDE ItemID WHERE Items.categories IN ("none")').bind()
    for user in ("a-user-0", "critic"):
        result = engine.recommend(user, 10, NOW, model)
        assert result.model == model, user  # never "popular" for a user it knows
        items = [item for item, _ in result.items]
        own = [item for item in items if item not in result.backfill]
        assert items[:len(own)] == own  # the model's own first
        assert result.backfill <= popular
        assert all(score == 0.0 for item, score in result.items if item in result.backfill)
        filtered = engine.recommend(user, 10, NOW, model, item_filter=only_z)
        assert filtered.model == model and [item for item, _ in filtered.items] == ["z"]
        empty = engine.recommend(user, 10, NOW, model, item_filter=nothing)
        assert empty.model == model and empty.items == []
    # The critic has no positive event and no factors: every item is backfill.
    critic = engine.recommend("critic", 10, NOW, model)
    assert critic.backfill == {item for item, _ in critic.items} and len(critic.items) == 10
    # Nobody touched z together with another item: co-occurrence can only backfill it.
    filtered = engine.recommend("a-user-0", 10, NOW, "cooccurrence", item_filter=only_z)
    assert filtered.backfill == {"z"}


@pytest.mark.parametrize("model", MODELS)
def test_popular_names_only_a_user_nobody_knows_and_is_never_backfill(model):
    engine = _with_strangers()
    stranger = engine.recommend("nobody", 5, NOW, model)
    assert stranger.model == "popular" and not stranger.backfill and len(stranger.items) == 5
    assert not engine.recommend("a-user-0", 5, NOW, "popular").backfill


def test_cooccurrence_recommends_what_the_users_group_touched_first():
    # a-user-0 touched a-item-0 to 3: their group's one other item leads, popular ones
    # fill the rest of the list.
    result = _engine().recommend("a-user-0", 5, NOW, "cooccurrence")
    assert result.model == "cooccurrence"
    assert result.items[0][0] == "a-item-4"


def test_similar_items_come_from_co_occurrence():
    similar = [item for item, _ in _engine().similar("a-item-1", 10, NOW)]
    assert similar and "a-item-1" not in similar
    assert all(item.startswith("a-") or item == "hit" for item in similar)


class _SimilarLists:
    """An imported set of similar-item lists, as streamrec.storage.list_sets serves one."""

    def __init__(self, lists):
        self.lists = lists

    def rank(self, reads, n):
        return None

    def similar(self, item_id):
        return self.lists.get(item_id)


def test_similar_items_come_from_an_imported_list_set():
    engine = _engine()
    engine.external_models = lambda model: (
        _SimilarLists({"a-item-1": [("b-item-0", 0.9), ("a-item-1", 0.8), ("b-item-2", 0.7)]})
        if model == "lists:x" else None)
    listed = engine.similar_items("a-item-1", 2, NOW, model="lists:x")
    assert listed.model == "lists:x" and not listed.backfill
    assert listed.items == [("b-item-0", 0.9), ("b-item-2", 0.7)]  # never the item itself
    filled = engine.similar_items("a-item-1", 4, NOW, model="lists:x")
    assert filled.items[:2] == listed.items
    assert len(filled.items) == 4 and filled.backfill == {item for item, _ in filled.items[2:]}
    assert all(score == 0.0 for _, score in filled.items[2:])
    unlisted = engine.similar_items("a-item-2", 3, NOW, model="lists:x")
    assert unlisted == engine.similar_items("a-item-2", 3, NOW)
    assert unlisted.model == "cooccurrence"
    for model in ("lists:nope", "mf"):
        with pytest.raises(ValueError, match="ranks no similar items"):
            engine.similar_items("a-item-1", 3, NOW, model=model)


def test_the_same_seed_gives_the_same_lists():
    first, second = _engine(seed=5), _engine(seed=5)
    for model in MODELS:
        assert (first.recommend("b-user-1", 4, NOW, model)
                == second.recommend("b-user-1", 4, NOW, model))


def test_an_unknown_model_or_blend_parameter_is_refused():
    engine = _engine()
    with pytest.raises(ValueError, match="model"):
        engine.recommend("a-user-0", 3, NOW, "nearest")
    with pytest.raises(ValueError, match="params"):
        engine.recommend("a-user-0", 3, NOW, "hybrid", {"hybrid_magic": 1.0})


def test_popular_ranks_by_decayed_weight():
    events = [Interaction(f"u{n}", "old", NOW - 30 * 86400, 8.0, "purchase") for n in range(3)]
    events += [Interaction(f"u{n}", "new", NOW - 60, 1.0, "view") for n in range(3)]
    ranked = [item for item, _ in _engine(events, half_life=86400.0).popular(2, NOW)]
    assert ranked == ["new", "old"]  # a month at a 1-day half-life outweighs 8x the weight


def test_popularity_forgets_at_its_own_half_life_and_co_occurrence_at_its_own():
    day = 86400.0
    engine = Engine(InMemoryStore(), EngineConfig(mf_dim=8, half_life=3650 * day,
                                                  popularity_half_life=day))
    engine.learn_many([Interaction("u", "old", NOW - 2 * day, 1.0, "view"),
                       Interaction("u", "new", NOW - 2 * day + 1, 1.0, "view")])
    engine.learn_many([Interaction("v", "new", NOW, 1.0, "view")])
    popular = dict(engine.popular(2, NOW))
    # two days are two popularity half-lives: the older view of "new" counts a quarter
    assert popular["old"] == pytest.approx(0.25, rel=1e-6)
    assert popular["new"] == pytest.approx(1.25, rel=1e-5)
    # the pair learned two days ago has barely faded at a 10-year half-life
    similar = dict(engine.similar("old", 1, NOW))
    assert similar["new"] == pytest.approx(1 / 2 ** 0.5 * 2 ** (-2 / 3650), rel=1e-3)


def test_a_batchs_tally_trials_count_what_each_trial_alone_counts():
    # The trials of a batch read the store together (Engine._trial_reads): each must rank
    # what it ranks when tried alone on the same state, also for two events of one user at
    # one time and a recent item nobody else touched (its content neighbours are ranked at
    # the trial's own length, not cut from the fusion's longer list).
    engine = _engine(hybrid_learning_sample=100)
    # Many items alike by content, that nobody touched: a tie longer than any list (the
    # catalog's order is not the names' order, which breaks ties in a list).
    engine.store.put_items([(item, {"item_id": item, "categories": ["c"]})
                            for item in ["a-only", *(f"c-{n:02}" for n in reversed(range(40)))]])
    engine.learn_many([Interaction("c-user", "a-only", NOW + 1, 1.0, "view")])
    engine.refresh()
    users = [event.user_id for event in _taste()[::5]]
    batch = [Interaction(user, item, NOW + 10 + n, 1.0, "view") for n, (user, item) in
             enumerate((user, item) for user in users for item in ["hit", "a-item-3", "b-item-1"])]
    batch += [Interaction("c-user", item, NOW + 100, 1.0, "view")
              for item in ["c-00", "c-01", "c-39", "a-item-4"]]
    engine._tally_credit = 0.0
    together = engine._try_sources(batch)
    alone: dict[str, int] = {}
    for event in batch:
        engine._tally_credit = 0.0
        for name, count in engine._try_sources([event]).items():
            alone[name] = alone.get(name, 0) + count
    assert together == alone
    assert together["trials"] == len(batch)


def test_only_an_engine_that_asks_and_then_learns_keeps_its_requests_reads():
    # A serving engine never learns in its process: it keeps nothing of its requests (256
    # kept reads were freed at once, a pause of tens of ms on 100,000 items). A replay's
    # engine keeps them for its next batch's tally trials, which find the same lists.
    users = [event.user_id for event in _taste()[::3]]
    for keep in (False, True):
        engine = _engine(hybrid_learning_sample=100)
        engine.keep_reads = keep
        for user in users:
            engine.recommend(user, 3, NOW + 5, "hybrid")
        assert len(engine._recent_reads) == (len(set(users)) if keep else 0)
    tallies = []
    for keep in (False, True):
        engine = _engine(hybrid_learning_sample=100)
        engine.keep_reads = keep
        batch = [Interaction(user, "hit", NOW + 5, 1.0, "view") for user in dict.fromkeys(users)]
        for event in batch:
            engine.recommend(event.user_id, 3, event.timestamp, "hybrid")
        engine._tally_credit = 0.0
        tallies.append(engine._try_sources(batch))
    assert tallies[0] == tallies[1] and tallies[0]["trials"] == len(set(users))
