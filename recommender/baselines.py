"""Baselines the prequential evaluation runs beside streamrec's own models.

- :class:`PeriodicEASE` stands for the nightly batch job of Personalize-style pipelines:
  EASE (Steck 2019) refit on everything seen so far once per ``retrain_every`` seconds of
  event time, serving the last fit in between.
- :class:`RiverFunkMF` is river's online matrix factorisation (``river.reco.FunkMF``)
  taught implicit feedback: each positive is a 1, and ``negatives`` sampled items a 0.
"""

from __future__ import annotations

from array import array
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
from scipy import sparse

from recommender.base import Interaction, ItemId, UserId
from recommender.batch_models import ease_from_gram, refit_due


class PeriodicEASE:
    """EASE over the ``max_items`` most interacted items, refit every ``retrain_every``
    seconds of event time (skipped when nothing arrived since the last fit: same result).

    The cap keeps a refit to one dense ``max_items``-square inversion; items outside it
    are never recommended by this baseline, which is what a nightly job with a budget does.
    The item-item counts it inverts are brought up to date at each refit from the pairs
    since the last one and those users' earlier pairs, not multiplied out from every pair.

    Examples
    --------
    >>> ease = PeriodicEASE(retrain_every=10, regularization=1.0)
    >>> ease.learn_many([Interaction(u, i, 0.0, 1.0) for u in "abc" for i in ("x", "y")]
    ...                 + [Interaction("d", "x", 0.0, 1.0), Interaction("e", "z", 0.0, 1.0)])
    >>> ease.learn_many([Interaction("e", "z", 20.0, 1.0)])  # a day passes: refit
    >>> ease.recommend("d", 1, now=20.0)
    ['y']
    """

    def __init__(self, retrain_every: float = 86400.0, regularization: float = 250.0,
                 max_items: int = 1000) -> None:
        self.retrain_every = retrain_every
        self.regularization = regularization
        self.max_items = max_items
        self._history: dict[UserId, set[ItemId]] = defaultdict(set)
        self._popularity: Counter = Counter()
        # Every distinct positive (user, item) pair as it came: the user's row and the
        # item's code, so that a refit selects its columns in C (a Python loop over every
        # pair at every refit was a quarter of a MovieLens replay's time).
        self._row: dict[UserId, int] = {}
        self._code: dict[ItemId, int] = {}
        self._pair_rows = array("q")
        self._pair_codes = array("q")
        self._fitted_at: float | None = None
        self._dirty = False
        self._items: list[ItemId] = []
        self._column: dict[ItemId, int] = {}
        self._weights = np.zeros((0, 0), np.float32)
        self.refits = 0
        # The item-item counts X'X over a wider set of items than a fit keeps (the
        # 2 x max_items most interacted when it was last counted in full), brought up to
        # date at each refit from the pairs since the last: a refit no longer multiplies
        # out every pair again. Counted in full again when a fit's items leave that set.
        self._position = np.zeros(0, np.int64)  # by item code: its row in the counts, or -1
        self._gram = np.zeros((0, 0))
        self._counted = 0  # pairs in the counts
        self.full_counts = 0

    def learn_many(self, interactions: Sequence[Interaction]) -> None:
        for event in interactions:
            if event.weight > 0 and event.item_id not in self._history[event.user_id]:
                self._history[event.user_id].add(event.item_id)
                self._popularity[event.item_id] += 1
                self._pair_rows.append(self._row.setdefault(event.user_id, len(self._row)))
                self._pair_codes.append(self._code.setdefault(event.item_id, len(self._code)))
                self._dirty = True
        if not interactions:
            return
        self._fitted_at, due = refit_due(self._fitted_at, interactions[-1].timestamp,
                                         self.retrain_every)
        if due and self._dirty:
            self._fit()

    def _fit(self) -> None:
        self._items = [item for item, _ in self._popularity.most_common(self.max_items)]
        self._column = {item: n for n, item in enumerate(self._items)}
        codes = np.array([self._code[item] for item in self._items], np.int64)
        self._count_pairs(codes)
        rows = self._position[codes]
        self._weights = ease_from_gram(self._gram.take(rows, 0).take(rows, 1),
                                       self.regularization)
        self._dirty = False
        self.refits += 1

    def _count_pairs(self, codes: np.ndarray) -> None:
        """Bring the counts up to date with every pair, over a set of items that holds
        ``codes``. The counts are whole numbers, so adding the new pairs' share gives
        exactly the counts of all of them (``tests/unit/test_baselines.py``)."""
        pair_rows = np.frombuffer(self._pair_rows, np.int64)
        pair_codes = np.frombuffer(self._pair_codes, np.int64)
        position = np.full(len(self._code), -1, np.int64)
        position[:len(self._position)] = self._position
        if len(codes) and position[codes].min() < 0:  # a fit's item is not counted
            wider = [self._code[item] for item, _ in
                     self._popularity.most_common(2 * self.max_items)]
            position[:] = -1
            position[wider] = np.arange(len(wider))
            self._gram = np.zeros((len(wider), len(wider)))
            self._counted = 0
            self.full_counts += 1
        self._position = position
        new = slice(self._counted, len(pair_rows))
        if new.start == new.stop:
            return
        shape = (len(self._row), len(self._gram))
        added = _pair_matrix(pair_rows[new], position[pair_codes[new]], shape)
        # The users with new pairs, and what they had before: X'X grows by N'N + N'O + O'N.
        users = np.unique(pair_rows[new])
        before = slice(0, self._counted)
        # A lookup table over the user rows: 0.06 s at 10 million pairs, 0.36 by default.
        theirs = np.isin(pair_rows[before], users, kind="table")
        had = _pair_matrix(pair_rows[before][theirs], position[pair_codes[before][theirs]],
                           shape)
        cross = added.T @ had
        grown = (added.T @ added + cross + cross.T).tocoo()  # few entries: no dense copies
        grown.sum_duplicates()  # each entry once: the += below adds it once
        self._gram[grown.row, grown.col] += grown.data
        self._counted = len(pair_rows)

    def recommend(self, user_id: UserId, k: int, now: float) -> list[ItemId]:
        seen = self._history.get(user_id, set())
        columns = [self._column[item] for item in seen if item in self._column]
        if not self._items:
            return []
        if columns:
            scores = self._weights[columns].sum(axis=0)
        else:  # nobody knows this user: the fit's most popular items
            scores = -np.arange(len(self._items), dtype=np.float32)
        scores[columns] = -np.inf
        k = min(k, len(self._items))
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [self._items[column] for column in best if np.isfinite(scores[column])]


