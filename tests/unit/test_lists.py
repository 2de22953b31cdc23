"""Imported lists' row formats and what is rejected, and how a served list is stored and
blended (recommender.lists, streamrec.storage.list_sets' packing): no services."""

from __future__ import annotations

import orjson
import pytest

from recommender.lists import MAX_ITEMS, ListParser, blend_fresh, detect
from streamrec.storage.list_sets import bucket, pack, unpack
from tests.factories import list_rows, personalize_row


def lines(*rows: object) -> list[str]:
    return [row if isinstance(row, str) else orjson.dumps(row).decode() for row in rows]


def test_personalize_rows_as_personalize_writes_them():
    parser = ListParser("personalize")
    rows = list(parser.rows(lines(personalize_row("ann", ("tea", "cup"), (0.7, 0.2)),
                                  personalize_row("bob", ("cup",)))))
    assert [(row.owner, row.items, row.scores) for row in rows] == [
        ("ann", ["tea", "cup"], [0.7, 0.2]), ("bob", ["cup"], [1.0])]
    assert parser.read == 2 and parser.rejected.total == 0


def test_the_documentations_own_example_rows_are_accepted():
    # Amazon Personalize's "Batch inference job output examples", USER_PERSONALIZATION and
    # RELATED_ITEMS (shortened): every ranked row carries "error": null.
    users = ListParser("personalize")
    (row,) = users.rows(['{"input":{"userId":"4638"},"output":{"recommendedItems":["63992",'
                         '"115149","110102"],"scores":[0.0152238,0.0069081,0.0068222]},'
                         '"error":null}'])
    assert (row.owner, row.items, row.scores[0]) == ("4638", ["63992", "115149", "110102"],
                                                     0.0152238)
    items = ListParser("personalize", similar=True)
    (row,) = items.rows(['{"input":{"itemId":"105"},"output":{"recommendedItems":["106",'
                         '"107"],"scores":[0.01,0.009]},"error":null}'])
    assert (row.kind, row.owner) == ("item", "105")


def test_every_bad_row_is_counted_by_reason_with_its_line():
    parser = ListParser("personalize")
    rows = list(parser.rows(lines(
        personalize_row("ann"),
        "{not json",
        [1, 2],
        {"input": {"userId": "cat"}, "error": "User not found\n in the solution"},
        {"input": {}, "output": {"recommendedItems": ["a"]}},
        {"input": {"userId": 7}, "output": {"recommendedItems": ["a"]}},
        personalize_row("dan", ("a", "b"), (1.0,)),
        {"input": {"userId": "eve"}, "output": {"recommendedItems": ["a"], "scores": ["x"]}},
        personalize_row("fay", tuple(f"i{n}" for n in range(MAX_ITEMS + 1))),
        personalize_row("gus", ("a", "a")),
        personalize_row("hal", ()),
        "",
        {"input": {"userId": "ivy"}},
        personalize_row("jon", (3,)),
        personalize_row("kim", ("a", "b\x01")),
        {"input": {"userId": "lea"}, "output": {"recommendedItems": ["a"], "scores": [True]}},
    )))
    assert [row.owner for row in rows] == ["ann"]
    assert {entry["reason"]: entry["lines"] for entry in parser.rejected.summary()} == {
        "not JSON": [2], "not a JSON object": [3],
        "error: User not found in the solution": [4], "input.userId: missing": [5],
        "input.userId: not a string": [6], "scores: 1 for 2 items": [7],
        "scores: not numbers": [8, 16],
        f"output.recommendedItems: more than {MAX_ITEMS} items": [9],
        "output.recommendedItems: an item appears twice": [10],
        "output.recommendedItems: empty": [11], "output: missing or not an object": [13],
        "output.recommendedItems item: not a string": [14],
        "output.recommendedItems item: empty, longer than 256 or with control characters":
            [15]}
    assert parser.read == 15  # the blank line is not a row


def test_non_finite_scores_are_refused():
    # JSON has no NaN nor infinity (orjson refuses 1e999 as not JSON); a CSV can carry them.
    parser = ListParser("csv")
    assert list(parser.rows(["user_id,items,scores", "ann,a|b,1|nan", "bob,a,inf"])) == []
    assert parser.rejected.lines == {"scores: not finite": [2, 3]}


