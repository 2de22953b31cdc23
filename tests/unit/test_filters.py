"""Filter expressions: the parser (with hostile input), binding, evaluation, and the engine
screening lists through them over the in-memory store."""

from __future__ import annotations

import re

import pytest

from recommender.base import Interaction
from recommender.engine import Engine, EngineConfig
from recommender.filters import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_LENGTH,
    MAX_VALUES,
    FilterError,
    parse,
)
from recommender.screening import Screen, take
from recommender.store import InMemoryStore

WHERE = "INCLUDE ItemID WHERE "


def keeps(expression: str, document: dict, values: dict | None = None,
          event_types=(), current: dict | None = None) -> bool:
    return parse(expression).bind(values).predicate(current)(document, event_types)


# --- parsing --------------------------------------------------------------------------------

def test_the_examples_parse():
    exclude = parse('EXCLUDE ItemID WHERE Items.genre IN ("Horror")')
    assert (exclude.action, exclude.parameters, exclude.uses_items) == ("EXCLUDE", [], True)
    cheap = parse(WHERE + "Items.price < $MAX_PRICE AND Items.available = true")
    assert cheap.parameters == ["MAX_PRICE"] and len(cheap.conditions) == 2
    bought = parse('EXCLUDE ItemID WHERE Interactions.event_type IN ("purchase")')
    assert bought.uses_interactions and not bought.uses_items
    same = parse(WHERE + "Items.categories IN (CurrentItem.categories)")
    assert same.uses_current_item


def test_keywords_in_any_case_and_precedence_of_and_over_or():
    rule = parse('include itemid where items.a = 1 or items.b = 2 and items.c = 3')
    assert rule.root.operator == "OR" and rule.root.parts[1].operator == "AND"
    grouped = parse(WHERE + "(Items.a = 1 OR Items.b = 2) AND Items.c = 3")
    assert grouped.root.operator == "AND"


@pytest.mark.parametrize(("expression", "message", "position"), [
    ('EXCLUDE ItemID WHERE Items.genre IN', "expected ( after IN", 36),
    ('EXCLUDE ItemID WHERE Items.genre IN (', "expected a value after (", 38),
    ('EXCLUDE ItemID WHERE Items.genre IN ()', "expected a value after (, found )", 38),
    ('EXCLUDE ItemID WHERE Items.genre IN ("a",)', "expected a value after ,", 42),
    ('EXCLUDE ItemID WHERE Items.genre IN ("a" "b")',
     "expected , or ) after a value in the IN list, found a string", 42),
    ("REMOVE ItemID WHERE Items.a = 1", "expected INCLUDE or EXCLUDE, found REMOVE", 1),
    ("INCLUDE ItemID", "expected WHERE after ItemID", 15),
    ("INCLUDE Items WHERE Items.a = 1", "expected ItemID after INCLUDE", 9),
    (WHERE + "Items.price <", "expected a value after <", 35),
    (WHERE + "Items.price == 1", "expected a value after =, found =", 35),
    (WHERE + "Items.a = 1 Items.b = 2", "expected AND, OR or the end", 34),
    (WHERE + "(Items.a = 1", "expected ) after the condition", 34),
    (WHERE + "Items.a = 1)", "expected AND, OR or the end", 33),
    (WHERE + 'Items.a = "x', "unterminated string", 32),
    (WHERE + "Items.a = $", "expected a parameter name", 32),
    (WHERE + "Items = 1", "expected . after Items", 28),
    (WHERE + "Items.a ~ 1", "unexpected character '~'", 30),
    (WHERE + "Items.a LIKE 1", "expected =, !=, <, <=, >, >=, IN or NOT IN after Items.a", 30),
    (WHERE + "Items.a NOT = 1", "expected IN after NOT", 34),
    (WHERE + "People.a = 1", "expected a condition", 22),
    (WHERE + "Users. = 1", "expected a property name after Users., found =", 29),
    (WHERE + "Items.a IN (Users)", "expected . after Users, found )", 39),
    (WHERE + "Users.age >= ", "expected a value after >=", 35),
    (WHERE + "Interactions.item_id = 1", "Interactions has only event_type", 35),
    (WHERE + "Interactions.event_type > 1", "takes =, !=, IN or NOT IN", 46),
    (WHERE + "CurrentItem.a = 1", "CurrentItem goes on the right", 22),
    (WHERE + "Items.a = 1e999", "number out of range", 32),
    (WHERE + "Items.a = 12abc", "not a number", 32),
    (WHERE + "Items.a = NaN", "expected a value after =, found NaN", 32),
    (WHERE + "Items.a = 1 AND", "expected a condition (Items.<name>, Users.<name> or Interactions."
             "event_type) after AND", 37),
    ("", "the expression is empty", None),
    ("   \n\t ", "the expression is empty", None),
])
def test_errors_say_what_was_expected_and_where(expression, message, position):
    with pytest.raises(FilterError) as caught:
        parse(expression)
    assert message in str(caught.value)
    assert caught.value.position == position
    if position is not None:
        assert str(caught.value).endswith(f"at position {position}")


