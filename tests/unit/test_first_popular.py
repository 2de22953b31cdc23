"""The popular prefix that rides in a request's first read (``Engine._first_popular``)
changes no list: the same lists as an engine whose store reads popularity on its own, for
every model, filter, chosen category and history length, and later rounds (past the
prefix) read as before."""

from __future__ import annotations

import random

import pytest

from recommender.base import MODELS, Interaction
from recommender.engine import Engine, EngineConfig
from recommender.filters import parse
from recommender.store import FirstRead, InMemoryStore

NOW = 1_800_000_000.0


class _PopularApart(InMemoryStore):
    """Popularity read on its own only, as before it rode in the first read; counts the
    reads of it."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.popular_reads = 0

    def first_read(self, user_id, limit, factors=True, popular=0) -> FirstRead:
        return super().first_read(user_id, limit, factors)

    def popular(self, k, category=None):
        self.popular_reads += 1
        return super().popular(k, category)


class _Counted(InMemoryStore):
    """Counts the reads of popularity apart from the first read."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.popular_reads = 0

    def first_read(self, user_id, limit, factors=True, popular=0) -> FirstRead:
        found = super().first_read(user_id, limit, factors, popular)
        self.popular_reads -= popular > 0  # its own call of popular()
        return found

    def popular(self, k, category=None):
        self.popular_reads += 1
        return super().popular(k, category)


def _events(users: int = 40, items: int = 60, seed: int = 4) -> list[Interaction]:
    """Skewed popularity (low item numbers are popular), users of 0 to 12 events."""
    rng = random.Random(seed)
    events = []
    for n in range(users):
        for step in range(rng.randrange(13)):
            item = f"item-{min(int(rng.expovariate(1 / 12)), items - 1)}"
            weight = -1.0 if rng.random() < 0.05 else 1.0
            events.append(Interaction(f"user-{n}", item, NOW - 5000 + 100 * n + step,
                                      weight, "view"))
    return sorted(events, key=lambda e: e.timestamp)


def _engines(**config) -> tuple[Engine, Engine]:
    """Two engines on the same state: the first's store brings the prefix in its first
    read, the second's does not. A third of the ten most popular items are withdrawn, so
    that lists read more than one round."""
    engines = []
    for store in (_Counted(), _PopularApart()):
        engine = Engine(store, EngineConfig(seed=0, mf_dim=8, **config))
        store.put_items([(f"item-{n}", {"item_id": f"item-{n}",
                                        "categories": [f"c{n % 3}"]}) for n in range(60)])
        engine.learn_many(_events())
        store.put_items([(f"item-{n}", {"item_id": f"item-{n}", "available": False,
                                        "categories": [f"c{n % 3}"]}) for n in (0, 2, 5, 7)])
        engines.append(engine)
    return engines[0], engines[1]


FILTERS = [None, 'EXCLUDE ItemID WHERE Items.categories IN ("c1")',
           'INCLUDE ItemID WHERE Items.categories IN ("c2")']


@pytest.mark.parametrize("history_length", [200, 2])
@pytest.mark.parametrize("text", FILTERS)
def test_the_lists_are_those_read_without_the_prefix(history_length, text):
    folded, apart = _engines(history_length=history_length)
    item_filter = None if text is None else parse(text).bind()
    for n in [*range(0, 40, 3), 99]:  # user-99: nobody knows them
        for k in (1, 5, 20):
            for category in (None, "c0"):
                asked = dict(user_id=f"user-{n}", k=k, now=NOW, item_filter=item_filter,
                             category=category)
                for model in MODELS:
                    assert (folded.recommend(model=model, **asked)
                            == apart.recommend(model=model, **asked)), (model, asked)
                assert (folded.recommend_many(models=MODELS, **asked)
                        == apart.recommend_many(models=MODELS, **asked)), asked


@pytest.mark.parametrize("model", ["popular", "hybrid"])
def test_the_first_round_ranks_from_the_first_read(model):
    folded, apart = _engines()
    for engine in (folded, apart):
        engine.store.popular_reads = 0
        for n in range(40):
            engine.recommend(f"user-{n}", 5, NOW, model)
    assert folded.store.popular_reads == 0  # every round within the prefix
    assert apart.store.popular_reads > 0


@pytest.mark.parametrize("model", ["cooccurrence", "mf"])
def test_models_that_seldom_read_popularity_get_no_prefix(model):
    folded, _ = _engines()
    assert folded._first_popular({model}, 5, None, None, 0) == 0
    assert folded._first_popular({model, "hybrid"}, 5, None, None, 0) > 0


def test_a_prefix_the_screen_exhausts_reads_on_as_before():
    """With a short history bound the prefix is short: screening away most of it reads
    the next rounds from the store."""
    folded, _ = _engines(history_length=1)
    folded.store.popular_reads = 0
    only_c2 = parse('INCLUDE ItemID WHERE Items.categories IN ("c2", "c1")').bind()
    # Categories ranked from their own popularity: the overall prefix is not read first.
    assert folded._first_popular({"popular"}, 5, only_c2, None, 0) == 0
    listed = folded.recommend("user-1", 12, NOW, "popular")
    assert len(listed.items) == 12
    assert folded.store.popular_reads >= 1
