"""Filter expressions, modelled on Amazon Personalize's: parsed once when registered, bound
to ``$PARAMETERS`` per request, evaluated against item documents and the user's
interactions.

Grammar (keywords and the names ``Items``, ``Users``, ``Interactions``, ``CurrentItem``
and ``ItemID`` in any case; property names exactly as stored)::

    filter     := ("INCLUDE" | "EXCLUDE") "ItemID" "WHERE" or
    or         := and ("OR" and)*
    and        := primary ("AND" primary)*
    primary    := "(" or ")" | condition
    condition  := field operator value
                | field ["NOT"] "IN" "(" value ("," value)* ")"
    field      := "Items." name | "Users." name | "Interactions.event_type"
    operator   := "=" | "!=" | "<" | "<=" | ">" | ">="
    value      := string | number | "true" | "false" | "$"NAME | "CurrentItem." name
                | "Users." name
    name       := letters, digits, "_" and "-" | a string (any stored key)

Strings are double-quoted (``\\"`` and ``\\\\`` escape). ``Items.<name>`` reads ``item_id``,
``categories``, ``price``, ``available``, ``created_at`` and ``expires_at``, then any key
of ``properties``. A list (``categories``) matches ``=`` and ``IN`` when any element does,
``!=`` and ``NOT IN`` when none does. A property the item lacks makes every comparison
false, as SQL's NULL does; so does a value that cannot be compared with it. Values compare
across types where the meaning is plain: ``"20"`` equals ``20``, ``"true"`` equals ``true``,
an RFC 3339 date-time equals its epoch seconds.

``Users.<name>`` is a property of the user the list is for (``user_id``, then any key of
the user's ``properties``, ``PUT /users/{user_id}``): as a field, a condition on the user,
the same for every item (``Users.age >= 18``); as a value, the user's values
(``Items.genres IN (Users.favorite_genres)``). A list without a user, or a user without
the property, makes every comparison with it false.

``Interactions.event_type`` is the set of event types the user had with the item (none:
every comparison is false). ``CurrentItem.<name>`` is a property of the item whose similar
items are asked for. ``$NAME`` is bound per request; a list value binds to every place an
``IN`` list takes it.

Examples
--------
>>> rule = parse('EXCLUDE ItemID WHERE Items.categories IN ("Horror")')
>>> keep = rule.bind().predicate()
>>> keep({"item_id": "a", "categories": ["Horror", "Drama"]}, ()), keep({"item_id": "b"}, ())
(False, True)
>>> cheap = parse("INCLUDE ItemID WHERE Items.price < $MAX_PRICE AND Items.available = true")
>>> keep = cheap.bind({"MAX_PRICE": "20"}).predicate()
>>> keep({"item_id": "a", "price": 12.5}, ()), keep({"item_id": "b", "price": 30}, ())
(True, False)
>>> adults = parse('EXCLUDE ItemID WHERE Items.rating = "R" AND Users.age < 18')
>>> keep = adults.bind().predicate(user={"user_id": "ann", "properties": {"age": 12}})
>>> keep({"item_id": "a", "properties": {"rating": "R"}}, ()), keep({"item_id": "b"}, ())
(False, True)
>>> likes = parse("INCLUDE ItemID WHERE Items.categories IN (Users.genres)")
>>> keep = likes.bind().predicate(user={"user_id": "bob", "properties": {"genres": ["Jazz"]}})
>>> keep({"item_id": "a", "categories": ["Jazz"]}, ()), keep({"item_id": "b"}, ())
(True, False)
>>> parse("INCLUDE ItemID WHERE Items.price <")
Traceback (most recent call last):
...
recommender.filters.FilterError: filter: expected a value after < at position 35
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

import orjson

MAX_LENGTH = 1000  # characters of an expression
MAX_CONDITIONS = 20
MAX_VALUES = 100  # in one IN list, and in one list parameter
MAX_DEPTH = 8  # nested parentheses
MAX_STRING = 1024  # characters of a string value (as a property value may hold)

ITEM_FIELDS = ("item_id", "categories", "price", "available", "created_at", "expires_at")
# What the item contract assumes for a field a document leaves out (schemas/models.py Item);
# an item the catalog has never heard of has only its id.
ITEM_DEFAULTS: dict[str, Any] = {"categories": [], "available": True}
COMPARISONS = ("=", "!=", "<", "<=", ">", ">=")

Value = str | float | bool
ItemDocument = Mapping[str, Any]
Predicate = Callable[[ItemDocument, Collection[str]], bool]


class FilterError(ValueError):
    """An expression or its values that cannot be used; ``str()`` says what and where."""

    def __init__(self, message: str, position: int | None = None) -> None:
        where = "" if position is None else f" at position {position}"
        super().__init__(f"{message}{where}")
        self.position = position


# --- tokens -----------------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![A-Za-z0-9_.])")
_PARAMETER = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]{0,63})(?![A-Za-z0-9_])")
_SYMBOLS = ("!=", "<=", ">=", "=", "<", ">", "(", ")", ",", ".")
_SPACE = " \t\r\n"


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # word, string, number, parameter, symbol, end
    text: str  # as written (a string's decoded value)
    position: int  # 1-based
    value: Any = None

    def describe(self) -> str:
        if self.kind == "end":
            return "the end"
        if self.kind == "string":
            return "a string"
        return self.text


def tokenize(expression: str) -> list[Token]:
    """Split ``expression`` into tokens; positions count characters from 1.

    >>> [t.text for t in tokenize('Items.price <= $MAX')]
    ['Items', '.', 'price', '<=', '$MAX', '']
    """
    tokens: list[Token] = []
    n, end = 0, len(expression)
    while n < end:
        char = expression[n]
        if char in _SPACE:
            n += 1
            continue
        position = n + 1
        if char == '"':
            text, n = _string(expression, n)
            tokens.append(Token("string", text, position, text))
            continue
        if char == "$":
            match = _PARAMETER.match(expression, n)
            if match is None:
                raise FilterError("filter: expected a parameter name (letters, digits, _) "
                                  "after $", position)
            tokens.append(Token("parameter", match.group(0), position, match.group(1)))
            n = match.end()
            continue
        if char.isdigit() or (char == "-" and expression[n + 1:n + 2].isdigit()):
            match = _NUMBER.match(expression, n)
            if match is None:
                raise FilterError("filter: not a number", position)
            number = float(match.group(0))
            if not math.isfinite(number):
                raise FilterError("filter: number out of range", position)
            tokens.append(Token("number", match.group(0), position, number))
            n = match.end()
            continue
        match = _WORD.match(expression, n)
        if match is not None:
            tokens.append(Token("word", match.group(0), position))
            n = match.end()
            continue
        symbol = next((s for s in _SYMBOLS if expression.startswith(s, n)), None)
        if symbol is None:
            raise FilterError(f"filter: unexpected character {_show(char)}", position)
        tokens.append(Token("symbol", symbol, position))
        n += len(symbol)
    tokens.append(Token("end", "", end + 1))
    return tokens


def _show(char: str) -> str:
    return repr(char) if char.isprintable() else f"U+{ord(char):04X}"


def _string(expression: str, start: int) -> tuple[str, int]:
    """The string starting at the quote at ``start``, and the index after its end."""
    parts: list[str] = []
    n = start + 1
    while n < len(expression):
        char = expression[n]
        if char == '"':
            text = "".join(parts)
            if len(text) > MAX_STRING:
                raise FilterError(f"filter: string longer than {MAX_STRING} characters",
                                  start + 1)
            return text, n + 1
        if char == "\\" and expression[n + 1:n + 2] in ('"', "\\"):
            parts.append(expression[n + 1])
            n += 2
            continue
        if not char.isprintable() and char not in _SPACE:
            raise FilterError(f"filter: control character {_show(char)} in a string", n + 1)
        parts.append(char)
        n += 1
    raise FilterError("filter: unterminated string", start + 1)


# --- syntax tree --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Operand:
    kind: str  # literal, parameter, current, user
    value: Any  # the literal, the parameter's name, the current item's or user's property
    position: int


@dataclass(frozen=True, slots=True)
class Condition:
    source: str  # Items, Users or Interactions
    name: str
    operator: str  # one of COMPARISONS, IN, NOT IN
    operands: tuple[Operand, ...]
    position: int


@dataclass(frozen=True, slots=True)
class Junction:
    operator: str  # AND, OR
    parts: tuple[Node, ...]


Node = Condition | Junction


class _Parser:
    def __init__(self, expression: str) -> None:
        self.tokens = tokenize(expression)
        self.at = 0
        self.conditions = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.at]

    def advance(self) -> Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def keyword(self, token: Token, *words: str) -> bool:
        return token.kind == "word" and token.text.upper() in words

    def expect_keyword(self, word: str, after: str) -> Token:
        if not self.keyword(self.token, word.upper()):
            self.fail(word, after)
        return self.advance()

    def expect_symbol(self, symbol: str, after: str) -> Token:
        if not (self.token.kind == "symbol" and self.token.text == symbol):
            self.fail(symbol, after)
        return self.advance()

    def fail(self, wanted: str, after: str | None = None) -> NoReturn:
        token = self.token
        found = f", found {token.describe()}" if token.kind != "end" else ""
        context = f" after {after}" if after else ""
        raise FilterError(f"filter: expected {wanted}{context}{found}", token.position)

    def parse(self) -> tuple[str, Node]:
        if not self.keyword(self.token, "INCLUDE", "EXCLUDE"):
            self.fail("INCLUDE or EXCLUDE")
        action = self.advance().text.upper()
        self.expect_keyword("ItemID", action)
        self.expect_keyword("WHERE", "ItemID")
        root = self.disjunction(0, "WHERE")
        if self.token.kind != "end":
            self.fail("AND, OR or the end", "the condition")
        return action, root

    def disjunction(self, depth: int, after: str) -> Node:
        return self.junction("OR", lambda word: self.conjunction(depth, word), after)

    def conjunction(self, depth: int, after: str) -> Node:
        return self.junction("AND", lambda word: self.primary(depth, word), after)

    def junction(self, operator: str, operand: Callable[[str], Node], after: str) -> Node:
        """``operand (operator operand)*``; ``operand(word)`` parses one after ``word``."""
        parts = [operand(after)]
        while self.keyword(self.token, operator):
            self.advance()
            parts.append(operand(operator))
        return parts[0] if len(parts) == 1 else Junction(operator, tuple(parts))

    def primary(self, depth: int, after: str) -> Node:
        if self.token.kind == "symbol" and self.token.text == "(":
            opening = self.advance()
            if depth + 1 > MAX_DEPTH:
                raise FilterError(f"filter: parentheses nested deeper than {MAX_DEPTH}",
                                  opening.position)
            node = self.disjunction(depth + 1, "(")
            self.expect_symbol(")", "the condition")
            return node
        return self.condition(after)

    def condition(self, after: str) -> Condition:
        start = self.token
        source, name = self.field(after)
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise FilterError(f"filter: more than {MAX_CONDITIONS} conditions", start.position)
        token = self.token
        if self.keyword(token, "NOT", "IN"):
            operator = "IN"
            if self.advance().text.upper() == "NOT":
                self.expect_keyword("IN", "NOT")
                operator = "NOT IN"
            self.expect_symbol("(", "IN")
            operands = [self.operand("(")]
            while self.token.kind == "symbol" and self.token.text == ",":
                comma = self.advance()
                if len(operands) == MAX_VALUES:
                    raise FilterError(f"filter: more than {MAX_VALUES} values in one IN list",
                                      comma.position)
                operands.append(self.operand(","))
            if not (self.token.kind == "symbol" and self.token.text == ")"):
                self.fail(", or )", "a value in the IN list")
            self.advance()
        elif token.kind == "symbol" and token.text in COMPARISONS:
            operator = self.advance().text
            operands = [self.operand(operator)]
        else:
            self.fail("=, !=, <, <=, >, >=, IN or NOT IN", f"{source}.{name}")
        if source == "Interactions" and operator not in ("=", "!=", "IN", "NOT IN"):
            raise FilterError("filter: Interactions.event_type takes =, !=, IN or NOT IN",
                              token.position)
        return Condition(source, name, operator, tuple(operands), start.position)

    def field(self, after: str) -> tuple[str, str]:
        token = self.token
        if self.keyword(token, "ITEMS", "USERS", "INTERACTIONS"):
            source = _SOURCES[token.text.upper()]
            self.advance()
            name = self.property_name(source)
            if source == "Interactions" and name.lower() != "event_type":
                raise FilterError("filter: Interactions has only event_type",
                                  self.tokens[self.at - 1].position)
            return source, ("event_type" if source == "Interactions" else name)
        if self.keyword(token, "CURRENTITEM"):
            raise FilterError("filter: CurrentItem goes on the right of a condition "
                              "(Items.categories IN (CurrentItem.categories))", token.position)
        self.fail("a condition (Items.<name>, Users.<name> or Interactions.event_type)", after)

    def property_name(self, source: str) -> str:
        self.expect_symbol(".", source)
        token = self.token
        if token.kind not in ("word", "string") or not token.text:
            self.fail("a property name", f"{source}.")
        self.advance()
        if len(token.text) > 64:
            raise FilterError("filter: property names have at most 64 characters",
                              token.position)
        return token.text

    def operand(self, after: str) -> Operand:
        token = self.token
        if token.kind in ("string", "number"):
            self.advance()
            return Operand("literal", token.value, token.position)
        if token.kind == "parameter":
            self.advance()
            return Operand("parameter", token.value, token.position)
        if self.keyword(token, "TRUE", "FALSE"):
            self.advance()
            return Operand("literal", token.text.upper() == "TRUE", token.position)
        if self.keyword(token, "CURRENTITEM"):
            self.advance()
            return Operand("current", self.property_name("CurrentItem"), token.position)
        if self.keyword(token, "USERS"):
            self.advance()
            return Operand("user", self.property_name("Users"), token.position)
        self.fail("a value", after)


_SOURCES = {"ITEMS": "Items", "USERS": "Users", "INTERACTIONS": "Interactions"}


# --- compiled filters ---------------------------------------------------------------------

def _walk(node: Node):
    if isinstance(node, Junction):
        for part in node.parts:
            yield from _walk(part)
    else:
        yield node


@dataclass(frozen=True)
class Filter:
    """A parsed expression. :meth:`bind` gives it its parameter values for one request."""

    expression: str
    action: str  # INCLUDE or EXCLUDE
    root: Node

    @property
    def conditions(self) -> list[Condition]:
        return list(_walk(self.root))

    @property
    def parameters(self) -> list[str]:
        """The ``$NAMES`` it takes, in order of first use (without the ``$``)."""
        names = (o.value for c in self.conditions for o in c.operands if o.kind == "parameter")
        return list(dict.fromkeys(names))

    @property
    def uses_items(self) -> bool:
        return any(c.source == "Items" for c in self.conditions)

    @property
    def uses_interactions(self) -> bool:
        return any(c.source == "Interactions" for c in self.conditions)

    @property
    def uses_users(self) -> bool:
        """Whether it reads the user's properties (a condition or a value)."""
        return any(c.source == "Users" or any(o.kind == "user" for o in c.operands)
                   for c in self.conditions)

    @property
    def uses_current_item(self) -> bool:
        return any(o.kind == "current" for c in self.conditions for o in c.operands)

    def bind(self, values: Mapping[str, Any] | None = None) -> BoundFilter:
        """Check and attach the request's parameter values (names with or without ``$``).

        Raises
        ------
        FilterError
            Naming the ``$PARAMETER`` that is missing, unknown or of the wrong shape.
        """
        given: dict[str, Any] = {}
        for name, value in (values or {}).items():
            bare = name[1:] if isinstance(name, str) and name.startswith("$") else name
            if bare in given:
                raise FilterError(f"filter_values: ${bare} is given twice")
            given[bare] = value
        wanted = self.parameters
        unknown = [name for name in given if name not in wanted]
        if unknown:
            raise FilterError(f"filter_values: ${unknown[0]} is not a parameter of this "
                              f"filter (it takes {_listed(wanted)})")
        missing = [name for name in wanted if name not in given]
        if missing:
            raise FilterError(f"filter_values: ${missing[0]} is missing")
        in_lists = {o.value for c in self.conditions if c.operator in ("IN", "NOT IN")
                    for o in c.operands if o.kind == "parameter"}
        bound = {name: _check_value(name, value, name in in_lists)
                 for name, value in given.items()}
        return BoundFilter(self, bound)


