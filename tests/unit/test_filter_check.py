"""``recommender.filters.check``: what the console's filter editor shows as one types."""

from __future__ import annotations

import pytest

from recommender.filters import MAX_LENGTH, check


def test_a_valid_expression_gives_its_action_and_parameters():
    assert check('EXCLUDE ItemID WHERE Items.categories IN ($GENRES) AND Items.price > $MIN'
                 ) == {"valid": True, "message": None, "position": None, "action": "EXCLUDE",
                       "parameters": ["GENRES", "MIN"], "uses_current_item": False}
    assert check("INCLUDE ItemID WHERE Items.brand = CurrentItem.brand")["uses_current_item"]


@pytest.mark.parametrize(("expression", "position", "words"), [
    ("INCLUDE ItemID WHERE Items.price <", 35, "expected a value after <"),
    ("INCLUDE ItemID WHERE Items.price < 5 AND", 41, "expected"),
    ("INCLUDE ItemID WHERE Items.price ~ 5", 34, "unexpected character"),
    ("INCLUDE ItemID WHERE Items.title = \"open", 36, None),
    ("KEEP ItemID", 1, "INCLUDE or EXCLUDE"),
])
def test_an_invalid_one_names_the_parsers_message_and_position(expression, position, words):
    found = check(expression)
    assert found["valid"] is False and found["action"] is None
    assert found["position"] == position
    assert found["message"].endswith(f"at position {position}")
    if words:
        assert words in found["message"]


def test_what_has_no_position_says_so():
    assert check("") == {"valid": False, "message": "filter: the expression is empty",
                         "position": None, "action": None, "parameters": [],
                         "uses_current_item": False}
    assert check("x" * (MAX_LENGTH + 1))["message"].startswith(f"filter: longer than {MAX_LENGTH}")
    assert check(None)["message"] == "filter: the expression must be a string"
