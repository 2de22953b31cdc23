"""Models trained on a schedule from the retained log (``streamrec trainer``): EASE and iALS.

A training run turns the interactions it saw into an immutable artifact with a serving
form that stays fresh without retraining, because a user is scored from their history as
it is at request time, not as it was when the run was made:

- :class:`EaseRun`: EASE's item-item weights (Steck 2019) over the ``max_items`` most
  interacted items, kept as each item's ``neighbours`` strongest weights (sparse and
  bounded), so a user's scores are a sum over their recent items' rows;
- :class:`IalsRun`: implicit ALS item factors (the ``implicit`` library) with their
  regularised Gram matrix, so a user's vector is the closed-form least-squares solution
  for their current history (what ``implicit``'s ``recalculate_user`` computes).

Both answer ``rank(reads, n)`` (:class:`recommender.engine.ExternalModel`), and both turn
into a dict of numpy arrays and back (:meth:`arrays`, :func:`from_arrays`), which is what
the trainer stores.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from scipy import sparse

from recommender.base import Interaction, ItemId, Scored, UserId

EASE = "ease"
IALS = "ials"


class HasHistory(Protocol):
    """What a request read that a trained run needs (:class:`recommender.engine.Reads`)."""

    seen: list[ItemId]  # every item of the history, newest first (excluded from lists)
    recent: list[ItemId]  # the positive ones among the newest

    def cooccurrence(self, n: int) -> list[Scored]: ...


@dataclass(frozen=True)
class TrainingData:
    """Users' positive interactions over the most interacted items, as a sparse matrix.

    ``matrix[u, i]`` is 1 when user ``users[u]`` had a positive interaction with item
    ``items[i]``; items outside the ``max_items`` most interacted are left out.
    """

    users: list[UserId]
    items: list[ItemId]
    matrix: sparse.csr_matrix

    @classmethod
    def of(cls, interactions: Iterable[Interaction], max_items: int) -> TrainingData:
        """The data of ``interactions`` (zero weights, seen-but-disliked, teach nothing).

        >>> data = TrainingData.of([Interaction("ann", "tea", 0.0, 1.0),
        ...                         Interaction("bob", "tea", 1.0, 1.0),
        ...                         Interaction("bob", "cup", 2.0, 1.0),
        ...                         Interaction("bob", "pot", 3.0, 0.0)], max_items=5)
        >>> data.items, data.users, data.matrix.toarray().tolist()
        (['tea', 'cup'], ['ann', 'bob'], [[1.0, 0.0], [1.0, 1.0]])
        """
        histories: dict[UserId, set[ItemId]] = {}
        for event in interactions:
            if event.weight > 0:
                histories.setdefault(event.user_id, set()).add(event.item_id)
        counts = Counter(item for items in histories.values() for item in items)
        items = [item for item, _ in counts.most_common(max_items)]
        column = {item: n for n, item in enumerate(items)}
        rows, cols = [], []
        users = []
        for user, liked in histories.items():
            kept = [column[item] for item in liked if item in column]
            if kept:
                rows.extend([len(users)] * len(kept))
                cols.extend(kept)
                users.append(user)
        matrix = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                                   shape=(len(users), len(items)))
        matrix.sort_indices()
        return cls(users, items, matrix)


def ease_weights(matrix: sparse.spmatrix, regularization: float,
                 dtype: type = np.float64) -> np.ndarray:
    """EASE's item-item weights for a user x item matrix: ``B = I - P / diag(P)`` with
    ``P = (X'X + regularization I)^-1`` and a zero diagonal, as float32.

    ``dtype`` is the precision of the inversion: float32 halves the memory of the dense
    ``items``-square matrix it inverts in place (the trainer's 10,000 items: 400 MB).

    >>> x = sparse.csr_matrix(np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], np.float32))
    >>> weights = ease_weights(x, regularization=1.0)
    >>> bool(weights[0, 1] > 0), abs(float(weights[0, 2])), weights.dtype.name
    (True, 0.0, 'float32')
    """
    return ease_from_gram((matrix.T @ matrix).toarray(), regularization, dtype)


def ease_from_gram(gram: np.ndarray, regularization: float,
                   dtype: type = np.float64) -> np.ndarray:
    """:func:`ease_weights` from the item-item counts ``X'X``, a dense square array that
    this overwrites when it is of ``dtype`` already (pass a copy to keep it)."""
    from scipy.linalg import inv

    gram = gram.astype(dtype, copy=False)
    gram[np.diag_indices_from(gram)] += regularization
    # In place (LU, then the inverse over it): numpy's inv copies its input and builds an
    # identity beside it, 2.5 times the memory (2.0 GB traced at 10,000 items, float32).
    inverse = inv(gram, overwrite_a=True, check_finite=False)
    del gram
    diagonal = np.diag(inverse).copy()
    inverse /= -diagonal
    inverse[np.diag_indices_from(inverse)] = 0.0
    return inverse.astype(np.float32, copy=False)


def top_indices(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest finite scores, best first (ties by index).

    >>> top_indices(np.array([0.1, -np.inf, 0.5, 0.5, 0.2]), 3).tolist()
    [2, 3, 4]
    """
    finite = np.flatnonzero(np.isfinite(scores))
    if n <= 0 or finite.size == 0:
        return finite[:0]
    values = scores[finite]
    if finite.size > n:
        keep = np.argpartition(-values, n - 1)[:n]
        finite, values = finite[keep], values[keep]
    order = np.lexsort((finite, -values))
    return finite[order]