# --- hostile expressions ----------------------------------------------------------------------

def _conditions(count: int) -> str:
    return WHERE + " AND ".join(f"Items.p{n} = {n}" for n in range(count))


@pytest.mark.parametrize(("expression", "message"), [
    ("x" * (MAX_LENGTH + 1), f"longer than {MAX_LENGTH} characters"),
    (WHERE + "Items.a = " + '"' + "y" * 990 + '"', f"longer than {MAX_LENGTH} characters"),
    (WHERE + "(" * (MAX_DEPTH + 1) + "Items.a = 1" + ")" * (MAX_DEPTH + 1),
     f"nested deeper than {MAX_DEPTH}"),
    (WHERE + "(" * 900, f"nested deeper than {MAX_DEPTH}"),
    (_conditions(MAX_CONDITIONS + 1), f"more than {MAX_CONDITIONS} conditions"),
    (WHERE + "Items.a IN (" + ",".join(["1"] * (MAX_VALUES + 1)) + ")",
     f"more than {MAX_VALUES} values in one IN list"),
    (WHERE + 'Items.a = "nul\x00"', "control character U+0000 in a string"),
    (WHERE + "Items.a = 1\x00", "unexpected character U+0000"),
    (WHERE + "Items.a = 1; DROP TABLE items", "unexpected character ';'"),
    (WHERE + 'Items.a = "x") OR ("1" = "1"', "expected AND, OR or the end"),
    (WHERE + "__import__('os').system('true')", "unexpected character \"'\""),
    (WHERE + "__import__(os)", "after WHERE, found __import__"),
    (WHERE + "Items.a = {{7*7}}", "unexpected character '{'"),
    (WHERE + "Items.ünï = 1", "unexpected character 'ü'"),
    (WHERE + "Items.a = 1 \u202e OR Items.b = 2", "unexpected character U+202E"),
    (WHERE + "Items." + "p" * 65 + " = 1", "at most 64 characters"),
    ("INCLUDE ItemID WHERE Items.a = $" + "P" * 65, "expected a parameter name"),
])
def test_hostile_expressions_are_refused_with_a_reason(expression, message):
    with pytest.raises(FilterError, match=re.escape(message)):
        parse(expression)


def test_the_limits_themselves_are_allowed():
    assert len(parse(_conditions(MAX_CONDITIONS)).conditions) == MAX_CONDITIONS
    nested = WHERE + "(" * MAX_DEPTH + "Items.a = 1" + ")" * MAX_DEPTH
    assert parse(nested).conditions[0].name == "a"
    many = WHERE + "Items.a IN (" + ",".join(["1"] * MAX_VALUES) + ")"
    assert len(parse(many).conditions[0].operands) == MAX_VALUES


def test_strings_hold_anything_printable_and_escapes():
    rule = parse(WHERE + r'Items."brand name" = "Ünïcødé \"quoted\" \\ 🍵; DROP"')
    condition = rule.conditions[0]
    assert condition.name == "brand name"
    assert condition.operands[0].value == 'Ünïcødé "quoted" \\ 🍵; DROP'


