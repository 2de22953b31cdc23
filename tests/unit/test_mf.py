"""Online BPR on a planted structure: two clusters of users, each touching its own items."""

from __future__ import annotations

import numpy as np

from recommender.base import Interaction
from recommender.mf import SMALL_ADD, ItemFactorIndex, OnlineBPR, _add_rows


def planted_batches(batches: int, size: int = 200, seed: int = 3):
    rng = np.random.default_rng(seed)
    clusters = {0: [f"a{i}" for i in range(20)], 1: [f"b{i}" for i in range(20)]}
    t = 0.0
    for _ in range(batches):
        batch = []
        for _ in range(size):
            user = int(rng.integers(40))
            items = clusters[user % 2]
            t += 1.0
            batch.append(Interaction(f"u{user}", items[int(rng.integers(len(items)))], t, 1.0))
        yield batch
    return clusters


def train(model: OnlineBPR, batches: int):
    users, items, losses = {}, {}, []
    pool = [f"a{i}" for i in range(20)] + [f"b{i}" for i in range(20)]
    for batch in planted_batches(batches):
        update = model.learn_many(batch, users, items, pool)
        users.update(update.users)
        items.update(update.items)
        losses.append(update.loss)
    return users, items, losses


def test_loss_decreases_on_a_planted_structure():
    _, _, losses = train(OnlineBPR(dim=8, seed=1), 60)
    # Half the negatives share the positive's cluster and cannot be separated: the floor
    # is well above 0, but the loss must fall far from log 2.
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5])


def test_a_user_gets_their_cluster_back():
    users, items, _ = train(OnlineBPR(dim=8, seed=1), 60)
    index = ItemFactorIndex()
    index.upsert(items)
    for user, cluster in (("u0", "a"), ("u1", "b")):
        top = [item for item, _ in index.top(users[user], k=10)]
        assert all(item.startswith(cluster) for item in top), (user, top)


def test_new_user_moves_toward_what_they_touch():
    model = OnlineBPR(dim=8, seed=1)
    users, items, _ = train(model, 40)
    index = ItemFactorIndex()
    index.upsert(items)
    newcomer = [Interaction("new", f"b{i}", 1e6 + i, 1.0) for i in range(5)]
    vector = {}
    for _ in range(10):
        update = model.learn_many(newcomer, vector, items, list(index.vectors(items)))
        vector.update(update.users)
        items.update(update.items)
    index.upsert(items)
    touched = {event.item_id for event in newcomer}
    top = [item for item, _ in index.top(vector["new"], k=10, exclude=touched)]
    assert sum(item.startswith("b") for item in top) >= 8


def test_same_seed_same_state_and_ids_start_alike_everywhere():
    first, _, _ = train(OnlineBPR(dim=4, seed=5), 3)
    second, _, _ = train(OnlineBPR(dim=4, seed=5), 3)
    assert all(np.array_equal(first[u], second[u]) for u in first)
    assert np.array_equal(OnlineBPR(seed=2).initial("x", "item"),
                          OnlineBPR(seed=2).initial("x", "item"))


def test_index_excludes_and_handles_small_catalogs():
    index = ItemFactorIndex()
    assert index.top(np.ones(3, np.float32), k=5) == []
    index.upsert({"a": np.ones(3, np.float32)})
    assert index.top(np.ones(3, np.float32), k=5, exclude={"a"}) == []
    index.upsert({f"i{n}": np.full(3, n, np.float32) for n in range(3000)})
    assert len(index) == 3001
    assert [item for item, _ in index.top(np.ones(3, np.float32), k=2)] == ["i2999", "i2998"]


def test_index_top_is_the_exact_top_k_with_ties_by_row():
    rng = np.random.default_rng(3)
    # Few distinct values: many ties, at the k-th place too; a catalog large enough for the
    # sampled bound and one small enough for the full partition.
    for size in (50, 20_000):
        index = ItemFactorIndex()
        index.upsert({f"i{n}": np.array([rng.integers(0, 40), 1.0], np.float32)
                      for n in range(size)})
        excluded = {f"i{n}" for n in range(0, size, 7)}
        for k in (1, 10, 100, 1000):
            expected = sorted(
                ((float(index.vectors([f"i{n}"])[f"i{n}"][0]), n) for n in range(size)
                 if f"i{n}" not in excluded),
                key=lambda pair: (-pair[0], pair[1]))[:k]
            got = index.top(np.array([1.0, 0.0], np.float32), k, exclude=excluded)
            assert got == [(f"i{n}", score) for score, n in expected]