class TrainedRun:
    """What EASE and iALS runs share: the item vocabulary and the request path."""

    kind = ""
    items: np.ndarray

    def __init__(self, items: Sequence[ItemId]) -> None:
        self.items = np.asarray(list(items), dtype=str)
        self._column = {str(item): n for n, item in enumerate(self.items)}

    def columns(self, history: Iterable[ItemId]) -> list[int]:
        """The columns of the items of ``history`` this run knows, in order, once each."""
        found = dict.fromkeys(self._column[item] for item in history if item in self._column)
        return list(found)

    def scores(self, columns: list[int]) -> np.ndarray:
        raise NotImplementedError

    def recommend(self, history: Sequence[ItemId], n: int,
                  exclude: Iterable[ItemId] = ()) -> list[Scored]:
        """The best ``n`` items for a user whose positive history (newest first) is
        ``history``, never one of it nor of ``exclude``; empty when the run knows none of
        their items (the engine then backfills)."""
        columns = self.columns(history)
        if not columns or n <= 0:
            return []
        scores = self.scores(columns)
        scores[columns] = -np.inf
        banned = [self._column[item] for item in exclude if item in self._column]
        scores[banned] = -np.inf
        return [(str(self.items[i]), float(scores[i])) for i in top_indices(scores, n)]

    def rank(self, reads: HasHistory, n: int) -> list[Scored] | None:
        """:class:`~recommender.engine.ExternalModel`: the user's best ``n`` from what the
        request read, or None when the run knows none of their items."""
        return self.recommend(reads.recent, n, reads.seen) or None

    def arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError


class EaseRun(TrainedRun):
    """EASE's weights, each item's ``neighbours`` strongest kept.

    Parameters
    ----------
    items
        The item of each row.
    neighbours
        ``(items, M)`` int32: row ``i``'s kept columns.
    weights
        ``(items, M)`` float32: their weights (EASE's, can be negative).

    Examples
    --------
    >>> events = [Interaction(u, i, 0.0, 1.0) for u in "abc" for i in ("x", "y")]
    >>> events += [Interaction("d", "x", 0.0, 1.0), Interaction("e", "z", 0.0, 1.0)]
    >>> run = EaseRun.fit(TrainingData.of(events, 10), regularization=1.0, neighbours=2)
    >>> [item for item, _ in run.recommend(["x"], 2)]
    ['y']
    >>> run.recommend(["unknown"], 2)
    []
    """

    kind = EASE

    def __init__(self, items: Sequence[ItemId], neighbours: np.ndarray,
                 weights: np.ndarray) -> None:
        super().__init__(items)
        self.neighbours = np.asarray(neighbours, np.int32)
        self.weights = np.asarray(weights, np.float32)

    @classmethod
    def fit(cls, data: TrainingData, regularization: float = 250.0, neighbours: int = 100,
            dtype: type = np.float32, chunk: int = 1024) -> EaseRun:
        """Fit EASE on ``data`` and keep each row's ``neighbours`` largest weights
        (``chunk`` rows at a time, so the selection adds little to the inversion's
        memory)."""
        dense = ease_weights(data.matrix, regularization, dtype)
        size = dense.shape[0]
        keep = max(0, min(neighbours, size - 1))
        indices = np.zeros((size, keep), np.int32)
        for start in range(0, size, chunk):
            rows = dense[start:start + chunk]
            if keep:
                picked = np.argpartition(-rows, keep - 1, axis=1)[:, :keep]
                indices[start:start + chunk] = picked
        values = np.take_along_axis(dense, indices, axis=1) if keep else np.zeros((size, 0))
        return cls(data.items, indices, values)

    def scores(self, columns: list[int]) -> np.ndarray:
        scores = np.zeros(len(self.items), np.float32)
        np.add.at(scores, self.neighbours[columns].ravel(), self.weights[columns].ravel())
        # Only items some history row names are candidates: the rest scored nothing.
        named = np.zeros(len(self.items), bool)
        named[self.neighbours[columns].ravel()] = True
        scores[~named] = -np.inf
        return scores

    def arrays(self) -> dict[str, np.ndarray]:
        return {"items": self.items, "neighbours": self.neighbours, "weights": self.weights}


