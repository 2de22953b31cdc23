"""The hybrid's blend: rank fusion, the tally that weights it, and the lists of several
models read at once being exactly the lists each would give alone."""

from __future__ import annotations

import dataclasses

import pytest

from recommender.base import MODELS, Interaction
from recommender.blend import Tally, count_hits, fuse
from recommender.engine import Engine, EngineConfig
from recommender.evaluation import batches
from recommender.store import InMemoryStore, StateUpdate
from recommender.weights import EventWeights
from streamrec.sim.simulator import synthetic

WEIGHTS = EventWeights({"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0})


def _events(regime: str, count: int) -> list[Interaction]:
    return [Interaction(e["user_id"], e["item_id"], e["timestamp"],
                        WEIGHTS.weight(e["event_type"], None), e["event_type"])
            for e in synthetic(regime, count, seed=5)]


def _replay(config: EngineConfig, events: list[Interaction], seconds: float = 60.0) -> Engine:
    engine = Engine(InMemoryStore(), config)
    for batch in batches(events, seconds, 500):
        engine.learn_many(batch)
    return engine


def test_fusion_rewards_agreement_and_follows_weights():
    sources = {"a": ["x", "y", "z"], "b": ["y", "x"]}
    assert [item for item, _ in fuse(sources, {"a": 1.0, "b": 1.0}, 60.0)][:2] == ["x", "y"]
    assert [item for item, _ in fuse(sources, {"a": 0.1, "b": 1.0}, 60.0)][0] == "y"
    assert fuse(sources, {"a": 0.0, "b": 0.0}, 60.0) == []


def test_the_tally_weighs_sources_by_their_hit_rate():
    counts: dict[str, int] = {}
    for item, tops in [("a", {"cooccurrence": ["a"], "mf": ["b"], "popular": ["c"]})] * 50:
        for name, count in count_hits(tops, item).items():
            counts[name] = counts.get(name, 0) + count
    assert counts == {"trials": 50, "hits:cooccurrence": 50}
    factors = Tally(counts, exponent=2.0).factors()
    assert factors["cooccurrence"] == 1.0 and factors["mf"] < 0.001
    assert Tally(counts, exponent=0.0).factors() == {"cooccurrence": 1.0, "mf": 1.0,
                                                     "popular": 1.0}


def test_the_worker_tallies_its_sources_before_learning_a_batch():
    engine = _replay(EngineConfig(hybrid_learning_share=1.0, hybrid_learning_sample=4),
                     _events("sessions", 3000))
    tally = engine.store.blend_tally()
    assert 0 < tally["trials"] <= 4 * len(list(batches(_events("sessions", 3000), 60.0, 500)))
    # on sessions co-occurrence finds what the others do not: the blend follows it
    assert tally["hits:cooccurrence"] > 5 * tally.get("hits:mf", 0)
    factors = engine.tally.factors()
    assert factors["cooccurrence"] == 1.0 and factors["popular"] < 0.1
    off = _replay(EngineConfig(hybrid_learning_sample=0), _events("sessions", 3000))
    assert off.store.blend_tally() == {}


@pytest.mark.parametrize("seconds", [1.0, 60.0])
def test_the_tally_tries_a_share_of_the_events_whatever_the_batches(seconds):
    events = _events("stable", 3000)
    positives = sum(event.weight > 0 for event in events)
    engine = _replay(EngineConfig(hybrid_learning_share=0.1, hybrid_learning_sample=10**6),
                     events, seconds)
    # events of users with no history before their batch are skipped (every model gives
    # them the same popular items)
    assert 0.06 * positives < engine.store.blend_tally()["trials"] <= 0.1 * positives + 1


@pytest.mark.parametrize("regime", ["stable", "sessions"])
def test_lists_read_together_are_the_lists_read_alone(regime):
    events = _events(regime, 4000)
    engine = _replay(EngineConfig(), events)
    users = list(dict.fromkeys(event.user_id for event in events[-400:]))[:40] + ["nobody"]
    now = events[-1].timestamp
    variants = {"blend": {"hybrid_mf": 0.0, "hybrid_popular": 0.5}}
    for user in users:
        together = engine.recommend_many(user, 10, now, MODELS, variants=variants)
        for model in MODELS:
            assert together[model] == engine.recommend(user, 10, now, model), (user, model)
        assert together["blend"] == engine.recommend(user, 10, now, "hybrid",
                                                     variants["blend"])


def test_the_replay_learns_the_same_whether_or_not_lists_were_read_first():
    events = _events("stable", 3000)
    config = dataclasses.replace(EngineConfig(), hybrid_learning_share=1.0,
                                 hybrid_learning_sample=100)
    quiet, asked = Engine(InMemoryStore(), config), Engine(InMemoryStore(), config)
    for batch in batches(events, 60.0, 500):
        for event in batch:  # what the offline evaluation does before each batch
            asked.recommend_many(event.user_id, 10, event.timestamp, MODELS)
        quiet.learn_many(batch)
        asked.learn_many(batch)
    assert quiet.store.blend_tally() == asked.store.blend_tally()


def test_while_one_source_beats_the_fusion_the_hybrid_is_that_source():
    events = _events("stable", 3000)
    engine = _replay(EngineConfig(hybrid_learning_sample=0), events)
    users = list(dict.fromkeys(event.user_id for event in events[-300:]))[:20]
    now = events[-1].timestamp
    fused = [engine.recommend(user, 10, now, "hybrid").items for user in users]
    # a tally where popularity alone hits more often than the fusion
    engine.store.apply(StateUpdate(200, 200, blend={"trials": 100, "hits:popular": 30,
                                                    "hits:hybrid": 20, "hits:mf": 25}))
    engine.refresh()
    assert engine.tally.leader() == "popular"
    for user in users:
        assert ([item for item, _ in engine.recommend(user, 10, now, "hybrid").items]
                == [item for item, _ in engine.recommend(user, 10, now, "popular").items])
    # unless the operator left popularity out of the blend: then the fusion leads again
    assert engine.recommend(users[0], 10, now, "hybrid", {"hybrid_popular": 0.0}).items != (
        engine.recommend(users[0], 10, now, "popular").items)
    engine.store.apply(StateUpdate(200, 200, blend={"trials": 10, "hits:hybrid": 20}))
    engine.refresh()
    assert engine.tally.leader() == "hybrid"
    weights = engine._fusion_weights(engine.config)
    assert weights["mf"] > 0 and weights["popular"] > 0  # a fusion of all three again
    assert [engine.recommend(user, 10, now, "hybrid").items for user in users] != fused


def test_one_weighted_source_fuses_as_the_general_sum_would():
    """The leader alone skips the sum and the sorts: the same list, also when its items
    repeat or its scores tie (a huge rank constant), where the general path takes over."""
    def summed(sources, weights, constant):
        fused: dict[str, float] = {}
        for name, items in sources.items():
            if weights[name] > 0:
                for rank, item in enumerate(items, start=1):
                    fused[item] = fused.get(item, 0.0) + weights[name] / (constant + rank)
        return sorted(fused.items(), key=lambda pair: (-pair[1], pair[0]))

    for items in (["c", "a", "b"], ["c", "a", "c", "b"], []):
        for constant in (60.0, 0.0, 1e20):
            sources = {"cooccurrence": items, "mf": ["a", "z"], "popular": ["b"]}
            weights = {"cooccurrence": 2.0, "mf": 0.0, "popular": -1.0}
            assert fuse(sources, weights, constant) == summed(sources, weights, constant)
