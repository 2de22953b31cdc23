"""A repeated event_id teaches no model twice: the store refuses the batch before anything
is written, and the batch is learned again without the repeats (streams.catchup.learn_new),
on the in-memory store the offline replays use."""

from __future__ import annotations

import numpy as np

from recommender.engine import Engine
from recommender.hyperparameters import EngineConfig
from recommender.once import Claim
from recommender.store import InMemoryStore
from streams.catchup import learn_new
from tests.factories import interaction


def test_a_repeated_event_id_trains_mf_and_popularity_once():
    store = InMemoryStore(seed=1)
    engine = Engine(store, EngineConfig(seed=1))
    first = [interaction("ann", "tea", 100.0), interaction("bob", "tea", 100.0)]
    assert learn_new(engine, first, [Claim("e1", "0:1", 100.0), None], {"e:0": 1}) == set()
    factors = store.user_factors(["ann"])["ann"].copy()
    popular = store.popular(5)
    # e1 again (a retry on another partition) and twice within a batch of its own.
    again = [interaction("ann", "tea", 100.0), interaction("cat", "cup", 100.0),
             interaction("cat", "cup", 100.0)]
    dropped = learn_new(engine, again, [Claim("e1", "1:4", 100.0), Claim("e2", "0:2", 100.0),
                                        Claim("e2", "0:3", 100.0)], {"e:0": 3, "e:1": 4})
    assert dropped == {"1:4", "0:3"}
    assert np.array_equal(store.user_factors(["ann"])["ann"], factors)
    assert dict(store.popular(5).scores)["tea"] == dict(popular.scores)["tea"]
    assert store.events_applied() == 3 and store.duplicates_skipped() == 2
