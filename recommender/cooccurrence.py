"""Item-to-item co-occurrence within each user's recent window."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import itemgetter
from typing import NamedTuple

import numpy as np

from recommender.base import Interaction, ItemId, Scored, UserId
from recommender.blend import ranked
from recommender.decay import Decayed, ForwardDecay


@dataclass
class CoOccurrenceUpdate:
    """What one batch adds. Weights are decayed to the batch's reference time."""

    pairs: dict[ItemId, dict[ItemId, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )
    item_counts: dict[ItemId, float] = field(default_factory=lambda: defaultdict(float))
    history: dict[UserId, dict[ItemId, float]] = field(default_factory=lambda: defaultdict(dict))


class CodedNeighbours(NamedTuple):
    """Neighbour lists with the normalisers as an array over one numbering of the items:
    what :meth:`CoOccurrence.rank` sums in numpy. The in-memory store keeps its items
    numbered (``InMemoryStore.neighbour_arrays``); :func:`coded` numbers lists read apart.

    ``lists`` holds each read item's list, heaviest first, as its members' codes and its
    weights, with its landmark. ``counts`` holds each code's normaliser N(j) (0: never
    counted) with the counts' landmark; nobody changes it once handed out."""

    ids: Sequence[ItemId]  # the item of each code
    codes: Mapping[ItemId, int]  # the code of each item
    lists: Mapping[ItemId, Decayed[tuple[Sequence[int], Sequence[float]]]]
    counts: Decayed[np.ndarray]


def coded(neighbours: Mapping[ItemId, Decayed[Sequence[Scored]]],
          counts: Decayed[Mapping[ItemId, float]]) -> CodedNeighbours:
    """``neighbours`` and ``counts`` (read apart, as from Redis) numbered for
    :meth:`CoOccurrence.rank`.

    >>> found = coded({"a": Decayed([("c", 2.0)], 5.0)}, Decayed({"a": 1.0, "c": 4.0}, 0.0))
    >>> found.ids, found.lists["a"], found.counts.scores.tolist()
    (['a', 'c'], Decayed(scores=([1], [2.0]), landmark=5.0), [1.0, 4.0])
    """
    scores = counts.scores
    ids = list(dict.fromkeys(chain(scores, *(map(_first, listed.scores)
                                             for listed in neighbours.values()))))
    codes = {item: code for code, item in enumerate(ids)}
    lists = {item: Decayed((list(map(codes.__getitem__, map(_first, listed.scores))),
                            list(map(_second, listed.scores))), listed.landmark)
             for item, listed in neighbours.items()}
    return CodedNeighbours(ids, codes, lists, Decayed(
        np.fromiter(map(scores.get, ids, repeat(0.0)), float, len(ids)), counts.landmark))


_first, _second = itemgetter(0), itemgetter(1)


class CoOccurrence:
    """Decayed co-occurrence counts, normalised by cosine at read time.

    When a user touches an item that is not already in their window (the last
    ``window`` positively weighted items, no older than ``window_seconds``), the pair
    (item, each window item) gains the event's decayed weight in both directions, and the
    item's own count gains it too. Similarity is ``C(i, j) / sqrt(N(i) N(j))``, so items
    that everybody touches do not crowd out the rest. The cosine does not depend on when it
    is read (every term decays alike), so it is computed from the stored values and their
    keys' landmarks, dividing before multiplying: nothing overflows.

    A user's history holds ``timestamp`` for positive interactions and ``-timestamp`` for
    zero-weight ones (seen, not liked): they are excluded from lists but never paired.

    Parameters
    ----------
    window
        How many of the user's recent items a new item is paired with.
    window_seconds
        Items older than this (relative to the new event) are not paired.
    decay
        The forward decay applied to every increment.

    Examples
    --------
    >>> from recommender.base import Interaction
    >>> model = CoOccurrence(window=5, window_seconds=3600, decay=ForwardDecay(60.0))
    >>> update = model.learn_many(
    ...     [Interaction("u1", "a", 0.0, 1.0), Interaction("u1", "b", 60.0, 1.0)], {"u1": []},
    ...     reference=60.0,
    ... )
    >>> update.pairs["a"]["b"], update.item_counts["a"], update.item_counts["b"]
    (1.0, 0.5, 1.0)
    >>> counts = Decayed(update.item_counts, landmark=60.0)
    >>> [(item, round(score, 6)) for item, score in
    ...  model.similar("a", Decayed([("b", 1.0)], landmark=60.0), counts, k=5)]
    [('b', 1.414214)]
    """

    def __init__(self, window: int, window_seconds: float, decay: ForwardDecay) -> None:
        self.window = window
        self.window_seconds = window_seconds
        self.decay = decay

    def learn_many(
        self,
        interactions: Iterable[Interaction],
        windows: Mapping[UserId, Sequence[Scored]],
        reference: float,
    ) -> CoOccurrenceUpdate:
        """Pair each new item with its user's window.

        ``windows`` holds each user's positive history, newest first, as the store has it
        before this batch; interactions are applied in the order given. Increments are
        decayed to ``reference`` (the batch's latest event time).
        """
        update = CoOccurrenceUpdate()
        # Locals, and the window scanned once: this loop runs for every event of a batch.
        pairs, counts, history = update.pairs, update.item_counts, update.history
        factor, size, span = self.decay.factor, self.window, self.window_seconds
        live: dict[UserId, list[Scored]] = {}
        for event in interactions:
            user, item, at = event.user_id, event.item_id, event.timestamp
            window = live.get(user)
            if window is None:
                window = live[user] = list(windows.get(user, ()))[:size]
            if event.weight <= 0:
                history[user].setdefault(item, -at)
                continue
            for position, (seen, _) in enumerate(window):
                if seen == item:
                    del window[position]
                    break
            else:
                increment = event.weight * factor(at, reference)
                counts[item] += increment
                oldest = at - span
                others = [other for other, seen_at in window if seen_at >= oldest]
                if others:
                    mine = pairs[item]
                    for other in others:
                        mine[other] += increment
                        pairs[other][item] += increment
            window.insert(0, (item, at))
            del window[size:]
            scores = history[user]
            previous = scores.get(item)
            if previous is None or at > previous:
                scores[item] = at
        return update

    def similar(
        self,
        item_id: ItemId,
        neighbours: Decayed[Sequence[Scored]],
        counts: Decayed[Mapping[ItemId, float]],
        k: int,
        exclude: Iterable[ItemId] = (),
    ) -> list[Scored]:
        """Rank ``item_id``'s stored neighbours (its list's scores and landmark) by cosine
        similarity, with the normalisers ``counts`` (one key: one landmark)."""
        own = counts.scores.get(item_id, 0.0)
        if own <= 0 or not neighbours.scores:
            return []
        banned = set(exclude) | {item_id}
        found = counts.scores
        # The pair weights in the normalisers' frame, over sqrt(N(i)): each factor alone
        # stays far inside double range (sqrt first, never the product N(i) N(j)).
        scale = self.decay.ratio(neighbours.landmark, counts.landmark) / math.sqrt(own)
        scored = [
            (other, weight * scale / math.sqrt(found[other]))
            for other, weight in neighbours.scores
            if other not in banned and found.get(other, 0.0) > 0
        ]
        return ranked(scored)[:k]

    def recommend(
        self,
        recent: Sequence[ItemId],
        neighbours: Mapping[ItemId, Decayed[Sequence[Scored]]],
        counts: Decayed[Mapping[ItemId, float]],
        k: int,
        exclude: Iterable[ItemId] = (),
        recency: float = 0.85,
    ) -> list[Scored]:
        """Score items by similarity to the user's recent items (newest first).

        The n-th most recent item's similarities count ``recency ** n``.
        """
        return self.rank(recent, coded(neighbours, counts), k, exclude, recency)

    def rank(self, recent: Sequence[ItemId], found: CodedNeighbours, k: int,
             exclude: Iterable[ItemId] = (), recency: float = 0.85) -> list[Scored]:
        """:meth:`recommend` over lists already numbered (:class:`CodedNeighbours`).

        >>> model = CoOccurrence(window=5, window_seconds=3600, decay=ForwardDecay(60.0))
        >>> lists = {"a": Decayed([("c", 2.0), ("b", 1.0)], 0.0)}
        >>> counts = Decayed({"a": 1.0, "b": 1.0, "c": 4.0}, 0.0)
        >>> model.rank(["a"], coded(lists, counts), k=5)
        [('b', 1.0), ('c', 1.0)]
        """
        codes, norms = found.codes, found.counts.scores
        weighted = list(self._weighted_coded(recent, found, recency))
        if not weighted:
            return []
        # Every pair of the lists at once, in C: (member's code, pair weight times its list's
        # weight). bincount adds its input in order, so each candidate's sum is the one a
        # loop over the recent items makes. Then each sum is divided by its sqrt(N(j)) once:
        # a request adds up about window x neighbours pairs over far fewer candidates.
        sizes = [len(listed[0]) for _, listed in weighted]
        size = sum(sizes)
        members = np.fromiter(chain.from_iterable(listed[0] for _, listed in weighted),
                              np.intp, size)
        pairs = np.fromiter(chain.from_iterable(listed[1] for _, listed in weighted), float,
                            size)
        pairs *= np.repeat([weight for weight, _ in weighted], sizes)
        sums = np.bincount(members, pairs)
        keep = np.zeros(len(sums), bool)
        keep[members] = True
        keep &= norms[:len(sums)] > 0
        # The seen items' codes in C: an item without one gets len(sums), which no
        # candidate has (a user has seen ~200 items, a comprehension over them cost more).
        banned = np.fromiter(map(codes.get, chain(exclude, recent), repeat(len(sums))),
                             np.intp)
        keep[banned[banned < len(sums)]] = False
        rows = np.flatnonzero(keep)
        scores = sums[rows] / np.sqrt(norms[rows])
        if k < len(rows):  # everything tied with the k-th comes along: ties go by item
            rows, scores = _at_least(rows, scores, k)
        return ranked(list(zip(map(found.ids.__getitem__, rows.tolist()), scores.tolist(),
                               strict=True)))[:k]


    def contributions(
        self,
        recent: Sequence[ItemId],
        neighbours: Mapping[ItemId, Decayed[Sequence[Scored]]],
        counts: Decayed[Mapping[ItemId, float]],
        items: Iterable[ItemId],
        recency: float = 0.85,
    ) -> dict[ItemId, list[Scored]]:
        """Why :meth:`recommend` scores each of ``items``: per item, what each recent item's
        neighbour list gave it (largest first). The amounts sum to its score.

        >>> model = CoOccurrence(window=5, window_seconds=3600, decay=ForwardDecay(60.0))
        >>> lists = {"a": Decayed([("c", 2.0)], 0.0), "b": Decayed([("c", 1.0)], 0.0)}
        >>> counts = Decayed({"a": 1.0, "b": 1.0, "c": 4.0}, 0.0)
        >>> model.contributions(["a", "b"], lists, counts, ["c"])
        {'c': [('a', 1.0), ('b', 0.425)]}
        >>> model.recommend(["a", "b"], lists, counts, k=1)
        [('c', 1.425)]
        """
        found = counts.scores
        wanted = set(items)
        given: dict[ItemId, list[Scored]] = {item: [] for item in wanted}
        for item, weight, listed in self._weighted(recent, neighbours, counts, recency):
            for other, pair in listed:
                norm = found.get(other, 0.0)
                if other in wanted and norm > 0:
                    given[other].append((item, weight * pair / math.sqrt(norm)))
        return {item: ranked(amounts) for item, amounts in given.items()}


    def _weighted(self, recent: Sequence[ItemId],
                  neighbours: Mapping[ItemId, Decayed[Sequence[Scored]]],
                  counts: Decayed[Mapping[ItemId, float]], recency: float):
        """Each recent item with neighbours: (item, what its pair weights are multiplied
        by: its recency over sqrt(N(i)), in the normalisers' frame, its neighbour list)."""
        found = counts.scores
        for position, item in enumerate(recent):
            own = found.get(item, 0.0)
            listed = neighbours.get(item)
            if own <= 0 or listed is None or not listed.scores:
                continue
            yield item, (recency**position * self.decay.ratio(listed.landmark, counts.landmark)
                         / math.sqrt(own)), listed.scores

    def _weighted_coded(self, recent: Sequence[ItemId], found: CodedNeighbours,
                        recency: float
                        ) -> Iterator[tuple[float, tuple[Sequence[int], Sequence[float]]]]:
        """:meth:`_weighted` over numbered normalisers: the same weights, bit for bit."""
        codes, norms, landmark = found.codes, found.counts.scores, found.counts.landmark
        lists = found.lists
        for position, item in enumerate(recent):
            code = codes.get(item)
            own = 0.0 if code is None else float(norms[code])
            listed = lists.get(item)
            if own <= 0 or listed is None or not len(listed.scores[0]):
                continue
            yield (recency**position * self.decay.ratio(listed.landmark, landmark)
                   / math.sqrt(own)), listed.scores


def _at_least(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows scoring at least the k-th highest score, and their scores."""
    threshold = np.partition(scores, len(scores) - k)[len(scores) - k]
    best = np.flatnonzero(scores >= threshold)
    return rows[best], scores[best]