class IalsRun(TrainedRun):
    """iALS item factors and their regularised Gram matrix; a user's vector is solved from
    their history at request time.

    With confidence ``alpha`` on each item of the user's history (``implicit``'s
    convention: ``C = alpha * X``), the user's factors are
    ``x = (G + (alpha - 1) Yu'Yu)^-1 alpha Yu'1`` where ``G = Y'Y + regularization I``
    and ``Yu`` are the factors of their items: one ``factors``-square solve.

    Examples
    --------
    >>> events = [Interaction(u, i, 0.0, 1.0) for u in "abcd" for i in ("x", "y")]
    >>> events += [Interaction(u, i, 0.0, 1.0) for u in "efg" for i in ("p", "q")]
    >>> run = IalsRun.fit(TrainingData.of(events, 10), factors=4, iterations=10, seed=1)
    >>> [item for item, _ in run.recommend(["x"], 1)]
    ['y']
    """

    kind = IALS

    def __init__(self, items: Sequence[ItemId], factors: np.ndarray, gram: np.ndarray,
                 alpha: float) -> None:
        super().__init__(items)
        self.factors = np.asarray(factors, np.float32)
        self.gram = np.asarray(gram, np.float64)
        self.alpha = float(alpha)

    @classmethod
    def fit(cls, data: TrainingData, factors: int = 64, regularization: float = 0.05,
            alpha: float = 10.0, iterations: int = 15, threads: int = 1,
            seed: int = 0) -> IalsRun:
        """Fit with ``implicit``'s CPU ALS on ``threads`` threads (its default, every core,
        would take the cores the worker and the API serve from)."""
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        # implicit warns (and slows down) unless BLAS is single-threaded around its loops.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(factors=factors, regularization=regularization,
                                            alpha=alpha, iterations=iterations,
                                            num_threads=threads, random_state=seed)
            model.fit(data.matrix, show_progress=False)
        item_factors = np.asarray(model.item_factors, np.float32)
        gram = item_factors.T.astype(np.float64) @ item_factors.astype(np.float64)
        gram[np.diag_indices_from(gram)] += regularization
        return cls(data.items, item_factors, gram, alpha)

    def user_vector(self, columns: list[int]) -> np.ndarray:
        mine = self.factors[columns].astype(np.float64)
        system = self.gram + (self.alpha - 1.0) * (mine.T @ mine)
        return np.linalg.solve(system, self.alpha * mine.sum(axis=0))

    def scores(self, columns: list[int]) -> np.ndarray:
        return self.factors @ self.user_vector(columns).astype(np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"items": self.items, "factors": self.factors, "gram": self.gram,
                "alpha": np.array([self.alpha])}


class FreshBlend:
    """A run's ranking fused with co-occurrence's (reciprocal ranks, as the hybrid fuses:
    :func:`recommender.blend.fuse`), so items the run never saw (new since it was trained)
    reach the list through the neighbours of what the user touched.

    Examples
    --------
    >>> run = EaseRun(["a", "b", "c"], np.array([[1], [2], [0]]), np.ones((3, 1)))
    >>> class Reads:
    ...     seen, recent = ["a"], ["a"]
    ...     def cooccurrence(self, n): return [("new", 1.0)]
    >>> [item for item, _ in FreshBlend(run, weight=1.0).rank(Reads(), 2)]
    ['b', 'new']
    """

    def __init__(self, run: TrainedRun, weight: float, constant: float = 60.0,
                 candidates: int = 50) -> None:
        self.run = run
        self.weight = weight
        self.constant = constant
        self.candidates = candidates

    def rank(self, reads: HasHistory, n: int) -> list[Scored] | None:
        from recommender.blend import fuse

        size = max(n, self.candidates)
        own = self.run.recommend(reads.recent, size, reads.seen)
        if not own:
            return None
        fresh = [item for item, _ in reads.cooccurrence(size)]
        return fuse({"run": [item for item, _ in own], "cooccurrence": fresh},
                    {"run": 1.0, "cooccurrence": self.weight}, self.constant)[:n]