def test_non_strings_are_refused():
    with pytest.raises(FilterError, match="must be a string"):
        parse(None)  # type: ignore[arg-type]


# --- binding ------------------------------------------------------------------------------------

CHEAP = WHERE + "Items.price < $MAX_PRICE AND Items.categories IN ($GENRES)"


@pytest.mark.parametrize(("values", "message"), [
    ({}, r"\$MAX_PRICE is missing"),
    ({"MAX_PRICE": 20}, r"\$GENRES is missing"),
    ({"MAX_PRICE": 20, "GENRES": "a", "OTHER": 1}, r"\$OTHER is not a parameter"),
    ({"MAX_PRICE": [1, 2], "GENRES": "a"}, r"\$MAX_PRICE takes one value, not a list"),
    ({"MAX_PRICE": 20, "GENRES": []}, r"\$GENRES needs 1 to 100 values"),
    ({"MAX_PRICE": 20, "GENRES": ["a"] * (MAX_VALUES + 1)}, r"\$GENRES needs 1 to 100"),
    ({"MAX_PRICE": None, "GENRES": "a"}, r"\$MAX_PRICE must be a string, number or boolean"),
    ({"MAX_PRICE": {"a": 1}, "GENRES": "a"}, r"\$MAX_PRICE must be"),
    ({"MAX_PRICE": 20, "GENRES": [["a"]]}, r"\$GENRES must be .* \(or a list of them\)"),
    ({"MAX_PRICE": float("nan"), "GENRES": "a"}, r"\$MAX_PRICE must be"),
    ({"MAX_PRICE": "x" * 1025, "GENRES": "a"}, r"\$MAX_PRICE is longer than 1024"),
    ({"MAX_PRICE": 1, "$MAX_PRICE": 2, "GENRES": "a"}, r"\$MAX_PRICE is given twice"),
])
def test_binding_names_the_parameter_at_fault(values, message):
    with pytest.raises(FilterError, match=message):
        parse(CHEAP).bind(values)


def test_parameters_bind_with_or_without_the_dollar():
    bound = parse(CHEAP).bind({"$MAX_PRICE": "20", "GENRES": ["tea", "jam"]})
    keep = bound.predicate()
    assert keep({"item_id": "a", "price": 5, "categories": ["jam"]}, ())
    assert not keep({"item_id": "b", "price": 25, "categories": ["jam"]}, ())
    assert not keep({"item_id": "c", "price": 5, "categories": ["cups"]}, ())


# --- evaluation -------------------------------------------------------------------------------

ITEM = {"item_id": "tea", "categories": ["drinks", "hot"], "price": 3.5, "available": True,
        "created_at": 1_767_225_600.0,  # 2026-01-01T00:00:00Z
        "properties": {"brand": "Ceylon", "stock": 12, "organic": False, "year": "2019"}}


@pytest.mark.parametrize(("condition", "expected"), [
    ('Items.categories IN ("hot", "cold")', True),
    ('Items.categories IN ("cold")', False),
    ('Items.categories NOT IN ("cold")', True),
    ('Items.categories NOT IN ("hot")', False),
    ('Items.categories = "drinks"', True),
    ('Items.categories != "drinks"', False),
    ("Items.price < 4", True), ("Items.price <= 3.5", True), ("Items.price > 3.5", False),
    ("Items.price >= 3.5", True), ("Items.price = 3.5", True), ("Items.price != 3.5", False),
    ('Items.price < "4"', True),  # a string that reads as a number compares as one
    ('Items.price < "cheap"', False),  # nothing to compare: like a missing property
    ('Items.price != "cheap"', True),  # the string "cheap" is not 3.5
    ("Items.available = true", True), ('Items.available = "true"', True),
    ("Items.available = false", False), ("Items.available != false", True),
    ('Items.created_at >= "2026-01-01T00:00:00Z"', True),
    ('Items.created_at > "2026-01-01T01:00:00+01:00"', False),  # the same instant
    ("Items.created_at < 1767225601", True),
    ('Items.item_id = "tea"', True),
    ('Items.brand = "Ceylon"', True), ('Items.brand IN ("Assam", "Ceylon")', True),
    ('Items.brand < "D"', True),  # strings order as strings
    ("Items.stock > 10", True), ('Items.stock = "12"', True),
    ("Items.organic = false", True),
    ("Items.year > 2000", True),  # a numeric string property compares with a number
    ('Items.year = 2019', True),
    ("Items.colour = 1", False), ("Items.colour != 1", False),  # missing: always false
    ('Items.colour NOT IN ("red")', False),
    ("Items.expires_at > 0", False),
    ('Items.brand = "Ceylon" AND (Items.price > 10 OR Items.stock > 10)', True),
    ('Items.brand = "Assam" OR Items.price > 10 OR Items.stock > 100', False),
])
def test_conditions_on_item_properties(condition, expected):
    assert keeps(WHERE + condition, ITEM) is expected
    assert keeps("EXCLUDE ItemID WHERE " + condition, ITEM) is not expected


