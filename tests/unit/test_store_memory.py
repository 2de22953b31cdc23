from __future__ import annotations

import pytest

from recommender.store import InMemoryStore
from tests.contract_store import StoreContract


class TestInMemoryStore(StoreContract):
    @pytest.fixture
    def store(self):
        return InMemoryStore()


@pytest.mark.parametrize("coded", [False, True])
def test_sorted_sets_keep_sorted_set_order_through_ties(coded):
    """The in-memory sorted sets move members by bisection, ties among equal scores by
    member: after any mix of writes their top is what sorting gives (many ties included,
    as popularity has after a rescale underflows it to 0)."""
    import random

    from recommender.store import _CodedSortedSet, _SortedSet, top

    rng = random.Random(7)
    ids: list[str] = []
    codes: dict[str, int] = {}

    def code(member: str) -> int:
        if member not in codes:
            codes[member] = len(ids)
            ids.append(member)
        return codes[member]

    ranked = _CodedSortedSet(code, ids) if coded else _SortedSet()
    members = [f"i{n}" for n in range(60)]
    for step in range(3000):
        choice = rng.random()
        if choice < 0.45:
            ranked.add({rng.choice(members): rng.choice([0.0, 1.0, 2.0, 0.5])})
        elif choice < 0.9:
            ranked.update({rng.choice(members): rng.choice([0.0, 1.0, 3.0, 4.0])})
        elif choice < 0.95:
            ranked.trim(rng.randint(20, 60))
        elif choice < 0.97:
            ranked.rescale(0.0)  # every score ties
        else:
            ranked.remove([rng.choice(members)])
        if step % 7 == 0:
            assert ranked.top() == top(ranked.scores), step
            if coded:
                assert ranked.top_coded(10) == (
                    [codes[item] for item, _ in top(ranked.scores, 10)],
                    [score for _, score in top(ranked.scores, 10)])