def from_arrays(kind: str, arrays: Mapping[str, np.ndarray]) -> TrainedRun:
    """The run ``arrays()`` gave.

    >>> run = EaseRun(["a", "b"], np.array([[1], [0]]), np.array([[0.5], [0.5]]))
    >>> back = from_arrays("ease", run.arrays())
    >>> back.recommend(["a"], 1)
    [('b', 0.5)]
    """
    if kind == EASE:
        return EaseRun(arrays["items"], arrays["neighbours"], arrays["weights"])
    if kind == IALS:
        return IalsRun(arrays["items"], arrays["factors"], arrays["gram"],
                       float(arrays["alpha"][0]))
    raise ValueError(f"model: {kind!r} is not a trained model ({EASE}, {IALS})")


def fit(kind: str, data: TrainingData, hyperparameters: Mapping[str, Any]) -> TrainedRun:
    """Train a run of ``kind`` on ``data`` with ``hyperparameters`` (its ``fit``'s)."""
    if kind == EASE:
        return EaseRun.fit(data, **hyperparameters)
    if kind == IALS:
        return IalsRun.fit(data, **hyperparameters)
    raise ValueError(f"model: {kind!r} is not a trained model ({EASE}, {IALS})")


def split_by_time(interactions: Sequence[Interaction], holdout: float
                  ) -> tuple[list[Interaction], list[Interaction], float]:
    """The interactions before and from the last ``holdout`` share of their event-time
    range, and the time that splits them.

    >>> events = [Interaction("u", "i", float(t), 1.0) for t in range(11)]
    >>> head, tail, cut = split_by_time(events, 0.1)
    >>> len(head), len(tail), cut
    (10, 1, 9.0)
    """
    if not interactions:
        return [], [], 0.0
    first = min(event.timestamp for event in interactions)
    last = max(event.timestamp for event in interactions)
    cut = last - holdout * (last - first)
    if cut <= first:
        return list(interactions), [], cut
    head = [event for event in interactions if event.timestamp <= cut]
    tail = [event for event in interactions if event.timestamp > cut]
    return head, tail, cut


def offline_metrics(run: TrainedRun, train: Sequence[Interaction],
                    test: Sequence[Interaction], k: int = 10, max_users: int = 5000
                    ) -> dict[str, float] | None:
    """Recall@k and NDCG@k of ``run`` on ``test``: each user is ranked once from their
    ``train`` history (newest first), and every new positive item of theirs in ``test``
    scores as in the prequential evaluation (:class:`recommender.evaluation.Tally`). At
    most ``max_users`` users (those with most test items first); None when no test event
    belongs to a user ``train`` knows.

    >>> train = [Interaction(u, i, 0.0, 1.0) for u in "abc" for i in ("x", "y")]
    >>> train += [Interaction("d", "x", 0.0, 1.0)]
    >>> run = EaseRun.fit(TrainingData.of(train, 10), regularization=1.0)
    >>> offline_metrics(run, train, [Interaction("d", "y", 1.0, 1.0)])
    {'recall@10': 1.0, 'ndcg@10': 1.0, 'users': 1, 'events': 1}
    """
    from recommender.evaluation import Tally

    histories: dict[UserId, list[tuple[float, ItemId]]] = {}
    for event in train:
        if event.weight > 0:
            histories.setdefault(event.user_id, []).append((event.timestamp, event.item_id))
    targets: dict[UserId, list[ItemId]] = {}
    for event in test:
        if event.weight > 0 and event.user_id in histories:
            targets.setdefault(event.user_id, []).append(event.item_id)
    chosen = sorted(targets, key=lambda user: (-len(targets[user]), user))[:max_users]
    tally = Tally()
    for user in chosen:
        history = [item for _, item in sorted(histories[user], reverse=True)]
        known = set(history)
        ranked = [item for item, _ in run.recommend(history, k)]
        for item in dict.fromkeys(targets[user]):
            if item not in known:
                tally.add(ranked, item, known=True)
    if not tally.events:
        return None
    summary = tally.summary(len(run.items))
    return {f"recall@{k}": round(summary["recall"], 6), f"ndcg@{k}": round(summary["ndcg"], 6),
            "users": len(chosen), "events": tally.events}