def test_an_item_without_a_document_has_only_its_id_and_the_contract_defaults():
    bare = {"item_id": "x"}
    assert keeps(WHERE + "Items.available = true", bare)
    assert keeps(WHERE + 'Items.categories NOT IN ("a")', bare)
    assert not keeps(WHERE + "Items.price < 100", bare)
    assert keeps('EXCLUDE ItemID WHERE Items.genre IN ("Horror")', bare)


def test_interactions_read_the_users_event_types_with_the_item():
    bought = 'EXCLUDE ItemID WHERE Interactions.event_type IN ("purchase")'
    assert not keeps(bought, ITEM, event_types={"view", "purchase"})
    assert keeps(bought, ITEM, event_types={"view"})
    assert keeps(bought, ITEM, event_types=())
    only_viewed = WHERE + 'Interactions.event_type NOT IN ("purchase")'
    assert keeps(only_viewed, ITEM, event_types={"view"})
    assert not keeps(only_viewed, ITEM, event_types=())  # never interacted: no event type


def test_current_item_is_the_item_whose_similar_items_are_asked_for():
    same = parse(WHERE + "Items.categories IN (CurrentItem.categories) AND "
                 "Items.price <= CurrentItem.price").bind()
    keep = same.predicate({"item_id": "cup", "categories": ["hot", "mugs"], "price": 4})
    assert keep(ITEM, ())
    assert not keep({**ITEM, "price": 5}, ())
    assert not keep({**ITEM, "categories": ["cold"]}, ())
    # The current item lacks the property: nothing compares with it.
    assert not same.predicate({"item_id": "cup"})(ITEM, ())
    with pytest.raises(FilterError, match="CurrentItem is only known to GET"):
        same.predicate()


def test_required_categories_let_popular_read_per_category():
    def required(condition, values=None, action="INCLUDE"):
        return parse(f"{action} ItemID WHERE {condition}").bind(values).required_categories()

    assert required('Items.categories IN ("a", "b")') == {"a", "b"}
    assert required('Items.categories = "a" AND Items.price < 3') == {"a"}
    assert required('Items.categories IN ("a", "b") AND Items.categories = "b"') == {"b"}
    assert required('Items.categories = "a" OR Items.categories IN ($C)', {"C": ["c"]}) \
        == {"a", "c"}
    assert required('Items.categories = "a" OR Items.price < 3') is None
    assert required('Items.categories NOT IN ("a")') is None
    assert required('Items.categories IN ("a")', action="EXCLUDE") is None


# --- the engine screening through filters and withdrawn items --------------------------------

def _engine(items: int = 100, **config) -> Engine:
    """Items i0..i{items-1}, popularity falling with the index, prices 0..items-1, every
    tenth in category "tens"; ann viewed i0 and bought i1 (co-occurrence and MF know her)."""
    store = InMemoryStore()
    engine = Engine(store, EngineConfig(epoch=0.0, mf_dim=4, **config))
    store.put_items([(f"i{n}", {"item_id": f"i{n}", "price": float(n),
                                "categories": ["tens"] if n % 10 == 0 else ["rest"]})
                     for n in range(items)])
    events = [Interaction(f"u{n}", f"i{m}", 1.0, 1.0, "view")
              for n in range(30) for m in range(items - 3 * n)]
    events += [Interaction("ann", "i0", 2.0, 1.0, "view"),
               Interaction("ann", "i1", 3.0, 1.0, "purchase")]
    engine.learn_many(events)
    return engine