def _pair_matrix(rows: np.ndarray, columns: np.ndarray, shape: tuple[int, int]
                 ) -> sparse.csr_matrix:
    """The 0/1 user x item matrix of these pairs, leaving out those of column -1."""
    kept = columns >= 0
    return sparse.csr_matrix((np.ones(int(kept.sum()), np.float32),
                              (rows[kept], columns[kept])), shape=shape)


class RiverFunkMF:
    """river's ``FunkMF`` on implicit feedback, scoring every item it has learned.

    The item factors are mirrored into a matrix (rows updated for the items a batch
    touched) so that a request is one matrix-vector product instead of a Python loop of
    ``predict_one`` calls.
    """

    def __init__(self, factors: int = 16, negatives: int = 2, learning_rate: float = 0.05,
                 seed: int = 0) -> None:
        from river import optim, reco

        self.negatives = negatives
        self.model = reco.FunkMF(n_factors=factors, optimizer=optim.SGD(learning_rate),
                                 initializer=optim.initializers.Normal(mu=0.0, sigma=0.1,
                                                                       seed=seed), seed=seed)
        self._rng = np.random.default_rng(seed)
        self._items: list[ItemId] = []
        self._row: dict[ItemId, int] = {}
        self._matrix = np.zeros((1024, factors), np.float32)
        self._history: dict[UserId, set[ItemId]] = defaultdict(set)

    def learn_many(self, interactions: Sequence[Interaction]) -> None:
        # In the order first touched (a set's order follows the string hash, which changes
        # with every process: rows, and so the sampled negatives, differed from run to run).
        touched: dict[ItemId, None] = {}
        for event in interactions:
            if event.weight <= 0:
                continue
            self._history[event.user_id].add(event.item_id)
            self.model.learn_one(event.user_id, event.item_id, 1.0)
            touched[event.item_id] = None
            if self._items:
                for row in self._rng.integers(0, len(self._items), self.negatives):
                    negative = self._items[row]
                    if negative not in self._history[event.user_id]:
                        self.model.learn_one(event.user_id, negative, 0.0)
                        touched[negative] = None
        for item in touched:
            row = self._row.get(item)
            if row is None:
                row = len(self._items)
                if row == len(self._matrix):
                    self._matrix = np.vstack([self._matrix, np.zeros_like(self._matrix)])
                self._items.append(item)
                self._row[item] = row
            self._matrix[row] = self.model.i_latents[item]

    def recommend(self, user_id: UserId, k: int, now: float) -> list[ItemId]:
        if user_id not in self.model.u_latents or not self._items:
            return []
        vector = np.asarray(self.model.u_latents[user_id], np.float32)
        scores = self._matrix[: len(self._items)] @ vector
        for item in self._history.get(user_id, ()):
            scores[self._row[item]] = -np.inf
        k = min(k, len(self._items))
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [self._items[row] for row in best if np.isfinite(scores[row])]