def _listed(names: list[str]) -> str:
    return ", ".join(f"${name}" for name in names) or "no parameters"


def _check_value(name: str, value: Any, list_allowed: bool) -> tuple[Value, ...]:
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list):
        if not list_allowed:
            raise FilterError(f"filter_values: ${name} takes one value, not a list "
                              "(lists go in IN)")
        if not 1 <= len(values) <= MAX_VALUES:
            raise FilterError(f"filter_values: ${name} needs 1 to {MAX_VALUES} values")
    for one in values:
        if isinstance(one, bool | str) or (isinstance(one, int | float)
                                           and math.isfinite(one)):
            if isinstance(one, str) and len(one) > MAX_STRING:
                raise FilterError(f"filter_values: ${name} is longer than {MAX_STRING} "
                                  "characters")
            continue
        raise FilterError(f"filter_values: ${name} must be a string, number or boolean"
                          + (" (or a list of them)" if list_allowed else ""))
    return tuple(_value(v) for v in values)


def _value(value: Any) -> Value:
    """Numbers as floats, as the parser reads them; strings and booleans as they are."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def parse(expression: str) -> Filter:
    """Parse a filter expression.

    Raises
    ------
    FilterError
        Saying what was expected and at which position (characters from 1).
    """
    if not isinstance(expression, str):
        raise FilterError("filter: the expression must be a string")
    if len(expression) > MAX_LENGTH:
        raise FilterError(f"filter: longer than {MAX_LENGTH} characters ({len(expression)})")
    if not expression.strip():
        raise FilterError("filter: the expression is empty")
    action, root = _Parser(expression).parse()
    return Filter(expression, action, root)


# --- evaluation ---------------------------------------------------------------------------

Form = tuple[str, Any]  # ("s", text) | ("n", number) | ("b", flag): a value by its type


def check(expression: Any) -> dict[str, Any]:
    """Whether ``expression`` parses, as an editor shows it while one types: the parser's
    message and the position it names (characters from 1; None when the message names no
    place), and for a valid one its action and $PARAMETERS.

    >>> check('INCLUDE ItemID WHERE Items.price < $MAX')["parameters"]
    ['MAX']
    >>> found = check('EXCLUDE ItemID WHERE Items.price <')
    >>> found["valid"], found["position"], found["message"]
    (False, 35, 'filter: expected a value after < at position 35')
    """
    try:
        rule = parse(expression)
    except FilterError as error:
        return {"valid": False, "message": str(error), "position": error.position,
                "action": None, "parameters": [], "uses_current_item": False}
    return {"valid": True, "message": None, "position": None, "action": rule.action,
            "parameters": rule.parameters, "uses_current_item": rule.uses_current_item}


def _number_text(number: float) -> str:
    return str(int(number)) if number.is_integer() and abs(number) < 1e16 else repr(number)


def _as_number(text: str) -> float | None:
    """A string's numeric reading: a number, or an RFC 3339 date-time as epoch seconds."""
    if _NUMBER.fullmatch(text.strip()):
        number = float(text)
        return number if math.isfinite(number) else None
    if re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]", text):
        try:
            moment = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            return None
        return moment.timestamp() if moment.tzinfo is not None else None
    return None