def _ids(scored) -> list[str]:
    return [item for item, _ in scored]


def test_withdrawn_items_are_never_listed_by_any_model():
    engine = _engine()
    top = _ids(engine.popular(5, now=10.0))
    engine.store.put_items([(top[0], {"item_id": top[0], "available": False}),
                            (top[1], {"item_id": top[1], "expires_at": 5.0}),
                            (top[2], None),
                            (top[3], {"item_id": top[3], "expires_at": 50.0})])
    gone = set(top[:3])
    assert not gone & set(_ids(engine.popular(20, now=10.0)))
    assert top[3] in _ids(engine.popular(20, now=10.0))
    assert top[3] not in _ids(engine.popular(20, now=50.0))  # expired from then on
    for model in ("popular", "cooccurrence", "mf", "hybrid"):
        result = engine.recommend("ann", 20, now=10.0, model=model)
        assert len(result.items) == 20 and not gone & set(_ids(result.items)), model
    assert not gone & set(_ids(engine.similar("i0", 50, now=10.0)))


def test_with_nothing_withdrawn_and_no_filter_lists_skip_the_screen():
    """Nothing to screen: every model's list is what a screen judging each candidate (and
    passing it) gives, and no candidate is judged (Screen(None))."""
    engine = _engine(items=60)
    engine.recommend("ann", 10, now=10.0)  # the store's withdrawal times: none
    assert not engine.store._withdrawn
    unscreened = {model: engine.recommend_many("ann", 10, 10.0, [model])[model].items
                  for model in ("popular", "cooccurrence", "mf", "hybrid")}
    judged = []
    make = Engine._screen

    def judging(self, now, item_filter, user_id=None, current=None, withdrawals=None):
        screen = make(self, now, item_filter, user_id, current, withdrawals)
        assert screen.judge is None and screen.passes("anything") and not screen.exhausted
        return Screen(lambda items: judged.extend(items) or set(items), screen.budget)

    engine._screen = judging.__get__(engine)
    for model, items in unscreened.items():
        assert engine.recommend_many("ann", 10, 10.0, [model])[model].items == items, model
        assert len(items) == 10
    assert judged  # the judging screen did judge: the lists above went through it


def test_take_through_a_screen_passing_everything():
    ranking = [(f"i{n}", 10.0 - n) for n in range(10)]
    rounds = []

    def rank(n):
        rounds.append(n)
        return ranking[:n]
    assert take(rank, 3, 2, Screen(None, budget=1), banned={"i0"}) == ranking[1:4]
    assert rounds == [2, 8]  # one item banned in the first round: a second, longer one
    assert take(rank, 20, 5, Screen(None, budget=1)) == ranking


def test_a_filter_removing_nine_in_ten_still_fills_the_list():
    engine = _engine()
    tens = parse('INCLUDE ItemID WHERE Items.categories IN ("tens")').bind()
    cheap = parse("INCLUDE ItemID WHERE Items.price < $MAX").bind({"MAX": 10})
    for model in ("popular", "cooccurrence", "mf", "hybrid"):
        for rule, wanted in ((tens, lambda n: n % 10 == 0), (cheap, lambda n: n < 10)):
            items = _ids(engine.recommend("ann", 5, now=10.0, model=model,
                                          item_filter=rule).items)
            assert len(items) == 5 and all(wanted(int(i[1:])) for i in items), (model, items)
            assert not {"i0", "i1"} & set(items)  # still never what she interacted with
    assert _ids(engine.popular(3, now=10.0, item_filter=tens)) == ["i0", "i10", "i20"]
    assert all(int(i[1:]) < 10 for i in _ids(engine.similar("i0", 5, 10.0, cheap)))


