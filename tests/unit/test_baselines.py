"""PeriodicEASE (ease-daily) keeps its item-item counts up to date between refits: each
fit must be exactly the fit of every pair counted afresh, as before."""

from __future__ import annotations

import random

import numpy as np
from scipy import sparse

from recommender.baselines import PeriodicEASE
from recommender.batch_models import ease_weights
from tests.factories import interaction


def refit_from_scratch(ease: PeriodicEASE) -> np.ndarray:
    """The weights of ease's last fit's items, counted from every pair it holds."""
    rows = np.frombuffer(ease._pair_rows, np.int64)
    codes = np.frombuffer(ease._pair_codes, np.int64)
    columns = np.full(len(ease._code), -1, np.int64)
    columns[[ease._code[item] for item in ease._items]] = np.arange(len(ease._items))
    found = columns[codes]
    kept = found >= 0
    matrix = sparse.csr_matrix((np.ones(int(kept.sum()), np.float32),
                                (rows[kept], found[kept])),
                               shape=(len(ease._row), len(ease._items)))
    return ease_weights(matrix, ease.regularization)


def test_every_refit_equals_counting_every_pair_again():
    """Days of events whose popular items change (new items arrive and overtake the old
    ones, so the counted set is widened again now and then), with a small cap so that most
    items fall outside a fit: after every refit the weights are bit for bit those of a
    fit from all the pairs."""
    rng = random.Random(3)
    ease = PeriodicEASE(retrain_every=86400.0, regularization=5.0, max_items=8)
    day = 86400.0
    checked = 0
    for n in range(40):
        # Items 0..(10 + n): the newest are the most likely, so the top moves on.
        newest = 10 + n
        batch = [interaction(f"u{rng.randrange(30)}",
                             f"i{min(newest, int(newest * rng.random() ** 0.3))}",
                             n * day + m, 1.0)
                 for m in range(rng.randrange(5, 40))]
        refits = ease.refits
        ease.learn_many(batch)
        if ease.refits > refits:  # a fit of every pair so far
            assert np.array_equal(ease._weights, refit_from_scratch(ease))
            checked += 1
    assert ease.refits == checked >= 20
    # Both ways of counting were exercised: from scratch, and the new pairs added.
    assert 1 < ease.full_counts < ease.refits


def test_recommendations_unchanged_by_incremental_counts():
    """A user's list comes from those weights: the doctest's case, refit twice."""
    ease = PeriodicEASE(retrain_every=10, regularization=1.0)
    ease.learn_many([interaction(u, i, 0.0) for u in "abc" for i in ("x", "y")]
                    + [interaction("d", "x", 0.0), interaction("e", "z", 0.0)])
    ease.learn_many([interaction("e", "z", 20.0)])
    assert ease.recommend("d", 1, now=20.0) == ["y"]
    ease.learn_many([interaction("f", "y", 40.0), interaction("f", "z", 40.0)])
    assert ease.refits == 2
    assert np.array_equal(ease._weights, refit_from_scratch(ease))