def _form(value: Any) -> Form | None:
    """An item's value by its type; None for what no filter value can equal."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", float(value))
    if isinstance(value, str):
        return ("s", value)
    return None


def _forms(value: Value) -> set[Form]:
    """Every form a filter value equals: ``"20"`` equals 20, ``true`` equals ``"true"``."""
    if isinstance(value, bool):
        return {("b", value), ("s", "true" if value else "false")}
    if isinstance(value, float):
        return {("n", value), ("s", _number_text(value))}
    forms: set[Form] = {("s", value)}
    number = _as_number(value)
    if number is not None:
        forms.add(("n", number))
    if value.lower() in ("true", "false"):
        forms.add(("b", value.lower() == "true"))
    return forms


_ORDER = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
          ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def _ordered(item: Any, bound: Value, operator: str) -> bool:
    """``item <operator> bound`` where the two compare as numbers or as strings."""
    compare = _ORDER[operator]
    if isinstance(item, bool) or isinstance(bound, bool) or item is None:
        return False
    if isinstance(item, int | float):
        number = bound if isinstance(bound, float) else _as_number(bound)
        return number is not None and compare(float(item), number)
    if isinstance(item, str):
        if isinstance(bound, float):
            number = _as_number(item)
            return number is not None and compare(number, bound)
        number, other = _as_number(item), _as_number(bound)
        if number is not None and other is not None:
            return compare(number, other)
        return compare(item, bound)
    return False


def _user_values(user: Mapping[str, Any] | None, name: str) -> list[Any] | None:
    """The user's values of ``name`` as a list, None without a user or the property."""
    if user is None:
        return None
    value = user.get("user_id") if name == "user_id" else (
        user.get("properties") or {}).get(name)
    if value is None:
        return None
    return value if isinstance(value, list) else [value]