def test_index_scores_are_each_items_product_through_growth_and_updates():
    """The matrix is held one column per item: appending past its capacity, overwriting an
    item and reading vectors back keep every item's score its own vector's product."""
    rng = np.random.default_rng(5)
    index, vectors = ItemFactorIndex(), {}
    for round_ in range(4):  # 1,024 columns at first: the later rounds grow the matrix
        batch = {f"i{n}": rng.normal(size=33).astype(np.float32)
                 for n in rng.integers(0, 3000, 900)}
        index.upsert(batch)
        vectors.update(batch)
        assert len(index) == len(vectors), round_
    stored = index.vectors(vectors)
    assert all(np.array_equal(stored[i], vectors[i]) for i in vectors)
    user = rng.normal(size=33).astype(np.float32)
    expected = {i: float(v.astype(np.float64) @ user) for i, v in vectors.items()}
    scores = index.scores(user, exclude={"i1", "i2"})
    ranked = scores.top(len(vectors))
    assert {i for i, _ in ranked} == set(vectors) - {"i1", "i2"}
    assert all(abs(score - expected[i]) <= 1e-5 * (1 + abs(expected[i])) for i, score in ranked)
    assert scores.top(10) == ranked[:10] == index.top(user, 10, exclude={"i1", "i2"})


def test_a_request_scores_the_catalog_once_however_many_rounds_it_screens():
    """A filter that passes 12 items of 400 makes the mf list read further, round after
    round: each round ranks the request's one product again."""
    from recommender.engine import Engine, EngineConfig
    from recommender.filters import parse
    from recommender.store import InMemoryStore

    store = InMemoryStore()
    engine = Engine(store, EngineConfig(epoch=0.0, mf_dim=4))
    store.put_items([(f"i{n}", {"item_id": f"i{n}", "price": float(n)}) for n in range(400)])
    engine.learn_many([Interaction(f"u{n % 40}", f"i{(7 * n) % 400}", 1.0 + n, 1.0)
                       for n in range(4000)])
    products = []
    score = engine.item_index.scores
    engine.item_index.scores = lambda *args: products.append(1) or score(*args)
    rare = parse("INCLUDE ItemID WHERE Items.price < $MAX").bind({"MAX": 12})
    items = engine.recommend("u3", 5, now=5000.0, model="mf", item_filter=rare).items
    assert len(items) == 5 and all(float(i[1:]) < 12 for i, _ in items)
    assert len(products) == 1


def test_index_top_ranks_nan_scores_out():
    index = ItemFactorIndex()
    index.upsert({f"i{n}": np.array([np.nan if n % 3 == 0 else n], np.float32)
                  for n in range(30_000)})
    assert [item for item, _ in index.top(np.ones(1, np.float32), k=3)] == [
        "i29999", "i29998", "i29996"]


def test_rows_add_as_numpy_add_at_does_on_either_side_of_the_small_path():
    """A small step's rows are added one by one: the same float32 sums, in the same order,
    as np.add.at (repeated rows included)."""
    rng = np.random.default_rng(3)
    for count in (1, 8, SMALL_ADD, SMALL_ADD + 1, 200):
        rows = rng.integers(0, 6, count)
        values = rng.normal(size=(count, 5)).astype(np.float32)
        start = rng.normal(size=(6, 5)).astype(np.float32)
        expected, found = start.copy(), start.copy()
        np.add.at(expected, rows, values)
        _add_rows(found, rows, values)
        assert np.array_equal(expected, found)


def test_no_step_size_or_penalty_lets_the_factors_overflow():
    """A step size a hundred times the default, or a huge penalty, overshoots each step
    further than the last; without a bound the vectors reach infinity and NaN. With it
    every vector stays finite and within max_norm (a user's constant slot aside)."""
    for learning_rate, regularization in [(5.0, 0.0), (0.5, 0.002), (0.05, 1000.0)]:
        model = OnlineBPR(dim=8, learning_rate=learning_rate, regularization=regularization,
                          seed=1, max_norm=20.0)
        users, items, _ = train(model, 60)
        vectors = np.array([*items.values()])
        factors = np.array([vector[:-1] for vector in users.values()])
        assert np.isfinite(vectors).all() and np.isfinite(factors).all()
        assert np.linalg.norm(vectors, axis=1).max() <= 20.0 * (1 + 1e-6)
        assert np.linalg.norm(factors, axis=1).max() <= 20.0 * (1 + 1e-6)
    unbounded = OnlineBPR(dim=8, learning_rate=5.0, regularization=0.0, seed=1,
                          max_norm=float("inf"))
    with np.errstate(all="ignore"):
        users, items, _ = train(unbounded, 60)
    assert not np.isfinite(np.array([*items.values()])).all()  # what the bound prevents


def test_the_bound_changes_nothing_where_it_does_not_bind():
    bounded, free = (OnlineBPR(dim=8, seed=1, max_norm=limit) for limit in (100.0, np.inf))
    users, items, losses = train(bounded, 30)
    free_users, free_items, free_losses = train(free, 30)
    assert losses == free_losses
    assert all(np.array_equal(items[i], free_items[i]) for i in items)
    assert all(np.array_equal(users[u], free_users[u]) for u in users)
