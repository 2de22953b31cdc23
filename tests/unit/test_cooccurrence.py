from __future__ import annotations

import math

from recommender.base import Interaction
from recommender.decay import ForwardDecay
from recommender.engine import Engine, EngineConfig
from recommender.store import InMemoryStore


def test_hand_computed_cosine():
    # a-b co-occur for two users, a-c for one; N(a)=3, N(b)=2, N(c)=1 (no decay).
    engine = Engine(InMemoryStore(), EngineConfig(half_life=1e12, epoch=0.0))
    engine.learn_many([
        Interaction("u1", "a", 1, 1.0), Interaction("u1", "b", 2, 1.0),
        Interaction("u2", "a", 3, 1.0), Interaction("u2", "b", 4, 1.0),
        Interaction("u3", "a", 5, 1.0), Interaction("u3", "c", 6, 1.0),
    ])
    similar = dict(engine.similar("a", 5))
    assert math.isclose(similar["b"], 2 / math.sqrt(3 * 2), rel_tol=1e-9)
    assert math.isclose(similar["c"], 1 / math.sqrt(3 * 1), rel_tol=1e-9)


def test_seen_items_are_excluded_and_unknown_users_get_popular():
    engine = Engine(InMemoryStore(), EngineConfig(epoch=0.0))
    engine.learn_many([Interaction("u1", "a", 1, 1.0), Interaction("u1", "b", 2, 1.0),
                       Interaction("u2", "a", 3, 1.0), Interaction("u2", "b", 4, 1.0)])
    assert engine.recommend("u1", 5, now=5).items == []
    assert engine.recommend("stranger", 1, now=5).model == "popular"


def test_forward_decay_halves_per_half_life():
    decay = ForwardDecay(half_life=60.0)
    assert decay.value_at(decay.factor(0.0, reference=0.0), landmark=0.0, now=60.0) == 0.5
    assert decay.factor(0.0, reference=60.0) == 0.5
