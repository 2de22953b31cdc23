"""Top-k of a ranking after a screen removes some of it: read the ranking in growing rounds
until k items pass, so a screen that removes most candidates costs a few more rounds, not
a read of the whole catalog."""

from __future__ import annotations

from collections.abc import Callable, Collection

from recommender.base import ItemId, Scored

GROWTH = 4  # each round reads this many times more of the ranking


class Screen:
    """What one request may show: each item judged once, at most ``budget`` in all.

    ``judge(items)`` returns those of ``items`` that pass (one round trip for a batch).
    Every ranking of the request (a model's, then the popular fill) shares the verdicts and
    the budget, so a filter that removes everything costs ``budget`` candidates per
    request, not per ranking.

    >>> screen = Screen(lambda items: {i for i in items if i.endswith("0")}, budget=3)
    >>> screen.judge_all(["a0", "b1", "c0", "d0"]), screen.exhausted
    (['a0', 'c0'], True)
    >>> screen.passes("d0"), screen.passes("a0")
    (False, True)

    ``judge`` None: every item passes unjudged (nothing is withdrawn and no filter applies),
    and the budget counts nothing.

    >>> Screen(None, budget=1).judge_all(["a0", "b1"])
    ['a0', 'b1']
    """

    def __init__(self, judge: Callable[[list[ItemId]], Collection[ItemId]] | None,
                 budget: int) -> None:
        self.judge = judge
        self.budget = budget
        self.verdicts: dict[ItemId, bool] = {}

    @property
    def exhausted(self) -> bool:
        return self.judge is not None and len(self.verdicts) >= self.budget

    def judge_all(self, items: list[ItemId]) -> list[ItemId]:
        """Judge the items not judged yet (while the budget lasts); returns those that
        passed, in order. Items past the budget do not pass."""
        if self.judge is None:
            return list(items)
        self.judge_fresh(items)
        verdicts = self.verdicts
        return [item for item in items if verdicts.get(item)]

    def judge_fresh(self, items: list[ItemId]) -> None:
        """:meth:`judge_all` without building its answer (:func:`take` reads the
        verdicts)."""
        if self.judge is None:
            return
        verdicts = self.verdicts
        fresh = [item for item in items if item not in verdicts]
        if not fresh:
            return
        fresh = list(dict.fromkeys(fresh))[:max(0, self.budget - len(verdicts))]
        if fresh:
            kept = self.judge(fresh)
            verdicts.update(zip(fresh, map(kept.__contains__, fresh), strict=True))

    def passes(self, item: ItemId) -> bool:
        return self.judge is None or self.verdicts.get(item, False)


def take(
    rank: Callable[[int], list[Scored]],
    k: int,
    first: int,
    screen: Screen,
    banned: Collection[ItemId] = frozenset(),
) -> list[Scored]:
    """The best ``k`` items of ``rank`` that are not ``banned`` and that ``screen`` passes.

    ``rank(n)`` returns a ranking, best first, whose first ``n`` entries count (it may
    return more; fewer means there is no more). The first round reads ``first``; each next
    round ``GROWTH`` times more, judging only items not judged before, until ``k`` pass, the
    ranking ends, or the screen's budget is spent. A ranking need not keep its order between
    rounds (a blend rescales): the answer follows the last one read.

    Examples
    --------
    >>> ranking = [(f"i{n}", 100.0 - n) for n in range(100)]
    >>> rounds = []
    >>> def rank(n):
    ...     rounds.append(n)
    ...     return ranking[:n]
    >>> tens = lambda items: {item for item in items if item.endswith("0")}
    >>> [item for item, _ in take(rank, 3, 3, Screen(tens, budget=1000))], rounds
    (['i0', 'i10', 'i20'], [3, 12, 48])
    >>> take(rank, 3, 3, Screen(tens, budget=10))
    [('i0', 100.0)]
    """
    size = max(first, 1)
    verdicts = screen.verdicts
    while True:
        ranked = rank(size)
        window = ranked[:size]
        if banned:
            window = [pair for pair in window if pair[0] not in banned]
        if k <= 0:
            return []
        if screen.judge is None:  # everything passes
            chosen = window[:k]
            if len(chosen) == k:
                return chosen
        else:
            screen.judge_fresh([item for item, _ in window])
            # The first k that passed: a popular list reads k plus the user's history (a
            # few hundred items) to find them, so stop at the k-th instead of scanning on.
            chosen = []
            for pair in window:
                if verdicts.get(pair[0]):
                    chosen.append(pair)
                    if len(chosen) == k:
                        return chosen
        if len(ranked) < size or screen.exhausted:
            return chosen
        # Never read further than the budget could still judge (none is judged: no bound).
        size = size * GROWTH if screen.judge is None else min(
            size * GROWTH, size + screen.budget - len(screen.verdicts) + len(banned))