def worse_by(new: Mapping[str, Any] | None, serving: Mapping[str, Any] | None,
             margin: float, metric: str = "recall@10") -> bool:
    """Whether ``new``'s offline ``metric`` falls short of ``serving``'s by more than
    ``margin`` (a share of it); never when either has none to compare.

    >>> worse_by({"recall@10": 0.08}, {"recall@10": 0.10}, 0.1)
    True
    >>> worse_by({"recall@10": 0.095}, {"recall@10": 0.10}, 0.1), worse_by(None, {}, 0.1)
    (False, False)
    """
    if not new or not serving or metric not in new or metric not in serving:
        return False
    return new[metric] < serving[metric] * (1.0 - margin) - 1e-12


def memory_bytes(run: TrainedRun) -> int:
    """The artifact's size in bytes (what the trainer stores and each API process holds)."""
    return int(sum(array.nbytes for array in run.arrays().values()))


def dense_ceiling(items: int) -> float:
    """Bytes of the dense float32 matrix EASE inverts in place for ``items`` items: the
    floor under a fit's memory (the sparse Gram product and LAPACK's workspace come on top).

    >>> dense_ceiling(10_000) / 1e6
    400.0
    """
    return 4 * float(items) ** 2 if math.isfinite(items) else math.inf


def refit_due(fitted_at: float | None, now: float, every: float) -> tuple[float, bool]:
    """A schedule of refits every ``every`` seconds of event time: its last fit's time as
    of ``now`` and whether a refit is due (the first call only starts the clock).

    >>> refit_due(None, 5.0, 10.0), refit_due(5.0, 9.0, 10.0), refit_due(5.0, 15.0, 10.0)
    ((5.0, False), (5.0, False), (15.0, True))
    """
    if fitted_at is None:
        return now, False
    if now - fitted_at >= every:
        return now, True
    return fitted_at, False


class ScheduledRuns:
    """Runs retrained every ``retrain_every`` seconds of event time on everything learned
    so far, each serving until the next: the trainer's schedule in an offline replay
    (``streamrec evaluate --models ease,ials``). Call it as ``Engine.external_models``;
    teach it each batch with :meth:`learn_many`.

    Examples
    --------
    >>> schedule = ScheduledRuns({"ease": {"regularization": 1.0}}, retrain_every=10,
    ...                          max_items={"ease": 100})
    >>> schedule.learn_many([Interaction(u, i, 0.0, 1.0) for u in "abc" for i in "xy"])
    >>> schedule("ease") is None  # nothing trained before the first refit
    True
    >>> schedule.learn_many([Interaction("d", "x", 10.0, 1.0)])
    >>> [item for item, _ in schedule("ease").recommend(["x"], 1)], schedule.refits
    (['y'], 1)
    """

    def __init__(self, hyperparameters: Mapping[str, Mapping[str, Any]],
                 retrain_every: float, max_items: Mapping[str, int]) -> None:
        self.hyperparameters = {model: dict(params) for model, params in
                                hyperparameters.items()}
        self.retrain_every = retrain_every
        self.max_items = dict(max_items)
        self._events: list[Interaction] = []
        self._fitted_at: float | None = None
        self._dirty = False
        self._runs: dict[str, TrainedRun] = {}
        self.refits = 0
        self.seconds = 0.0

    def learn_many(self, interactions: Sequence[Interaction]) -> None:
        positives = [event for event in interactions if event.weight > 0]
        self._events.extend(positives)
        self._dirty = self._dirty or bool(positives)
        if not interactions:
            return
        self._fitted_at, due = refit_due(self._fitted_at, interactions[-1].timestamp,
                                         self.retrain_every)
        if due and self._dirty:
            self._refit()

    def _refit(self) -> None:
        started = time.perf_counter()
        for model, params in self.hyperparameters.items():
            data = TrainingData.of(self._events, self.max_items[model])
            if data.items:
                self._runs[model] = fit(model, data, params)
        self.seconds += time.perf_counter() - started
        self._dirty = False
        self.refits += 1

    def __call__(self, model: str) -> TrainedRun | None:
        return self._runs.get(model)
