"""The hybrid's blend: reciprocal-rank fusion of its sources, weighted by how often each
source has been right on this deployment's own stream.

Co-occurrence, MF and popularity each rank candidates on a scale of their own; a min-max
blend of their scores (what the hybrid did before) let a weak source's noise outvote a
strong one, and two weak sources that agree (MF's item bias and popularity both favour
the bestsellers) beat the one that knows the user. So the hybrid fuses ranks
(:func:`fuse`), and each source's weight follows a prequential tally kept in the state:
before a batch is learned, the worker asks each source for its top
:data:`TALLY_K` for a sample of the batch's positive events and counts the hits
(:class:`Tally`). A source that finds a third of what the best finds weighs
``(1/3) ** exponent`` of it; with no tally yet every source weighs its configured weight.
The fusion's own top is tallied too: while one source alone hits more often than the
fusion (popularity on a news site, say), the hybrid serves that source's ranking, so it is
never worse than its best part for long (follow the leader, with full information: every
sampled event scores every candidate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import compress
from operator import gt, itemgetter

import numpy as np

from recommender.base import ItemId, Scored

SOURCES = ("cooccurrence", "mf", "popular")
HYBRID = "hybrid"  # the fusion's own line in the tally
TALLY_K = 10  # a source scores a hit when the event's item is in its top TALLY_K
TRIALS = "trials"


def hits_field(source: str) -> str:
    return f"hits:{source}"


def ranked(scored: list[Scored]) -> list[Scored]:
    """By score descending, ties by item: two C-level sorts (the second is stable) instead
    of a Python key function per candidate.

    >>> ranked([("b", 1.0), ("c", 2.0), ("a", 1.0)])
    [('c', 2.0), ('a', 1.0), ('b', 1.0)]
    """
    scored.sort(key=itemgetter(0))
    scored.sort(key=itemgetter(1), reverse=True)
    return scored


def fuse(sources: Mapping[str, Sequence[ItemId]], weights: Mapping[str, float],
         constant: float, k: int | None = None) -> list[Scored]:
    """Weighted reciprocal-rank fusion: an item scores ``weight / (constant + rank)`` in
    each source that ranks it (rank 1 is the best), summed over the sources; the best
    ``k`` (all if None).

    An item that several sources rank well beats one that a single source ranks first;
    ``constant`` sets how much the first places count more than the later ones.

    >>> fuse({"a": ["x", "y"], "b": ["y", "z"]}, {"a": 1.0, "b": 1.0}, constant=1.0)
    [('y', 0.8333333333333333), ('x', 0.5), ('z', 0.3333333333333333)]
    >>> fuse({"a": ["x", "y"], "b": ["y", "z"]}, {"a": 1.0, "b": 1.0}, 1.0, k=2)
    [('y', 0.8333333333333333), ('x', 0.5)]
    """
    weighted = [name for name in sources if not weights[name] <= 0]  # as the loop below
    if len(weighted) == 1:  # the leader alone (recommender.blend.Tally.leader)
        alone = _alone(sources[weighted[0]], weights[weighted[0]], constant)
        if alone is not None:
            return alone[:k]
    fused: dict[ItemId, float] = {}
    get = fused.get
    for name, items in sources.items():
        weight = weights[name]
        if weight <= 0:
            continue
        for rank, item in enumerate(items, start=1):
            fused[item] = get(item, 0.0) + weight / (constant + rank)
    if k is not None and 0 < k < len(fused):
        # Sort only the candidates at or above the k-th score (ties with it come along:
        # ranked() orders them by item), chosen in C: a request's hybrid keeps 100 of the
        # ~250 its sources bring, and sorting them all was half of the fusion's cost.
        values = np.fromiter(fused.values(), float, len(fused))
        kept = values >= np.partition(values, len(values) - k)[len(values) - k]
        return ranked(list(compress(fused.items(), kept.tolist())))[:k]
    return ranked(list(fused.items()))[:k]


def _alone(items: Sequence[ItemId], weight: float, constant: float) -> list[Scored] | None:
    """:func:`fuse` of one source: its items in its order, when that is the order
    :func:`ranked` gives (no item twice, every score below the one before), else None."""
    scores = [weight / (constant + rank) for rank in range(1, len(items) + 1)]
    if len(set(items)) < len(items) or not all(map(gt, scores, scores[1:])):
        return None
    return list(zip(items, scores, strict=True))


class Tally:
    """Hits per source over the trials of a prequential tally, and the blend weights they
    earn.

    Parameters
    ----------
    counts
        ``{"trials": n, "hits:<source>": h, ...}`` as the store keeps them.
    exponent
        How sharply weights follow the hit rates: each source's configured weight is
        multiplied by ``(rate / best rate) ** exponent`` (0: the configured weights alone).

    Examples
    --------
    >>> tally = Tally({"trials": 98, "hits:cooccurrence": 29, "hits:mf": 14,
    ...                "hits:popular": 2}, exponent=2.0)
    >>> {source: round(factor, 3) for source, factor in tally.factors().items()}
    {'cooccurrence': 1.0, 'mf': 0.25, 'popular': 0.01}
    >>> Tally({}, exponent=2.0).factors()
    {'cooccurrence': 1.0, 'mf': 1.0, 'popular': 1.0}
    """

    def __init__(self, counts: Mapping[str, int], exponent: float = 2.0) -> None:
        self.counts = dict(counts)
        self.exponent = exponent

    def rate(self, source: str) -> float:
        """Hits per trial, with one hit in two trials as a prior: an unproven source starts
        even with the others."""
        return (self.counts.get(hits_field(source), 0) + 1) / (self.counts.get(TRIALS, 0) + 2)

    def factors(self) -> dict[str, float]:
        rates = {source: self.rate(source) for source in SOURCES}
        best = max(rates.values())
        return {source: (rate / best) ** self.exponent for source, rate in rates.items()}

    def leader(self, sources: Sequence[str] = SOURCES) -> str:
        """:data:`HYBRID` while the fusion hits at least as often as each of ``sources``
        (a tie, an empty tally: the fusion), else the source that hits most: the hybrid
        is then that source alone, and stays at least as good as its best part.

        >>> tally = Tally({"trials": 50, "hits:popular": 9, "hits:mf": 7, "hits:hybrid": 8})
        >>> tally.leader(), tally.leader(["mf", "cooccurrence"]), Tally({}).leader()
        ('popular', 'hybrid', 'hybrid')
        """
        best = max(sources, key=lambda source: (self.rate(source), -SOURCES.index(source)),
                   default=HYBRID)
        return best if self.rate(best) > self.rate(HYBRID) else HYBRID


def forget(counts: Mapping[str, int], memory: int) -> dict[str, int]:
    """The tally after its write: every count halved (rounding down) once the trials reach
    ``2 * memory`` (0: never), so old trials weigh less and the leader the tally finds is
    the current one. The Redis APPLY script does the same.

    >>> forget({"trials": 10, "hits:mf": 5}, 5), forget({"trials": 9, "hits:mf": 5}, 5)
    ({'trials': 5, 'hits:mf': 2}, {'trials': 9, 'hits:mf': 5})
    >>> forget({"trials": 10**9}, 0)
    {'trials': 1000000000}
    """
    if memory > 0 and counts.get(TRIALS, 0) >= 2 * memory:
        return {name: count // 2 for name, count in counts.items()}
    return dict(counts)


def count_hits(tops: Mapping[str, Sequence[ItemId]], item: ItemId) -> dict[str, int]:
    """One trial: which sources had ``item`` among their top :data:`TALLY_K`.

    >>> count_hits({"mf": ["a", "b"], "popular": ["c"], "cooccurrence": []}, "b")
    {'trials': 1, 'hits:mf': 1}
    """
    counts = {TRIALS: 1}
    for source, top in tops.items():
        if item in top[:TALLY_K]:
            counts[hits_field(source)] = 1
    return counts
