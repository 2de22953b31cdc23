"""One suite for every StateStore (in memory, Redis): the two cannot drift apart.
Subclasses provide the ``store`` fixture."""

from __future__ import annotations

import math
from operator import itemgetter

import numpy as np
import pytest

from recommender.decay import ForwardDecay
from recommender.engine import Engine
from recommender.hyperparameters import EngineConfig
from recommender.once import BUCKET_SECONDS, Claim, DuplicateEvents
from recommender.store import NonFiniteError, as_stored_user_factors
from tests.factories import update, vector


class StoreContract:
    def test_increments_add_up(self, store):
        store.apply(update(popularity={"tea": 1.0, "cup": 2.0}, item_counts={"tea": 1.0},
                           category_popularity={"drinks": {"tea": 1.0}}, events=2))
        store.apply(update(popularity={"tea": 2.5}, item_counts={"tea": 0.5},
                           category_popularity={"drinks": {"tea": 1.0}}, events=1))
        assert store.popular(5) == ([("tea", 3.5), ("cup", 2.0)], 0.0)
        assert store.popular(5, "drinks") == ([("tea", 2.0)], 0.0)
        assert store.popular(5, "nothing") == ([], None)
        assert store.item_counts(["tea", "unknown"]) == ({"tea": 1.5}, 0.0)
        assert store.events_applied() == 3

    def test_popularity_decays_at_its_own_half_life(self, store):
        store.apply(update(reference=0.0, half_life=1.0, popularity_half_life=10.0,
                           popularity={"a": 1.0}, category_popularity={"c": {"a": 1.0}},
                           item_counts={"a": 1.0}))
        store.apply(update(reference=100.0, half_life=1.0, popularity_half_life=10.0,
                           popularity={"a": 1.0}, category_popularity={"c": {"a": 1.0}},
                           item_counts={"a": 1.0}))
        # 100 s is 10 popularity half-lives (moved into the key's frame) but 100 of the
        # normalisers' (past 64: rescaled into the batch's frame)
        assert store.popular(5) == ([("a", 1025.0)], 0.0)
        assert store.popular(5, "c") == ([("a", 1025.0)], 0.0)
        assert store.item_counts(["a"]) == ({"a": 1.0 + 2.0**-100}, 100.0)

    def test_blend_tally_adds_up(self, store):
        assert store.blend_tally() == {}
        store.apply(update(blend={"trials": 2, "hits:mf": 1}, events=2))
        store.apply(update(blend={"trials": 3, "hits:mf": 2, "hits:popular": 1}, events=3,
                           history={"ann": {"tea": 1.0}}, pairs={"tea": {"cup": 1.0}}))
        assert store.blend_tally() == {"trials": 5, "hits:mf": 3, "hits:popular": 1}
        assert store.events_applied() == 5

    def test_blend_tally_forgets_at_twice_its_memory(self, store):
        # 9 trials with a memory of 5: kept; the 10th reaches 2 x 5: every count halves,
        # rounding down, on both stores alike.
        store.apply(update(blend={"trials": 9, "hits:mf": 7, "hits:hybrid": 3},
                           blend_memory=5, events=9))
        assert store.blend_tally() == {"trials": 9, "hits:mf": 7, "hits:hybrid": 3}
        store.apply(update(blend={"trials": 1, "hits:mf": 1}, blend_memory=5, events=1))
        assert store.blend_tally() == {"trials": 5, "hits:mf": 4, "hits:hybrid": 1}
        store.apply(update(blend={"trials": 3}, blend_memory=0, events=3))  # 0: never
        assert store.blend_tally() == {"trials": 8, "hits:mf": 4, "hits:hybrid": 1}

    def test_ties_follow_sorted_set_order(self, store):
        store.apply(update(popularity={"a": 1.0, "c": 1.0, "b": 1.0}))
        assert [item for item, _ in store.popular(3).scores] == ["c", "b", "a"]

    def test_neighbours_keep_the_heaviest(self, store):
        store.apply(update(max_neighbours=2, pairs={"tea": {"cup": 3.0, "pot": 1.0,
                                                            "milk": 2.0}}))
        store.apply(update(max_neighbours=2, pairs={"tea": {"pot": 5.0}}))
        assert store.neighbours(["tea", "nobody"], 10) == {
            "tea": ([("pot", 5.0), ("cup", 3.0)], 0.0), "nobody": ([], None)}

    def test_neighbour_arrays_are_the_neighbours_and_counts_numbered(self, store):
        """What ranking by co-occurrence reads: each list in its order with its landmark,
        the normalisers by code (0 when never counted), kept as they were when read."""
        def batch(reference, **fields):
            store.apply(update(reference=reference, half_life=1.0, max_neighbours=3,
                               **fields))

        def decoded(items, limit):
            found = store.neighbour_arrays(items, limit)
            lists = {item: ([(found.ids[code], weight) for code, weight in
                             zip(*listed.scores, strict=True)], listed.landmark)
                     for item, listed in found.lists.items()}
            named = set(items).union(*(map(itemgetter(0), pairs) for pairs, _ in
                                       lists.values()))
            counts = {item: float(found.counts.scores[found.codes[item]])
                      for item in named if item in found.codes}
            return lists, ({item: count for item, count in counts.items() if count},
                           found.counts.landmark), found

        batch(0.0, item_counts={"a": 1.0, "b": 2.0}, pairs={
            "a": {"b": 1.0, "c": 1.0, "d": 1.0, "e": 2.0}, "b": {"a": 1.0}})
        batch(10.0, item_counts={"c": 1.0}, pairs={"a": {"b": 1.0}, "c": {"a": 3.0}})
        before = decoded(["a", "b", "c", "nobody"], 2)
        assert before[:2] == ({item: tuple(listed) for item, listed in store.neighbours(
            ["a", "b", "c", "nobody"], 2).items()}, store.item_counts(
                ["a", "b", "c", "d", "e", "nobody"]))
        assert before[0]["a"] == ([("b", 1024.0), ("e", 2.0)], 0.0)
        # Rescaled (100 s past the landmarks): what was read before stays as it was read.
        batch(100.0, item_counts={"a": 1.0, "f": 1.0}, pairs={"a": {"f": 1.0}})
        lists, counts, _ = decoded(["a"], 5)
        assert (lists, counts) == ({item: tuple(listed) for item, listed in store.neighbours(
            ["a"], 5).items()}, store.item_counts(["a", "b", "e", "f"]))
        assert decoded(["a", "b", "c", "nobody"], 2)[0] != before[0]
        assert before[2].counts.scores[before[2].codes["b"]] == 2.0

    def test_neighbour_arrays_of_many_long_lists_and_repeated_items(self, store):
        """More than a thousand names, and a list of more than a thousand, in one read; ids
        beyond ASCII; an item asked twice: the same as the lists and counts read apart."""
        pairs = {f"item-{n}": {f"café-{n}-{m}": float(m + 1) for m in range(size)}
                 for n, size in enumerate((1100, 400, 400))}
        store.apply(update(max_neighbours=1100, pairs=pairs, item_counts={
            name: 1.0 + m for n, listed in enumerate(pairs.values())
            for m, name in enumerate(listed) if m % 2 == n % 2}))
        items = ["item-0", "item-1", "item-0", "item-2", "nobody"]
        found = store.neighbour_arrays(items, 1100)
        listed = store.neighbours(items, 1100)
        for item in items:
            codes, weights = found.lists[item].scores
            assert [(found.ids[code], weight) for code, weight in
                    zip(codes, weights, strict=True)] == listed[item].scores
        counts = store.item_counts(found.ids).scores
        assert {item: float(found.counts.scores[code]) for code, item in
                enumerate(found.ids) if found.counts.scores[code]} == counts
        assert found.codes == {item: code for code, item in enumerate(found.ids)}

    def test_history_keeps_greater_scores_and_its_length(self, store):
        store.apply(update(history_length=3, history={"ann": {"tea": 10.0, "cup": 20.0}}))
        store.apply(update(history_length=3, history={"ann": {"tea": 5.0, "pot": -30.0,
                                                              "jam": 40.0}}))
        assert store.history("ann", 10) == [("jam", 40.0), ("cup", 20.0), ("tea", 10.0)]
        assert store.history("nobody", 10) == []

    def test_history_times_are_kept_to_the_millisecond(self, store):
        store.apply(update(history={"ann": {"tea": 1_700_000_000.123, "cup": -1_700_000_000.5,
                                            "pot": 12.0004}}))
        assert store.history("ann", 10) == [("tea", 1_700_000_000.123), ("pot", 12.0),
                                            ("cup", -1_700_000_000.5)]
        assert store.windows(["ann"], 10) == {"ann": [("tea", 1_700_000_000.123),
                                                      ("pot", 12.0)]}

    def test_user_ids_are_every_user_with_a_history(self, store):
        odd = ["a:b", "a", "*", "[x]?", "caf\u00e9 \U0001f375"]
        many = [f"user-{n}" for n in range(2500)]  # more than one SCAN page
        store.apply(update(history={user: {"tea": 1.0} for user in odd + many}))
        store.apply(update(user_factors={"factors-only": vector(1.0)}))
        store.put_users([("properties-only", {"user_id": "properties-only"})])
        assert set(store.user_ids()) == set(odd + many)

    def test_histories_are_each_users_history(self, store):
        store.apply(update(history_length=3, history={"ann": {"tea": 10.0, "cup": -20.0},
                                                      "bob": {"pot": 5.0}}))
        assert store.histories(["ann", "bob", "nobody"], 1) == {
            "ann": store.history("ann", 1), "bob": [("pot", 5.0)], "nobody": []}
        assert store.histories(["ann"], 10) == {"ann": store.history("ann", 10)}
        assert store.histories([], 10) == {}

    def test_user_state_is_history_and_factors(self, store):
        store.apply(update(history={"ann": {"tea": 10.0, "cup": -20.0}, "bob": {"pot": 5.0}},
                           user_factors={"ann": vector(0.5, 1.0)}))
        history, factors = store.user_state("ann", 1)
        assert history == store.history("ann", 1)
        assert np.array_equal(factors, vector(0.5, 1.0))
        assert store.user_state("bob", 10) == ([("pot", 5.0)], None)
        assert store.user_state("nobody", 10) == ([], None)

    def test_first_read_is_history_factors_and_withdrawal_times(self, store):
        store.apply(update(history={"ann": {"tea": 10.0, "cup": -20.0}},
                           user_factors={"ann": vector(0.5, 1.0)}))
        first = store.first_read("ann", 1)
        assert first.history == store.history("ann", 1)
        assert np.array_equal(first.vector, vector(0.5, 1.0))
        assert first.withdrawals is not None and first.withdrawals.withdrawn(["tea"], 0.0) == set()
        assert store.first_read("ann", 10, factors=False).vector is None
        assert store.first_read("nobody", 10).history == []

    def test_first_read_brings_the_popular_prefix_with_its_landmark(self, store):
        """The same prefix and landmark as :meth:`popular` (on a cluster the list is in the
        global slot, the history in the user's: one pipeline still)."""
        assert store.first_read("ann", 10, popular=5).popular == store.popular(5) == ([], None)
        store.apply(update(history={"ann": {"tea": 10.0}}, user_factors={"ann": vector(1.0)},
                           popularity={"tea": 1.0, "cup": 2.0, "pot": 0.5, "jug": 2.0},
                           reference=100.0))
        for n in (1, 3, 4, 50):
            first = store.first_read("ann", 10, popular=n)
            assert first.popular == store.popular(n)
            assert first.popular.landmark is not None and len(first.popular.scores) == min(n, 4)
            assert first.history == store.history("ann", 10)
            assert np.array_equal(first.vector, vector(1.0))
            assert store.first_read("nobody", 10, False, n).popular == store.popular(n)
        assert store.first_read("ann", 10).popular is None  # not asked for

    def test_each_request_honours_the_withdrawals_stored_before_it(self, store):
        """What a request's first read brings screens like the store would: a withdrawal,
        a re-listing, a deletion made between two requests, and a future withdrawal time
        once it comes."""
        def withdrawn(items, now):
            first = store.first_read("ann", 10, factors=False)
            assert first.withdrawals is not None  # screened without another read
            found = first.withdrawals.withdrawn(items, now)
            assert found == store.screen(items, now)[0]
            # The next request, the times unchanged: the same answer (a Redis store's copy
            # serves it without reloading).
            assert store.first_read("bob", 10).withdrawals.withdrawn(items, now) == found
            return found

        items = ["tea", "cup", "pot", "never-heard-of"]
        store.put_items([(item, {"item_id": item}) for item in items[:3]])
        assert withdrawn(items, 100.0) == set()
        store.put_items([("tea", {"item_id": "tea", "available": False})])
        assert withdrawn(items, 100.0) == {"tea"}
        store.put_items([("tea", {"item_id": "tea"}), ("pot", None)])  # re-listed, deleted
        assert withdrawn(items, 100.0) == {"pot"}
        store.put_items([("cup", {"item_id": "cup", "expires_at": 500.0})])
        assert withdrawn(items, 499.9) == {"pot"}
        assert withdrawn(items, 500.0) == {"cup", "pot"}
        store.put_items([("cup", {"item_id": "cup", "expires_at": 900.0})])  # extended
        assert withdrawn(items, 500.0) == {"pot"}

    def test_a_request_never_shows_an_item_withdrawn_before_it(self, store):
        engine = Engine(store, EngineConfig())
        store.apply(update(popularity={"tea": 3.0, "cup": 2.0, "pot": 1.0}))
        store.put_items([(item, {"item_id": item}) for item in ("tea", "cup", "pot")])

        def listed(model="popular"):
            return [item for item, _ in engine.recommend("ann", 2, 100.0, model).items]

        assert listed() == ["tea", "cup"]
        store.put_items([("tea", {"item_id": "tea", "expires_at": 50.0})])
        assert listed() == ["cup", "pot"] and listed("hybrid") == ["cup", "pot"]
        store.put_items([("tea", {"item_id": "tea"})])
        assert listed() == ["tea", "cup"]

    def test_windows_are_positive_newest_first(self, store):
        store.apply(update(history={"ann": {"tea": 10.0, "cup": -20.0, "pot": 30.0}}))
        assert store.windows(["ann", "bob"], 5) == {"ann": [("pot", 30.0), ("tea", 10.0)],
                                                    "bob": []}
        assert store.windows(["ann"], 1) == {"ann": [("pot", 30.0)]}

    def test_catalog_documents(self, store):
        store.put_items([("tea", {"item_id": "tea", "categories": ["drinks"]}),
                         ("cup", {"item_id": "cup"})])
        store.put_users([("ann", {"user_id": "ann", "properties": {"tier": "gold"}})])
        assert store.get_item("tea") == {"item_id": "tea", "categories": ["drinks"]}
        assert store.get_item("nothing") is None
        assert store.get_user("ann")["properties"] == {"tier": "gold"}
        assert store.item_categories(["tea", "cup", "nothing"]) == {"tea": ["drinks"],
                                                                   "cup": []}

    def test_document_changes_are_never_skipped(self, store):
        store.put_items([("tea", {"item_id": "tea", "categories": ["drinks"]}),
                         ("cup", {"item_id": "cup"})])
        cursor, changed = store.changed_documents(None)
        assert changed == {"tea": {"item_id": "tea", "categories": ["drinks"]},
                           "cup": {"item_id": "cup"}}
        store.put_items([("tea", None), ("pot", {"item_id": "pot"})])
        _, later = store.changed_documents(cursor)
        assert later["tea"] is None and later["pot"] == {"item_id": "pot"}  # deleted, new

    def test_each_change_is_read_once(self, store):
        """A change read is not read again (a refresh every 0.25 s would otherwise fetch
        every vector changed within the Redis store's overlap each time); a change
        written since is, with its new value."""
        store.apply(update(item_factors={"tea": vector(1.0, 0.0), "cup": vector(0.0, 2.0)}))
        store.put_items([("tea", {"item_id": "tea"})])
        items, changed = store.changed_items(None)
        documents, described = store.changed_documents(None)
        assert set(changed) == {"tea", "cup"} and set(described) == {"tea"}
        for _ in range(2):
            items, changed = store.changed_items(items)
            documents, described = store.changed_documents(documents)
            assert changed == {} and described == {}
        store.apply(update(item_factors={"tea": vector(3.0, 3.0)}))
        store.put_items([("tea", {"item_id": "tea", "price": 2})])
        items, changed = store.changed_items(items)
        documents, described = store.changed_documents(documents)
        assert list(changed) == ["tea"] and np.array_equal(changed["tea"], vector(3.0, 3.0))
        assert described == {"tea": {"item_id": "tea", "price": 2}}
        assert store.changed_items(items)[1] == {} == store.changed_documents(documents)[1]

    def test_factors_round_trip_and_changes_are_never_skipped(self, store):
        cursor, changed = store.changed_items(None)
        assert changed == {}
        store.apply(update(user_factors={"ann": vector(0.5, 1.0)},
                           item_factors={"tea": vector(1.0, 0.0), "cup": vector(0.0, 2.0)}))
        assert np.array_equal(store.user_factors(["ann", "bob"])["ann"], vector(0.5, 1.0))
        assert set(store.item_factors(["tea", "cup", "pot"])) == {"tea", "cup"}
        cursor, changed = store.changed_items(cursor)
        assert set(changed) == {"tea", "cup"}
        store.apply(update(item_factors={"tea": vector(3.0, 3.0)}))
        _, changed = store.changed_items(cursor)
        assert "tea" in changed and np.array_equal(changed["tea"], vector(3.0, 3.0))
        assert set(store.sample_items(10)) == {"tea", "cup"}
        assert len(store.sample_items(1)) == 1

    def test_user_factors_are_kept_at_half_precision(self, store):
        store.apply(update(user_factors={"ann": vector(0.1, 1.0)},
                           item_factors={"tea": vector(0.1, 1.0)}))
        kept = store.user_factors(["ann"])["ann"]
        assert kept.dtype == np.float32
        assert np.array_equal(kept, as_stored_user_factors(vector(0.1, 1.0)))
        assert not np.array_equal(kept, vector(0.1, 1.0))
        assert np.array_equal(store.item_factors(["tea"])["tea"], vector(0.1, 1.0))

    def test_applied_offsets_travel_with_the_state(self, store):
        assert store.applied_offsets(["events:0"]) == {}
        store.apply(update(popularity={"tea": 1.0}, offsets={"events:0": 41, "events:1": 7}))
        store.apply(update(offsets={"events:0": 42}))
        assert store.applied_offsets(["events:0", "events:1", "events:2"]) == {
            "events:0": 42, "events:1": 7}

    def test_an_event_id_is_applied_once_within_the_window(self, store):
        day = BUCKET_SECONDS
        store.apply(update(popularity={"tea": 1.0}, events=1,
                           claims=[Claim("e1", "0:1", 10 * day)]))
        # Another record with e1 (a retry, a re-import), and a repeat within the batch:
        # the whole batch is refused, naming both, before anything is written.
        with pytest.raises(DuplicateEvents) as refused:
            store.apply(update(popularity={"tea": 5.0}, events=3,
                               claims=[Claim("e1", "3:9", 11 * day), Claim("e2", "0:2", day),
                                       Claim("e2", "0:3", day)]))
        assert refused.value.positions == {"3:9", "0:3"}
        assert store.popular(5) == ([("tea", 1.0)], 0.0) and store.events_applied() == 1
        # The same record again (a replay) is itself, not a repeat.
        store.apply(update(popularity={"cup": 1.0}, events=1, duplicates=2,
                           claims=[Claim("e1", "0:1", 10 * day), Claim("e2", "0:2", 10 * day)]))
        assert store.duplicates_skipped() == 2
        # Eight days of reception later (in whatever event time), e1 is forgotten.
        store.apply(update(events=1, claims=[Claim("e3", "0:4", 18 * day)]))
        store.apply(update(events=1, claims=[Claim("e1", "1:5", 18 * day)]))
        with pytest.raises(DuplicateEvents):
            store.apply(update(events=1, claims=[Claim("e3", "2:5", 18 * day)]))

    def test_ping(self, store):
        assert store.ping() is True

    def test_withdrawn_items_unavailable_deleted_or_expired(self, store):
        store.put_items([("tea", {"item_id": "tea", "available": False}),
                         ("cup", {"item_id": "cup", "expires_at": 100.0}),
                         ("pot", {"item_id": "pot", "expires_at": 300.0}),
                         ("jam", {"item_id": "jam"}), ("gone", None)])
        everything = ["tea", "cup", "pot", "jam", "gone", "never-heard-of"]
        assert store.screen(everything, now=200.0) == ({"tea", "cup", "gone"}, {})
        withdrawn, documents = store.screen(everything, now=300.0, documents=True)
        assert withdrawn == {"tea", "cup", "pot", "gone"}
        assert documents == {"jam": {"item_id": "jam"}}
        assert store.get_item("gone") is None
        # The last document of an item in a batch wins; a new document can bring it back.
        store.put_items([("tea", {"item_id": "tea", "available": True}),
                         ("jam", {"item_id": "jam"}), ("jam", None),
                         ("gone", {"item_id": "gone"})])
        assert store.screen(everything, now=200.0)[0] == {"cup", "jam"}
        assert store.get_item("jam") is None and store.get_item("gone") == {"item_id": "gone"}
        assert store.screen([], now=0.0) == (set(), {})

    def test_event_types_are_kept_as_long_as_the_history_keeps_the_item(self, store):
        store.apply(update(history_length=2, history={"ann": {"tea": 10.0, "cup": 20.0}},
                           event_types={"ann": {"tea": ["view"], "cup": ["view", "purchase"]}}))
        store.apply(update(history_length=2, history={"ann": {"tea": 30.0}},
                           event_types={"ann": {"tea": ["purchase", "view"]}}))
        assert store.interaction_types("ann") == {"tea": {"view", "purchase"},
                                                  "cup": {"view", "purchase"}}
        store.apply(update(history_length=2, history={"ann": {"jam": 40.0}},
                           event_types={"ann": {"jam": ["click"]}}))
        assert store.interaction_types("ann") == {"tea": {"view", "purchase"},
                                                  "jam": {"click"}}
        assert store.interaction_types("nobody") == {}

    def test_event_types_read_back_whatever_the_mix_and_events_without_a_type(self, store):
        """The Redis store keeps the default event types as bits of the history's scores
        and only the others in a hash: every kind of item must still read back as it was
        learned, including items whose events had no type and items of the negative
        history."""
        store.apply(update(history={"ann": {"tea": 10.0, "cup": 20.0, "jam": 30.0,
                                            "pot": -5.0}},
                           event_types={"ann": {"tea": ["view"], "cup": ["click"],
                                                "pot": ["view"]}}))
        assert store.interaction_types("ann") == {"tea": {"view"}, "cup": {"click"},
                                                  "pot": {"view"}}
        store.apply(update(history={"ann": {"jam": 40.0, "tea": 50.0, "cup": 60.0,
                                            "mug": 70.0}},
                           event_types={"ann": {"jam": ["view"], "tea": ["click"],
                                                "cup": ["view"]}}))
        assert store.interaction_types("ann") == {"tea": {"view", "click"},
                                                  "cup": {"click", "view"}, "jam": {"view"},
                                                  "pot": {"view"}}
        store.apply(update(history={"bob": {"tea": 1.0}}))
        assert store.interaction_types("bob") == {}
        store.apply(update(history={"bob": {"tea": 2.0}}, event_types={"bob": {"tea": ["view"]}}))
        assert store.interaction_types("bob") == {"tea": {"view"}}
        store.delete_users(["ann"])
        assert store.interaction_types("ann") == {} and store.history("ann", 10) == []
        assert store.interaction_types("bob") == {"tea": {"view"}}

    def test_each_decayed_key_keeps_its_own_landmark(self, store):
        """The write rule of recommender.decay.renormalise, key by key (half-life 1 s,
        rescale past 64 s): exact powers of two, so every store must agree exactly."""
        def batch(reference, **fields):
            store.apply(update(reference=reference, half_life=1.0, **fields))

        batch(0.0, popularity={"a": 1.0}, category_popularity={"x": {"a": 1.0}},
              item_counts={"a": 1.0}, pairs={"a": {"b": 1.0}})
        # 10 s later: the increments move into the keys' frame (times 2**10).
        batch(10.0, popularity={"a": 1.0, "b": 2.0}, pairs={"b": {"a": 1.0}})
        assert store.popular(5) == ([("b", 2048.0), ("a", 1025.0)], 0.0)
        # A batch behind the landmark (a lagging partition): times 2**-5.
        batch(-5.0, popularity={"b": 32.0})
        assert store.popular(5) == ([("b", 2049.0), ("a", 1025.0)], 0.0)
        # 100 s after the landmark: the key is rescaled into the batch's frame first.
        batch(100.0, popularity={"c": 1.0}, item_counts={"c": 4.0})
        assert store.popular(5) == ([("c", 1.0), ("b", 2049.0 * 2**-100),
                                     ("a", 1025.0 * 2**-100)], 100.0)
        assert store.item_counts(["a", "c"]) == ({"a": 2.0**-100, "c": 4.0}, 100.0)
        # Keys the later batches did not write keep their landmarks; a new key takes the
        # batch's.
        assert store.popular(5, "x") == ([("a", 1.0)], 0.0)
        assert store.neighbours(["a", "b", "c"], 5) == {
            "a": ([("b", 1.0)], 0.0), "b": ([("a", 1.0)], 10.0), "c": ([], None)}
        # A rescale by less than a double holds (2**-3000) writes 0.
        batch(3000.0, pairs={"a": {"c": 1.0}})
        assert store.neighbours(["a"], 5) == {"a": ([("c", 1.0), ("b", 0.0)], 3000.0)}

    def test_category_popularity_follows_the_items_categories(self, store):
        """A view learned before its item's document counts in the item's categories once
        the document arrives; a move takes the score along; a batch applied twice, or a
        document unchanged, changes nothing."""
        decay = ForwardDecay(half_life=1.0, epoch=0.0)
        store.apply(update(popularity={"tea": 3.0, "cup": 1.0}))  # no documents yet
        store.put_items([("tea", {"item_id": "tea", "categories": ["drinks", "hot"]}),
                         ("pot", {"item_id": "pot", "categories": ["drinks"]})], decay)
        assert store.popular(5, "drinks") == ([("tea", 3.0)], 0.0)
        assert store.popular(5, "hot") == ([("tea", 3.0)], 0.0)
        # Later views count in both, as before.
        store.apply(update(popularity={"tea": 1.0},
                           category_popularity={"drinks": {"tea": 1.0}, "hot": {"tea": 1.0}}))
        moved = [("tea", {"item_id": "tea", "categories": ["cold", "drinks"]})]
        for _ in range(2):
            store.put_items(moved, decay)
            assert store.popular(5, "drinks") == ([("tea", 4.0)], 0.0)
            assert store.popular(5, "cold") == ([("tea", 4.0)], 0.0)
            assert store.popular(5, "hot")[0] == []
        store.put_items([("tea", None)], decay)  # deleted: in no category
        assert store.popular(5, "drinks")[0] == [] and store.popular(5, "cold")[0] == []
        assert store.popular(5) == ([("tea", 4.0), ("cup", 1.0)], 0.0)
        # Without a decay (a catalog loaded before any event), nothing moves.
        store.put_items([("cup", {"item_id": "cup", "categories": ["drinks"]})])
        assert store.popular(5, "drinks")[0] == []

    def test_a_score_joins_a_category_in_the_category_keys_frame(self, store):
        """Half-life 1 s, rescale past 64 s: exact powers of two, so the stores agree
        exactly (the write rule of recommender.decay.renormalise, with the overall key's
        landmark as the reference)."""
        decay = ForwardDecay(half_life=1.0, epoch=0.0)
        store.apply(update(reference=10.0, category_popularity={"x": {"a": 1.0}}))
        store.apply(update(reference=0.0, popularity={"b": 1.0}))
        store.put_items([("b", {"item_id": "b", "categories": ["x"]})], decay)
        # The overall key's landmark is 0, x's is 10: 1.0 in x's frame is 2**-10.
        assert store.popular(5, "x") == ([("a", 1.0), ("b", 2.0**-10)], 10.0)
        # A category key 100 s (past 64 half-lives) behind the overall key's landmark is
        # rescaled into the overall key's frame first.
        store.apply(update(reference=0.0, category_popularity={"y": {"a": 1.0}}))
        store.apply(update(reference=100.0, popularity={"c": 1.0}))
        assert store.popular(5)[1] == 100.0
        store.put_items([("c", {"item_id": "c", "categories": ["y"]})], decay)
        assert store.popular(5, "y") == ([("c", 1.0), ("a", 2.0**-100)], 100.0)

    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
    def test_non_finite_values_are_refused_before_anything_is_written(self, store, bad):
        whole = dict(popularity={"tea": 1.0}, history={"ann": {"tea": 5.0}},
                     offsets={"events:0": 3}, events=1)
        refused = [({"pairs": {"tea": {"cup": bad}}}, r"tea\b.*member 'cup'"),
                   ({"popularity": {"cup": bad}}, r"member 'cup'"),
                   ({"category_popularity": {"drinks": {"cup": bad}}},
                    r"drinks.*member 'cup'"),
                   ({"item_counts": {"cup": bad}}, r"member 'cup'"),
                   ({"history": {"bob": {"cup": bad}}}, r"bob.*member 'cup'"),
                   ({"item_factors": {"cup": vector(1.0, bad)}}, r"cup"),
                   ({"reference": bad}, r"reference")]
        for fields, names in refused:
            with pytest.raises(NonFiniteError, match=names):
                store.apply(update(**(whole | fields)))
        assert store.popular(5) == ([], None)
        assert store.history("ann", 5) == [] and store.history("bob", 5) == []
        assert store.applied_offsets(["events:0"]) == {} and store.events_applied() == 0
        assert store.item_factors(["cup"]) == {}

    def test_deleting_users_removes_all_their_state_and_only_theirs(self, store):
        store.apply(update(history={"ann": {"tea": 10.0}, "bob": {"tea": 20.0}},
                           event_types={"ann": {"tea": ["view"]}, "bob": {"tea": ["view"]}},
                           user_factors={"ann": vector(1.0, 0.5), "bob": vector(0.5, 1.0)},
                           popularity={"tea": 2.0}))
        store.put_users([("ann", {"user_id": "ann"}), ("bob", {"user_id": "bob"})])
        store.delete_users(["ann", "nobody"])
        store.delete_users(["ann"])  # again: nothing left to delete, no error
        assert store.history("ann", 10) == [] and store.interaction_types("ann") == {}
        assert store.user_factors(["ann"]) == {} and store.get_user("ann") is None
        assert store.user_state("ann", 10) == ([], None)
        assert list(store.user_ids()) == ["bob"]
        assert store.history("bob", 10) == [("tea", 20.0)] and store.get_user("bob")
        assert store.interaction_types("bob") == {"tea": {"view"}}
        assert set(store.user_factors(["bob"])) == {"bob"}
        assert store.popular(5).scores == [("tea", 2.0)]  # what the items learned stays
        store.delete_users([])
