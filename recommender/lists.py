"""Ranked lists a batch job outside streamrec made: their row formats, and how a served
list takes in what the user did since it was made.

Three row formats (``docs/lists.md``):

- ``personalize``: Amazon Personalize's batch-inference output as it writes it, one JSON
  object per line: ``{"input": {"userId": "u1"}, "output": {"recommendedItems": [...],
  "scores": [...]}, "error": null}`` (``"itemId"`` for a similar-items job); an input
  Personalize could not rank has an ``"error"`` message instead, and is rejected with it;
- ``jsonl``: ``{"user_id": "u1", "items": [...], "scores": [...]}`` (``item_id`` for an
  item's similar items; ``scores`` optional);
- ``csv``: a header ``user_id,items[,scores]`` (or ``item_id,...``), the items and the
  scores ``|``-separated within their cell: one row per list, as the other two.

A list without scores is scored by rank (``1 / rank``). Nothing here reads a file or
Redis: :class:`ListParser` takes lines and gives rows, with every rejected line counted by
reason.
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import orjson

from recommender.base import ItemId, Scored
from recommender.blend import fuse

FORMATS = ("personalize", "jsonl", "csv")
MAX_ITEMS = 500  # per list: what one request may read and screen
MAX_ID_LENGTH = 256  # as the event schema's ids
FIRST_LINES = 5  # line numbers kept per rejection reason, for the summary

USER, ITEM = "user", "item"  # whose list a row is: a user's, or an item's similar items


@dataclass(frozen=True, slots=True)
class ListRow:
    """One accepted list: ``owner``'s (a user, or an item for ``kind`` ``item``)."""

    kind: str
    owner: str
    items: list[ItemId]
    scores: list[float]
    line: int


@dataclass
class Rejections:
    """Rejected lines, counted by reason, with the first few line numbers of each."""

    counts: Counter[str] = field(default_factory=Counter)
    lines: dict[str, list[int]] = field(default_factory=dict)

    def add(self, reason: str, line: int) -> None:
        self.counts[reason] += 1
        first = self.lines.setdefault(reason, [])
        if len(first) < FIRST_LINES:
            first.append(line)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> list[dict[str, object]]:
        """Most frequent reason first: ``{"reason", "count", "lines"}``."""
        return [{"reason": reason, "count": count, "lines": self.lines[reason]}
                for reason, count in self.counts.most_common()]


class RowError(ValueError):
    """Why a line is not a list (the reason a summary counts it under)."""


def detect(first_line: str) -> str:
    """The format of a file from its first line.

    >>> detect('{"input": {"userId": "u1"}, "output": {"recommendedItems": ["a"]}}')
    'personalize'
    >>> detect('{"user_id": "u1", "items": ["a"]}'), detect("user_id,items")
    ('jsonl', 'csv')
    """
    text = first_line.lstrip("\ufeff").strip()
    if text.startswith("{"):
        return "personalize" if '"input"' in text else "jsonl"
    return "csv"