def test_plain_jsonl_and_csv_and_similar_items():
    jsonl = ListParser("jsonl")
    (row,) = jsonl.rows(lines(*list_rows(["ann"], ["a", "b", "c"], k=2)))
    assert (row.kind, row.owner, row.items, row.scores) == ("user", "ann", ["a", "b"],
                                                            [2.0, 1.0])
    csv = ListParser("csv")
    found = list(csv.rows(["user_id,items,scores", "ann,a|b,0.5|0.25", "bob,c,",
                           "cat,a,b,c", ",a,"]))
    assert [(row.owner, row.items, row.scores) for row in found] == [
        ("ann", ["a", "b"], [0.5, 0.25]), ("bob", ["c"], [1.0])]
    assert csv.rejected.lines == {"4 columns, the header has 3": [4], "user_id: missing": [5]}
    with pytest.raises(ValueError, match="csv header: 'user,items' is not user_id,items"):
        list(ListParser("csv").rows(["user,items", "ann,a"]))
    similar = ListParser("personalize", similar=True)
    (row,) = similar.rows(lines(personalize_row("tea", ("cup",), similar=True)))
    assert (row.kind, row.owner) == ("item", "tea")


def test_the_format_is_detected_from_the_first_line():
    assert detect(orjson.dumps(personalize_row()).decode()) == "personalize"
    assert detect(orjson.dumps(list_rows(["ann"], ["a"])[0]).decode()) == "jsonl"
    assert detect("\ufeffuser_id,items,scores") == "csv"


def test_a_list_is_stored_compactly_and_read_back():
    stored = pack(["tea", "cup\n", "pot"], [0.9, 0.5, 1e-3])
    assert unpack(stored) == [("tea", 0.9), ("cup\n", 0.5), ("pot", 1e-3)]
    assert len(stored) < 40
    assert bucket("user", "ann") == bucket("user", "ann") and bucket("item", "x")[0] == "i"


def test_the_fresh_blend_lifts_what_both_rank_and_keeps_the_list_without_fresh_items():
    listed = [("a", 3.0), ("b", 2.0), ("c", 1.0)]
    assert blend_fresh(listed, [], 0.5, 60.0) == listed
    assert blend_fresh(listed, ["x"], 0.0, 60.0) == listed
    blended = [item for item, _ in blend_fresh(listed, ["c", "x"], 0.5, 60.0)]
    assert blended[0] == "c" and set(blended) == {"a", "b", "c", "x"}


class _Imported:
    """An external model as the engine sees one: lists per user, and a fallback."""

    def __init__(self, lists: dict[str, list[str]], fallback: str | None) -> None:
        self.lists = lists
        self.fallback = fallback

    def rank(self, reads, n):
        listed = self.lists.get(reads.user_id)
        return None if listed is None else [(item, 1.0 / (rank + 1))
                                            for rank, item in enumerate(listed[:n])]


def _engine(fallback: str | None):
    from recommender.base import Interaction
    from recommender.engine import Engine
    from recommender.hyperparameters import EngineConfig
    from recommender.store import InMemoryStore

    engine = Engine(InMemoryStore(), EngineConfig())
    engine.learn_many([Interaction("ann", "tea", 1.0, 1.0), Interaction("bob", "tea", 2.0, 1.0),
                       Interaction("bob", "cup", 3.0, 1.0), Interaction("cat", "pot", 4.0, 1.0)])
    imported = _Imported({"ann": ["tea", "cup", "jam", "pot"]}, fallback)
    engine.external_models = lambda model: imported if model == "lists:x" else None
    return engine


def test_the_engine_screens_an_external_list_and_falls_back_for_users_without_one():
    engine = _engine("cooccurrence")
    ann = engine.recommend("ann", 2, now=5.0, model="lists:x")
    assert (ann.model, [item for item, _ in ann.items]) == ("lists:x", ["cup", "jam"])  # tea seen
    bob = engine.recommend("bob", 2, now=5.0, model="lists:x")
    assert bob.model == "cooccurrence"  # no list: the set's fallback, named
    assert engine.recommend("nobody", 2, now=5.0, model="lists:x").model == "popular"
    missing = engine.recommend("ann", 2, now=5.0, model="lists:other")  # no such set
    assert missing.model == "lists:other" and set(missing.backfill) == {
        item for item, _ in missing.items}


def test_without_a_fallback_a_user_without_a_list_gets_flagged_popular_backfill():
    bob = _engine(None).recommend("bob", 3, now=5.0, model="lists:x")
    assert bob.model == "lists:x" and bob.items and set(bob.backfill) == {
        item for item, _ in bob.items}