def _item_values(document: ItemDocument, name: str) -> list[Any] | None:
    """The item's values of ``name`` as a list (a scalar as one), None when it has none."""
    if name in ITEM_FIELDS:
        value = document.get(name, ITEM_DEFAULTS.get(name))
    else:
        value = (document.get("properties") or {}).get(name)
    if value is None:
        return None
    return value if isinstance(value, list) else [value]


@dataclass(frozen=True)
class BoundFilter:
    """A filter with one request's parameter values."""

    filter: Filter
    values: Mapping[str, tuple[Value, ...]]

    def predicate(self, current_item: ItemDocument | None = None,
                  user: Mapping[str, Any] | None = None) -> Predicate:
        """``keep(document, event_types)``: True when an item stays in the list.

        ``document`` is the item's stored document (``{"item_id": id}`` when it has none),
        ``event_types`` the types of the user's interactions with it. ``user`` is the
        document of the user the list is for (None: no user, or one nobody described),
        which ``Users.<name>`` reads once, here.

        Raises
        ------
        FilterError
            When the filter names ``CurrentItem`` and there is no current item.
        """
        if self.filter.uses_current_item and current_item is None:
            raise FilterError("filter: CurrentItem is only known to GET "
                              "/items/{item_id}/similar")
        matches = self._compile(self.filter.root, current_item or {}, user)
        if self.filter.action == "INCLUDE":
            return matches
        return lambda document, event_types: not matches(document, event_types)

    def _bound_values(self, condition: Condition, current: ItemDocument,
                      user: Mapping[str, Any] | None = None) -> list[Value]:
        values: list[Value] = []
        for operand in condition.operands:
            if operand.kind == "literal":
                values.append(operand.value)
            elif operand.kind == "parameter":
                values.extend(self.values[operand.value])
            else:
                found = (_item_values(current, operand.value) if operand.kind == "current"
                         else _user_values(user, operand.value)) or []
                values.extend(_value(v) for v in found if _form(v) is not None)
        return values

    def _compile(self, node: Node, current: ItemDocument,
                 user: Mapping[str, Any] | None) -> Predicate:
        if isinstance(node, Junction):
            parts = [self._compile(part, current, user) for part in node.parts]
            if node.operator == "AND":
                return lambda d, t: all(part(d, t) for part in parts)
            return lambda d, t: any(part(d, t) for part in parts)
        condition = self._condition(node, self._bound_values(node, current, user))
        if node.source == "Users":  # the same for every item: decided once per request
            verdict = condition(user or {}, ())
            return lambda d, t: verdict
        return condition

    @staticmethod
    def _condition(condition: Condition, values: list[Value]) -> Predicate:
        name, operator = condition.name, condition.operator
        if condition.source == "Interactions":
            def read(document: ItemDocument, event_types: Collection[str]) -> list[Any] | None:
                return list(event_types) or None
        elif condition.source == "Users":  # given the user's document in place of an item's
            def read(document: ItemDocument, event_types: Collection[str]) -> list[Any] | None:
                return _user_values(document or None, name)
        else:
            def read(document: ItemDocument, event_types: Collection[str]) -> list[Any] | None:
                return _item_values(document, name)
        if not values:  # CurrentItem or the user lacks the property: nothing to compare with
            return lambda d, t: False
        if operator in _ORDER:
            def ordered(document: ItemDocument, event_types: Collection[str]) -> bool:
                found = read(document, event_types)
                return found is not None and any(
                    _ordered(item, bound, operator) for item in found for bound in values)
            return ordered
        accepted = set().union(*(_forms(value) for value in values))
        positive = operator in ("=", "IN")

        def equal(document: ItemDocument, event_types: Collection[str]) -> bool:
            found = read(document, event_types)
            if found is None:
                return False
            hit = any(_form(item) in accepted for item in found)
            return hit if positive else not hit
        return equal

    def required_categories(self) -> frozenset[str] | None:
        """Categories one of which every item this filter keeps must have, if it says so:
        an INCLUDE whose conditions all require ``Items.categories = / IN`` in some way.
        Lets popularity be read per category instead of screened from the whole catalog.

        >>> rule = parse('INCLUDE ItemID WHERE Items.categories IN ($C) AND Items.price < 5')
        >>> sorted(rule.bind({"C": ["tea", "jam"]}).required_categories())
        ['jam', 'tea']
        """
        if self.filter.action != "INCLUDE":
            return None
        return self._categories(self.filter.root)

    def _categories(self, node: Node) -> frozenset[str] | None:
        if isinstance(node, Junction):
            found = [self._categories(part) for part in node.parts]
            if node.operator == "AND":
                known = [f for f in found if f is not None]
                return min(known, key=len) if known else None
            if any(f is None for f in found):
                return None
            return frozenset().union(*found)
        if (node.source, node.name) != ("Items", "categories") or node.operator not in (
                "=", "IN") or any(o.kind in ("current", "user") for o in node.operands):
            return None
        return frozenset(form[1] for value in self._bound_values(node, {})
                         for form in _forms(value) if form[0] == "s")