class ListParser:
    """Lines of one format in, :class:`ListRow` out; a bad line is counted in
    :attr:`rejected` under its reason and skipped.

    Parameters
    ----------
    data_format
        One of :data:`FORMATS`.
    similar
        True for per-item similar-item lists (``itemId`` / ``item_id``); else per-user.
    max_items
        The longest list accepted.

    Examples
    --------
    >>> parser = ListParser("jsonl")
    >>> rows = list(parser.rows([
    ...     '{"user_id": "ann", "items": ["tea", "cup"], "scores": [0.9, 0.5]}',
    ...     '{"user_id": "bob", "items": ["tea"], "scores": [1, 2]}',
    ...     'not json',
    ... ]))
    >>> [(row.owner, row.items, row.scores) for row in rows]
    [('ann', ['tea', 'cup'], [0.9, 0.5])]
    >>> parser.rejected.summary()  # doctest: +NORMALIZE_WHITESPACE
    [{'reason': 'scores: 2 for 1 items', 'count': 1, 'lines': [2]},
     {'reason': 'not JSON', 'count': 1, 'lines': [3]}]
    """

    def __init__(self, data_format: str, similar: bool = False,
                 max_items: int = MAX_ITEMS) -> None:
        if data_format not in FORMATS:
            raise ValueError(f"format: {data_format!r} is not one of {list(FORMATS)}")
        self.data_format = data_format
        self.similar = similar
        self.max_items = max_items
        self.kind = ITEM if similar else USER
        self.rejected = Rejections()
        self.read = 0  # lines read (blank ones excepted)

    def rows(self, lines: Iterable[str], first_line: int = 1) -> Iterator[ListRow]:
        """The accepted rows of ``lines`` (numbered from ``first_line``)."""
        if self.data_format == "csv":
            yield from self._csv(lines, first_line)
            return
        parse = self._personalize if self.data_format == "personalize" else self._jsonl
        for number, line in enumerate(lines, start=first_line):
            if not line.strip():
                continue
            self.read += 1
            try:
                yield parse(line, number)
            except RowError as error:
                self.rejected.add(str(error), number)

    def parse_record(self, value: bytes | str, number: int) -> ListRow | None:
        """One record (a Kafka message's value) in a JSON format; None, counted, if bad."""
        self.read += 1
        parse = self._personalize if self.data_format == "personalize" else self._jsonl
        try:
            return parse(value, number)
        except RowError as error:
            self.rejected.add(str(error), number)
            return None

    def _personalize(self, line: str | bytes, number: int) -> ListRow:
        row = _json_object(line)
        given = row.get("input")
        if not isinstance(given, dict):
            raise RowError("input: missing or not an object")
        name = "itemId" if self.similar else "userId"
        owner = _identifier(given.get(name), f"input.{name}")
        # Personalize writes "error": null on every row it ranked, a message otherwise.
        if row.get("error") is not None:
            raise RowError(f"error: {_text(row['error'])}")
        output = row.get("output")
        if not isinstance(output, dict):
            raise RowError("output: missing or not an object")
        return self._row(owner, output.get("recommendedItems"), output.get("scores"),
                         "output.recommendedItems", number)

    def _jsonl(self, line: str | bytes, number: int) -> ListRow:
        row = _json_object(line)
        name = "item_id" if self.similar else "user_id"
        owner = _identifier(row.get(name), name)
        return self._row(owner, row.get("items"), row.get("scores"), "items", number)

    def _csv(self, lines: Iterable[str], first_line: int) -> Iterator[ListRow]:
        owner_column = "item_id" if self.similar else "user_id"
        numbered = enumerate(lines, start=first_line)
        header: list[str] | None = None
        for number, line in numbered:
            if not line.strip():
                continue
            if header is None:
                header = [cell.strip() for cell in next(csv.reader([line.lstrip("\ufeff")]))]
                missing = [name for name in (owner_column, "items") if name not in header]
                if missing or not set(header) <= {owner_column, "items", "scores"}:
                    raise ValueError(f"csv header: {','.join(header)!r} is not "
                                     f"{owner_column},items[,scores]")
                continue
            self.read += 1
            try:
                cells = next(csv.reader([line]))
                if len(cells) != len(header):
                    raise RowError(f"{len(cells)} columns, the header has {len(header)}")
                record = dict(zip(header, cells, strict=True))
                owner = _identifier(record[owner_column] or None, owner_column)
                items = record["items"].split("|") if record["items"] else []
                scores = None
                if record.get("scores"):
                    try:
                        scores = [float(cell) for cell in record["scores"].split("|")]
                    except ValueError:
                        raise RowError("scores: not numbers") from None
                yield self._row(owner, items, scores, "items", number)
            except RowError as error:
                self.rejected.add(str(error), number)

    def _row(self, owner: str, items: object, scores: object, name: str,
             number: int) -> ListRow:
        if not isinstance(items, list):
            raise RowError(f"{name}: missing or not a list")
        if not items:
            raise RowError(f"{name}: empty")
        if len(items) > self.max_items:
            raise RowError(f"{name}: more than {self.max_items} items")
        # One pass over all the ids at once: a million lists of 20 check in seconds.
        if not (set(map(type, items)) == {str} and all(items)
                and max(map(len, items)) <= MAX_ID_LENGTH
                and _CONTROL.search("".join(items)) is None):
            for item in items:
                _identifier(item, f"{name} item")  # which one, and why
        if len(set(items)) != len(items):
            raise RowError(f"{name}: an item appears twice")
        if scores is None:
            scored = [1.0 / rank for rank in range(1, len(items) + 1)]
        else:
            if not isinstance(scores, list):
                raise RowError("scores: not a list")
            if len(scores) != len(items):
                raise RowError(f"scores: {len(scores)} for {len(items)} items")
            if not set(map(type, scores)) <= {int, float}:  # bool is not a score
                raise RowError("scores: not numbers")
            scored = [float(score) for score in scores]
            if not all(map(math.isfinite, scored)):
                raise RowError("scores: not finite")
        return ListRow(self.kind, owner, list(items), scored, number)


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc, as the schemas' ids


def _json_object(line: str | bytes) -> dict:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise RowError("not JSON") from None
    if not isinstance(row, dict):
        raise RowError("not a JSON object")
    return row


def _identifier(value: object, name: str) -> str:
    if value is None:
        raise RowError(f"{name}: missing")
    if not isinstance(value, str):
        raise RowError(f"{name}: not a string")
    if not value or len(value) > MAX_ID_LENGTH or _CONTROL.search(value):
        raise RowError(f"{name}: empty, longer than {MAX_ID_LENGTH} or with control "
                       "characters")
    return value


def _text(value: object) -> str:
    # A reason is a summary's key: keep Personalize's message short and on one line.
    return " ".join(str(value).split())[:120]


def blend_fresh(listed: Sequence[Scored], fresh: Sequence[ItemId], weight: float,
                constant: float) -> list[Scored]:
    """The imported list fused with ``fresh`` candidates (the neighbours of what the user
    touched since it was made), as the hybrid fuses its sources: ``weight`` is the fresh
    signal's share (0: the list as it is).

    >>> blend_fresh([("a", 0.9), ("b", 0.5)], ["c", "b"], 0.5, constant=1.0)
    [('b', 0.3333333333333333), ('a', 0.25), ('c', 0.25)]
    >>> blend_fresh([("a", 0.9)], ["c"], 0.0, constant=1.0)
    [('a', 0.9)]
    """
    if weight <= 0 or not fresh:
        return list(listed)
    return fuse({"list": [item for item, _ in listed], "fresh": list(fresh)},
                {"list": 1.0 - weight, "fresh": weight}, constant)
