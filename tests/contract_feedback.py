"""One suite for every FeedbackStore: counted once, replays are no-ops, placements are
versioned and logged. Subclasses provide the ``feedback`` fixture."""

from __future__ import annotations

from recommender.attribution import Credit, Impression


def impression(rid: str = "r1", variant: str = "B", items=("tea", "cup"),
               allocated: bool = True) -> Impression:
    return Impression(rid, "ann", "home", variant, "hybrid", tuple(items), 100.0, allocated)


def credit(rid: str = "r1", item: str = "cup", kind: str = "click", position: int = 1,
           variant: str = "B") -> Credit:
    return Credit(rid, "home", variant, item, position, kind)


class FeedbackContract:
    def test_impressions_are_kept_and_counted_once(self, feedback):
        assert feedback.record_impressions([impression("r1"), impression("r2")], 60) == 2
        assert feedback.record_impressions([impression("r1")], 60) == 0  # a replay
        assert feedback.impressions(["r1", "missing"]) == {"r1": impression("r1")}
        assert feedback.variant_counters("home") == {"B": {"impressions": 2, "items_shown": 4}}

    def test_impressions_not_allocated_are_kept_but_counted_nowhere(self, feedback):
        forced = impression("r3", "popular", allocated=False)
        assert feedback.record_impressions([forced], 60) == 1
        assert feedback.impressions(["r3"]) == {"r3": forced}
        assert feedback.variant_counters("home") == {}

    def test_credits_count_once_per_list_item_and_type(self, feedback):
        feedback.record_impressions([impression("r1"), impression("r2", "A")], 60)
        fresh = feedback.credit([credit(), credit(), credit(kind="purchase"),
                                 credit(item="tea", position=0),
                                 credit("r2", item="tea", position=0, variant="A")], 60)
        assert fresh == [True, False, True, True, True]
        counters = feedback.variant_counters("home")
        assert counters["B"] == {"impressions": 1, "items_shown": 2, "click": 2, "click@1": 1,
                                 "click@0": 1, "purchase": 1, "purchase@1": 1,
                                 "lists_rewarded": 1}
        assert counters["A"] == {"impressions": 1, "items_shown": 2, "click": 1, "click@0": 1,
                                 "lists_rewarded": 1}
        assert feedback.variant_counters("nowhere") == {}

    def test_waiting_feedback_is_settled_once(self, feedback):
        feedback.record_impressions([impression("r1")], 60)
        feedback.wait([("e1", 10.0), ("e2", 5.0), ("e3", 7.0)])
        feedback.wait([("e1", 99.0)])  # a replay keeps its time to give up
        assert feedback.waiting() == [("e2", 5.0), ("e3", 7.0), ("e1", 10.0)]
        # Two credits settling e1 (a concurrent retry, a replay after a crash): one counts.
        assert feedback.credit([credit(), credit()], 60, ["e1", "e1"]) == [True, None]
        assert feedback.credit([credit()], 60, ["e3"]) == [False]  # e3 repeats e1's click
        feedback.wait([("e4", 8.0)])
        # Settled with the placement of its list (None: the list is not known).
        assert feedback.settle([("e2", "no_impression", None), ("e2", "no_impression", None),
                                ("e4", "late", "home")]) == {"no_impression": 1, "late": 1}
        assert feedback.waiting() == []
        assert feedback.outcomes() == {"credited": 1, "duplicate": 1, "no_impression": 1,
                                       "late": 1}
        # A credit counts for its list's placement in the same step.
        assert feedback.outcomes("home") == {"credited": 1, "duplicate": 1, "late": 1}
        assert feedback.variant_counters("home")["B"]["click"] == 1

    def test_outcomes_add_up(self, feedback):
        feedback.count_outcomes({"late": 2, "no_impression": 1})
        feedback.count_outcomes({"late": 1})
        assert feedback.outcomes() == {"late": 3, "no_impression": 1}

    def test_outcomes_are_kept_per_placement_too(self, feedback):
        feedback.count_outcomes({"late": 2, "no_impression": 1}, {"home": {"late": 2}})
        feedback.count_outcomes({"credited": 1}, {"shop": {"credited": 1}})
        assert feedback.outcomes("home") == {"late": 2}
        assert feedback.outcomes("shop") == {"credited": 1}
        assert feedback.outcomes("nowhere") == {}
        assert feedback.outcomes() == {"late": 2, "no_impression": 1, "credited": 1}

    def test_a_placement_is_created_only_if_absent(self, feedback):
        config = {"name": "home", "strategy": "split", "variants": []}
        assert feedback.create_placement(config, "sim", 1.0)
        assert not feedback.create_placement({**config, "strategy": "bandit"}, "sim", 2.0)
        assert feedback.placements()["home"]["strategy"] == "split"
        assert len(feedback.placement_log("home")) == 1

    def test_deleting_a_placement_removes_what_it_owns(self, feedback):
        feedback.put_placement({"name": "home", "strategy": "split", "variants": []}, "a", 1.0)
        feedback.put_placement({"name": "shop", "strategy": "split", "variants": []}, "a", 1.0)
        feedback.record_impressions([impression("r1")], 60)
        feedback.count_outcomes({"late": 1}, {"home": {"late": 1}})
        removed = feedback.delete_placement("home")
        assert removed == {"configuration": 1, "log_entries": 1, "variant_counters": 2,
                           "outcomes": 1}
        assert set(feedback.placements()) == {"shop"}
        assert feedback.placement_log("home") == [] and feedback.outcomes("home") == {}
        assert feedback.variant_counters("home") == {}
        assert feedback.delete_placement("home") == dict.fromkeys(removed, 0)

    def test_placements_are_versioned_and_logged(self, feedback):
        config = {"name": "home", "strategy": "split", "variants": []}
        first = feedback.put_placement(config, "ops", 1.0)
        second = feedback.put_placement({**config, "strategy": "bandit"}, "ops", 2.0)
        assert (first["version"], second["version"]) == (1, 2)
        assert feedback.placements() == {"home": second}
        log = feedback.placement_log("home")
        assert [entry["version"] for entry in log] == [2, 1]
        assert log[0]["config"]["strategy"] == "bandit" and log[1]["at"] == 1.0

    def test_bandit_state_learns_once_and_is_halved_at_the_cap(self, feedback):
        # What clustered and contextual placements keep: each impression and each list's
        # first reward add once, replays add nothing, and a variant's state is halved when
        # its count reaches the cap (so it stays bounded).
        feedback.cap = 20
        contextual = {"strategy": "contextual", "propensity": 0.5,
                      "features": {"ctx.device.mobile": 1.0, "hour.sin": 0.5}}
        clustered = {"strategy": "clustered", "propensity": 0.5, "segment": 1,
                     "features": {"segment.1": 0.75, "segment.2": 0.25}}
        shown = [Impression(f"c{n}", "ann", "ctx", "a", "popular", ("tea",), 1.0, True,
                            contextual) for n in range(19)]
        shown += [Impression(f"s{n}", "ann", "seg", "b", "popular", ("tea",), 1.0, True,
                             clustered) for n in range(3)]
        assert feedback.record_impressions(shown + shown[:2], 60) == 22
        feedback.credit([Credit("c0", "ctx", "a", "tea", 0, "click", contextual),
                         Credit("c0", "ctx", "a", "tea", 0, "purchase", contextual),
                         Credit("s0", "seg", "b", "tea", 0, "click", clustered)], 60)
        state = feedback.bandit_state("ctx")
        assert state["a|n"] == 19 and state["a|A|0|0"] == 19 and state["a|b|0"] == 1
        assert feedback.bandit_state_changes("ctx") == 20  # 19 impressions, 1 first reward
        assert feedback.bandit_state("seg") == {
            "b|n": 3, "b|s1|n": 2.25, "b|s2|n": 0.75, "b|s1|r": 0.75, "b|s2|r": 0.25,
            "changes": 4}
        feedback.record_impressions([Impression("c19", "ann", "ctx", "a", "popular",
                                                ("tea",), 1.0, True, contextual)], 60)
        halved = feedback.bandit_state("ctx")
        assert halved["a|n"] == 10 and halved["a|A|0|0"] == 10 and halved["a|b|0"] == 0.5
        assert feedback.delete_placement("ctx") is not None
        assert feedback.bandit_state("ctx") == {}

    def test_bandit_state_starts_afresh_when_its_meaning_changes(self, feedback):
        config = {"name": "seg", "strategy": "clustered", "segments": 4,
                  "variants": [{"name": "b"}]}
        feedback.put_placement(config, "t", 0.0)
        clustered = {"strategy": "clustered", "propensity": 0.5,
                     "features": {"segment.1": 1.0}}
        feedback.record_impressions([Impression("s0", "ann", "seg", "b", "popular", ("tea",),
                                                1.0, True, clustered)], 60)
        feedback.put_placement({**config, "floor": 0.1}, "t", 1.0)  # same segments: kept
        assert feedback.bandit_state("seg") == {"b|n": 1, "b|s1|n": 1, "changes": 1}
        feedback.put_placement({**config, "segments": 8}, "t", 2.0)  # other segments
        assert feedback.bandit_state("seg") == {}
        assert feedback.bandit_state_changes("seg") == 0