# --- a filter named in a request ---------------------------------------------------------


class RequestFilterError(FilterError):
    """A request's filter that cannot be used; ``parameter`` is the one at fault
    (``filter`` or ``filter_values``), ``str()`` says why."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


def bind_named(name: str | None, values: str | None, lookup: Callable[[str], Filter | None],
               current_item: bool = False) -> BoundFilter | None:
    """The filter registered as ``name`` (``lookup`` finds it), bound to ``values``: its
    $PARAMETERS as one JSON object. What ``GET /recommendations?filter=&filter_values=``
    and ``streamrec export --filter --filter-values`` both do. ``current_item``: the list
    has one (similar items), so ``CurrentItem`` conditions may be used.

    >>> rules = {"cheap": parse("INCLUDE ItemID WHERE Items.price < $MAX")}
    >>> keep = bind_named("cheap", '{"MAX": 20}', rules.get).predicate()
    >>> keep({"price": 5}, ()), keep({"price": 50}, ())
    (True, False)
    >>> bind_named(None, None, rules.get) is None
    True
    >>> bind_named("dear", None, rules.get)
    Traceback (most recent call last):
    ...
    recommender.filters.RequestFilterError: no filter named 'dear' (PUT /admin/filters/dear)
    >>> bind_named("cheap", "[20]", rules.get)
    Traceback (most recent call last):
    ...
    recommender.filters.RequestFilterError: must be a JSON object of $PARAMETER values
    """
    if name is None:
        if values is not None:
            raise RequestFilterError("filter_values", "given without filter")
        return None
    rule = lookup(name)
    if rule is None:
        raise RequestFilterError("filter",
                                 f"no filter named {name!r} (PUT /admin/filters/{name})")
    if rule.uses_current_item and not current_item:
        raise RequestFilterError("filter", f"filter {name!r} uses CurrentItem, which only "
                                           "similar items (GET /items/{item_id}/similar) have")
    try:
        given = {} if values is None else orjson.loads(values)
    except orjson.JSONDecodeError as error:
        raise RequestFilterError("filter_values", f"not JSON: {error}") from None
    if not isinstance(given, dict):
        raise RequestFilterError("filter_values", "must be a JSON object of $PARAMETER values")
    try:
        return rule.bind(given)
    except FilterError as error:
        raise RequestFilterError("filter_values", str(error)) from None
