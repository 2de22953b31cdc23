"""Online BPR on a planted structure: two clusters of users, each touching its own items."""

from __future__ import annotations

import numpy as np

from recommender.base import Interaction
from recommender.mf import SMALL_ADD, ItemFactorIndex, OnlineBPR, PrunedScores, _add_rows


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


def _whole(index: ItemFactorIndex, user: np.ndarray, k: int, exclude) -> list:
    """``index.top`` over every column: what the head must give, to the bit."""
    whole = ItemFactorIndex(prune_from=10**9)
    whole.upsert(index.vectors(list(index._ids)))
    return whole.top(user, k, exclude)


def _skewed(rng, size: int, dim: int = 9, start: int = 0) -> dict:
    """Vectors whose lengths vary as an MF catalog's do: a few long, most short."""
    lengths = rng.pareto(1.5, size) + 0.05
    directions = rng.normal(size=(size, dim))
    directions /= np.linalg.norm(directions, axis=1)[:, None]
    return {f"i{start + n}": (directions[n] * lengths[n]).astype(np.float32)
            for n in range(size)}


def test_the_head_gives_the_whole_catalogs_top_k_through_updates():
    """Scored on the longest columns first, a top k is the one every column gives (items,
    scores, order, exclusions), however the catalog changes after the head was chosen: a
    column of the head rewritten, one outside it grown past the head's bound, new items."""
    rng = np.random.default_rng(11)
    index = ItemFactorIndex(prune_from=1000)
    index.upsert(_skewed(rng, 4000))
    pruned = 0
    for round_ in range(6):
        head = index._head
        assert head is not None, round_
        if round_ == 1:  # rewrite half the head's columns, shorter or longer
            items = [index._ids[row] for row in head.rows[::2]]
            index.upsert({i: v * rng.uniform(0.2, 3.0) for i, v in index.vectors(items).items()})
        elif round_ == 2:  # grow columns outside the head past its bound
            outside = [index._ids[row] for row in range(len(index))
                       if row not in set(head.rows.tolist())][:40]
            index.upsert({i: v / np.linalg.norm(v) * head.bound * 1.1
                          for i, v in index.vectors(outside).items()})
        elif round_ == 3:  # new items, some of them long
            index.upsert(_skewed(rng, 700, start=10_000))
        elif round_ == 4:  # a bound grown far past the cut chooses the head again
            index.upsert({"long": np.full(9, 50.0, np.float32)})
            assert index._head is not head and index._head.bound < 50.0
            assert index._rows["long"] in index._head.rows
        for _ in range(20):
            user = rng.normal(size=9).astype(np.float32)
            exclude = {f"i{n}" for n in rng.integers(0, 5000, 200)}
            scores = index.scores(user, exclude)
            for k in (1, 10, 210, 600):
                assert scores.top(k) == _whole(index, user, k, exclude), (round_, k)
                if k == 10:
                    pruned += isinstance(scores, PrunedScores) and scores.pruned
    assert pruned >= 60  # the head answered most: the comparison was not all fallbacks


def test_readers_beside_a_writer_get_whole_lists_of_known_items():
    """Serving reads while the refresh thread writes (the head copied into, its bound
    raised, chosen again, the matrix grown): no reader fails, and each gets k finite
    scores of items the index holds."""
    import threading

    rng = np.random.default_rng(8)
    index = ItemFactorIndex(prune_from=1000)
    index.upsert(_skewed(rng, 3000))
    batches = [_skewed(np.random.default_rng(n), 300, start=int(n * 97 % 4000))
               for n in range(60)]
    failures: list[BaseException] = []
    done = threading.Event()
    rounds = [0, 0]

    def write() -> None:
        for batch in batches:
            index.upsert(batch)
        done.set()

    def read(seed: int) -> None:
        local = np.random.default_rng(seed)
        try:
            while not done.is_set() or rounds[seed] < 20:
                rounds[seed] += 1
                scores = index.scores(local.normal(size=9).astype(np.float32),
                                      {f"i{n}" for n in local.integers(0, 4000, 50)})
                for k in (10, 300):
                    found = scores.top(k)
                    assert len(found) == k and all(np.isfinite(v) for _, v in found)
                    assert all(item in index._rows for item, _ in found)
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)

    readers = [threading.Thread(target=read, args=(n,)) for n in range(2)]
    for thread in readers:
        thread.start()
    write()
    for thread in readers:
        thread.join()
    assert not failures, failures[0]


def test_a_head_whose_columns_shrank_is_chosen_again_after_enough_upserts():
    """Columns of the head shortened to nothing leave its bound as it was (exact still,
    answering for fewer users); REBUILD_UPSERTS upserts later the head is chosen anew."""
    from recommender.mf import REBUILD_UPSERTS

    rng = np.random.default_rng(6)
    index = ItemFactorIndex(prune_from=1000)
    index.upsert(_skewed(rng, 4000))
    head = index._head
    shrunk = {index._ids[row]: np.full(9, 1e-3, np.float32) for row in head.rows}
    index.upsert(shrunk)
    for _ in range(REBUILD_UPSERTS - 2):
        index.upsert({"i0": index.vectors(["i0"])["i0"]})
        assert index._head is head
    user = rng.normal(size=9).astype(np.float32)
    assert index.scores(user).top(10) == _whole(index, user, 10, ())
    index.upsert({"i0": index.vectors(["i0"])["i0"]})
    assert index._head is not head
    assert not set(index._head.rows.tolist()) & {index._rows[item] for item in shrunk}


def test_the_head_falls_back_to_every_column_where_lengths_do_not_differ():
    """Every column as long as every other: no head can answer, and the whole catalog does."""
    rng = np.random.default_rng(2)
    index = ItemFactorIndex(prune_from=100)
    vectors = rng.normal(size=(2000, 5))
    vectors /= np.linalg.norm(vectors, axis=1)[:, None]
    index.upsert({f"i{n}": v.astype(np.float32) for n, v in enumerate(vectors)})
    user = rng.normal(size=5).astype(np.float32)
    scores = index.scores(user, {"i3"})
    assert scores.top(50) == _whole(index, user, 50, {"i3"})
    assert not scores.pruned


def test_the_head_needs_a_large_catalog_and_a_change_of_width_drops_it():
    rng = np.random.default_rng(4)
    index = ItemFactorIndex(prune_from=1000)
    index.upsert(_skewed(rng, 999))
    assert index._head is None
    index.upsert(_skewed(rng, 1, start=999))
    assert index._head is not None and len(index._head.rows) >= 1000 // 8
    index.upsert({"x": np.ones(3, np.float32)})  # another width starts the matrix over
    assert index._head is None and len(index) == 1


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