def test_a_filter_that_leaves_nothing_gives_an_empty_list():
    engine = _engine()
    nothing = parse("INCLUDE ItemID WHERE Items.price < 0").bind()
    assert engine.popular(10, now=10.0, item_filter=nothing) == []
    assert engine.similar("i0", 10, 10.0, nothing) == []
    for model in ("popular", "cooccurrence", "mf", "hybrid"):
        assert engine.recommend("ann", 10, 10.0, model, item_filter=nothing).items == []


def test_screening_stops_at_its_limit():
    engine = _engine(items=200, max_screened_candidates=30)
    screened = []
    screen = engine.store.screen
    engine.store.screen = lambda items, now, documents=False: (
        screened.extend(items) or screen(items, now, documents))
    rare = parse("INCLUDE ItemID WHERE Items.price >= 190").bind()
    assert engine.popular(5, now=10.0, item_filter=rare) == []
    assert len(screened) == 30


def test_interactions_filters_read_the_event_types_learned():
    engine = _engine()
    assert engine.store.interaction_types("ann") == {"i0": {"view"}, "i1": {"purchase"}}
    bought = parse('EXCLUDE ItemID WHERE Interactions.event_type IN ("purchase")').bind()
    everything = _ids(engine.popular(100, now=10.0))
    assert "i1" in everything
    listed = _ids(engine.popular(100, now=10.0, item_filter=bought, user_id="ann"))
    assert listed == [item for item in everything if item != "i1"]
    assert "i1" in _ids(engine.popular(100, now=10.0, item_filter=bought, user_id="bob"))


def test_current_item_filters_on_similar_items():
    engine = _engine()
    engine.store.put_items([("i7", {"item_id": "i7", "categories": ["tens"], "price": 7.0})])
    same = parse("INCLUDE ItemID WHERE Items.categories IN (CurrentItem.categories)").bind()
    similar = _ids(engine.similar("i7", 5, 10.0, same))
    assert similar and all(int(i[1:]) % 10 == 0 for i in similar)


# --- Users.<name>: the properties of the user the list is for ---------------------------

ADULT = {"user_id": "ann", "properties": {"age": 34, "genres": ["Jazz", "Blues"],
                                          "country": "FR"}}
CHILD = {"user_id": "kid", "properties": {"age": 9}}


def test_a_users_condition_decides_once_for_every_item():
    rule = parse('EXCLUDE ItemID WHERE Items.rating = "R" AND Users.age < 18')
    assert rule.uses_users and not rule.uses_interactions
    restricted = {"item_id": "a", "properties": {"rating": "R"}}
    assert rule.bind().predicate(user=ADULT)(restricted, ())
    assert not rule.bind().predicate(user=CHILD)(restricted, ())
    # Nobody, or a user without the property: the comparison is false (SQL's NULL), so
    # this EXCLUDE removes nothing; write the INCLUDE form to require the property.
    assert rule.bind().predicate(user=None)(restricted, ())
    adults_only = parse("INCLUDE ItemID WHERE Users.age >= $AGE").bind({"AGE": 18})
    assert adults_only.predicate(user=ADULT)({"item_id": "a"}, ())
    assert not adults_only.predicate(user={"user_id": "x"})({"item_id": "a"}, ())
    assert not adults_only.predicate(user=None)({"item_id": "a"}, ())


def test_a_users_value_compares_items_with_the_users_properties():
    rule = parse("INCLUDE ItemID WHERE Items.categories IN (Users.genres) "
                 "OR Items.country = users.country OR Items.item_id = Users.user_id")
    keep = rule.bind().predicate(user=ADULT)
    assert keep({"item_id": "a", "categories": ["Blues"]}, ())
    assert keep({"item_id": "b", "properties": {"country": "FR"}}, ())
    assert keep({"item_id": "ann"}, ())
    assert not keep({"item_id": "c", "categories": ["Rock"]}, ())
    assert not rule.bind().predicate(user=CHILD)({"item_id": "a", "categories": ["Blues"]}, ())
    # What a user prefers cannot narrow popularity to categories known in advance.
    assert rule.bind().required_categories() is None
    assert not parse("INCLUDE ItemID WHERE Items.price < 5").uses_users
