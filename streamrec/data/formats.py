"""Interaction files other tools write, read as streamrec events for ``streamrec import``.

- ``movielens-ratings``: MovieLens ``ratings.csv`` (ml-latest, ml-25m ...), a header
  ``userId,movieId,rating,timestamp``;
- ``movielens-100k``: MovieLens 100k ``u.data``, ``user item rating timestamp`` separated
  by tabs, no header;
- ``movielens-1m``: MovieLens 1M and 10M ``ratings.dat``,
  ``UserID::MovieID::Rating::Timestamp``, no header;
- ``personalize``: an Amazon Personalize item interactions CSV (:func:`read_personalize`);
  ``personalize-items`` and ``personalize-users`` its items and users datasets' CSVs, as
  items and users (:func:`read_personalize_items`, :func:`read_personalize_users`).

Each MovieLens row becomes one ``rating`` event: ``{"user_id", "item_id", "event_type": "rating",
"value": <the rating>, "timestamp": <its epoch seconds>}``, which the worker weighs as
every rating (:class:`recommender.weights.EventWeights`): the weight of ``rating`` in the
shared event types when the value is at least ``STREAMREC_RATING_POSITIVE_THRESHOLD``
(3.5), else 0, a film seen but not liked. ``streamrec evaluate`` reads the same files the
same way. The readers yield what :func:`streamrec.data.importer.rows` takes from its own
readers, ``(line, raw row, document or reason)``; the importer validates the documents
with the contract, fills ``event_id``, and sends them.

>>> rows = list(read_u_data(["196\\t242\\t3\\t881250949\\n", "1\\t2\\tfive\\t3\\n"]))
>>> rows[0][2]["user_id"], rows[0][2]["value"], rows[0][2]["timestamp"]
('196', 3.0, 881250949.0)
>>> rows[1][0], rows[1][2]
(2, "rating: 'five' is not a number")
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

RATINGS_HEADER = ("userId", "movieId", "rating", "timestamp")
Row = tuple[int, Any, "dict[str, Any] | str"]
# Amazon Personalize's item interactions: its required fields, and the reserved ones that
# are fields of streamrec's events (the rest, but IMPRESSION, go to the event's context).
PERSONALIZE_REQUIRED = ("USER_ID", "ITEM_ID", "TIMESTAMP")
PERSONALIZE_FIELDS = {"USER_ID": "user_id", "ITEM_ID": "item_id", "TIMESTAMP": "timestamp",
                      "EVENT_TYPE": "event_type", "EVENT_VALUE": "value",
                      "RECOMMENDATION_ID": "recommendation_id"}
# The items a Personalize event says were shown: streamrec logs the lists it shows itself
# (the impressions topic) and has no field for those of another recommender.
PERSONALIZE_NOT_READ = ("IMPRESSION",)
# The type of a row without EVENT_TYPE (Personalize weighs every such row alike).
PERSONALIZE_DEFAULT_TYPE = "view"

# The JSON grammar's numbers: no leading zeros, no NaN or Infinity, no hex.
JSON_NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?")


class FormatError(ValueError):
    """The file as a whole is not in the format (its header); ``str()`` says why."""


def _number(field: str, text: str) -> float | str:
    """The cell as a finite number, or the reason it is none."""
    try:
        value = float(text)
    except ValueError:
        return f"{field}: {text!r} is not a number"
    return value if math.isfinite(value) else f"{field}: {text!r} is not a finite number"


def scalar(cell: str) -> str | float | bool:
    """A CSV cell as a map entry's value: a JSON number is a number (``007`` is not),
    ``true`` and ``false`` are booleans, anything else is text."""
    if JSON_NUMBER.fullmatch(cell):
        return float(cell)
    if cell in ("true", "false"):
        return cell == "true"
    return cell


def _undecodable(lines: Iterable[str]) -> bool:
    """Whether the importer's reader replaced bytes that were not UTF-8 since last asked
    (such a row is rejected, never sent altered); a plain list of text never did."""
    flagged = getattr(lines, "undecodable", False)
    if flagged:
        lines.undecodable = False  # type: ignore[attr-defined]
    return flagged


def _rating(line: int, raw: Any, user: str, item: str, rating: str, timestamp: str) -> Row:
    value, time = _number("rating", rating), _number("timestamp", timestamp)
    for reason in (value, time):
        if isinstance(reason, str):
            return line, raw, reason
    # Ids as the file has them; the contract refuses an empty or malformed one by name.
    return line, raw, {"user_id": user, "item_id": item, "event_type": "rating",
                       "value": value, "timestamp": time}


def _csv_rows(reader: Any, lines: Iterable[str], header: list[str]
              ) -> Iterator[tuple[int, list[str], str | None]]:
    """The rows after the header: ``(line, cells, None)``, or a reason the row cannot be
    read (not UTF-8, another number of cells than the header); blank lines left out."""
    _undecodable(lines)  # the header's, said by the header check if it mattered
    end = reader.line_num
    for cells in reader:
        line, end = end + 1, reader.line_num
        if not cells:
            continue  # a blank line
        if _undecodable(lines):
            yield line, cells, "row: not valid UTF-8"
        elif len(cells) != len(header):
            yield line, cells, f"row: {len(cells)} cells where the header has {len(header)}"
        else:
            yield line, cells, None


def read_ratings_csv(lines: Iterable[str], event_types: Collection[str] = ()
                     ) -> Iterator[Row]:
    """MovieLens ``ratings.csv``: its header names the columns (any order, more allowed)."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return
    missing = [column for column in RATINGS_HEADER if column not in header]
    if missing:
        raise FormatError(f"header: a MovieLens ratings.csv has {','.join(RATINGS_HEADER)}; "
                          f"this one lacks {missing}")
    where = [header.index(column) for column in RATINGS_HEADER]
    for line, cells, reason in _csv_rows(reader, lines, header):
        if reason is not None:
            yield line, cells, reason
            continue
        yield _rating(line, dict(zip(header, cells, strict=True)),
                      *(cells[index] for index in where))


def _separated_ratings(lines: Iterable[str], separator: str, said: str, name: str,
                       fields: str) -> Iterator[Row]:
    """Rating rows of four fields (user, item, rating, timestamp), ``separator`` between
    them (``said`` so in a reason), no header; ``name`` and ``fields`` say the file."""
    for line, text in enumerate(lines, start=1):
        row = text.rstrip("\r\n")
        if _undecodable(lines):
            yield line, row, "row: not valid UTF-8"
            continue
        if not row.strip():
            continue
        parts = row.split(separator)
        if len(parts) != 4:
            yield line, row, (f"row: {len(parts)} {said}-separated fields where {name} has 4 "
                              f"({fields})")
            continue
        yield _rating(line, row, *parts)


def read_u_data(lines: Iterable[str], event_types: Collection[str] = ()) -> Iterator[Row]:
    """MovieLens 100k ``u.data``: ``user item rating timestamp``, tab-separated."""
    return _separated_ratings(lines, "\t", "tab", "u.data", "user, item, rating, timestamp")


def read_ratings_dat(lines: Iterable[str], event_types: Collection[str] = ()
                     ) -> Iterator[Row]:
    """MovieLens 1M and 10M ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp``."""
    return _separated_ratings(lines, "::", "'::'", "ratings.dat",
                              "UserID, MovieID, Rating, Timestamp")


def csv_header(path: Path) -> list[str]:
    """The first row of a CSV file (empty for an empty file): how a format is told apart."""
    with path.open(newline="", errors="replace") as file:
        return next(csv.reader(file), None) or []


def is_personalize_header(header: Iterable[str]) -> bool:
    """Whether a CSV header is an Amazon Personalize interactions dataset's: it names
    USER_ID, ITEM_ID and TIMESTAMP as Personalize does, in capitals (streamrec's own CSV
    events name ``user_id``, ``item_id`` and ``timestamp``)."""
    return personalize_kind(header) == "events"


def personalize_kind(header: Iterable[str]) -> str | None:
    """Which Amazon Personalize dataset a CSV header is (``events``: item interactions,
    ``items``, ``users``), by its fields in capitals as Personalize names them; None when
    it is none of them."""
    names = {column.strip() for column in header}
    if set(PERSONALIZE_REQUIRED) <= names:
        return "events"
    if "ITEM_ID" in names and "USER_ID" not in names:
        return "items"
    if "USER_ID" in names and "ITEM_ID" not in names:
        return "users"
    return None


def _event_type(named: str, event_types: Collection[str]) -> str:
    """A Personalize event type as streamrec names it: as it is when configured so, else
    in lower case when that is configured (Personalize's domains write ``View``,
    ``Purchase``); an unknown type stays as it is, for the contract to refuse by name."""
    if named in event_types or named.lower() not in event_types:
        return named
    return named.lower()


def _personalize_rows(lines: Iterable[str], required: tuple[str, ...], dataset: str
                      ) -> Iterator[tuple[int, Any, list[tuple[str, str, str]] | str]]:
    """A Personalize dataset's rows: ``(line, raw row, [(FIELD, column, cell), ...])``
    of its non-empty cells (FIELD: the column's name in capitals), or a reason in place of
    the cells. Raises FormatError when the header lacks one of ``required``."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return
    names = [column.strip().upper() for column in header]
    missing = [field for field in required if field not in names]
    if missing:
        raise FormatError(f"header: an Amazon Personalize {dataset} CSV has "
                          f"{','.join(required)}; this one lacks {missing}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise FormatError(f"header: column(s) {repeated} appear more than once")
    for line, cells, reason in _csv_rows(reader, lines, header):
        if reason is not None:
            yield line, cells, reason
            continue
        yield line, dict(zip(header, cells, strict=True)), [
            (name, column.strip(), cell)
            for name, column, cell in zip(names, header, cells, strict=True) if cell != ""]


def read_personalize(lines: Iterable[str], event_types: Collection[str] = ()
                     ) -> Iterator[Row]:
    """An Amazon Personalize item interactions CSV: a header naming USER_ID, ITEM_ID and
    TIMESTAMP (Unix seconds), perhaps EVENT_TYPE, EVENT_VALUE, RECOMMENDATION_ID,
    IMPRESSION and metadata fields of the user's own (any order, any case). A row becomes
    one event: EVENT_TYPE is its type (``view`` when the column is absent or the cell
    empty), EVENT_VALUE its value, and each metadata field an entry of its ``context``
    (cells as :func:`scalar` reads them). IMPRESSION is not read."""
    for line, raw, cells in _personalize_rows(lines, PERSONALIZE_REQUIRED, "interactions"):
        if isinstance(cells, str):
            yield line, raw, cells
            continue
        document: dict[str, Any] = {"event_type": PERSONALIZE_DEFAULT_TYPE}
        context: dict[str, Any] = {}
        reason = None
        for name, column, cell in cells:
            field = PERSONALIZE_FIELDS.get(name)
            if name in PERSONALIZE_NOT_READ:
                continue
            if field in ("timestamp", "value"):
                number = _number(name, cell)
                if isinstance(number, str):
                    reason = reason or number
                document[field] = number
            elif field is not None:
                document[field] = cell
            else:
                context[column] = scalar(cell)
        if reason is not None:
            yield line, raw, reason
            continue
        document["event_type"] = _event_type(document["event_type"], event_types)
        if context:
            document["context"] = context
        yield line, raw, document


def _is_category(name: str) -> bool:
    """Whether a Personalize items field holds categories: its domains' GENRES and
    CATEGORY_L1 to CATEGORY_L3, or GENRE, CATEGORY, CATEGORIES."""
    return name in ("GENRES", "GENRE", "CATEGORY", "CATEGORIES") or name.startswith(
        "CATEGORY_")


def read_personalize_items(lines: Iterable[str]) -> Iterator[Row]:
    """An Amazon Personalize items CSV: ITEM_ID, and any metadata fields. A row becomes
    one item: the values of GENRES, CATEGORY_L1 ... (``|``-separated, as Personalize
    writes several) its ``categories``, in order, each once; CREATION_TIMESTAMP (Unix
    seconds) its ``created_at``; PRICE its ``price``; every other field an entry of its
    ``properties`` (cells as :func:`scalar` reads them)."""
    for line, raw, cells in _personalize_rows(lines, ("ITEM_ID",), "items"):
        if isinstance(cells, str):
            yield line, raw, cells
            continue
        document: dict[str, Any] = {}
        categories: dict[str, None] = {}  # in order, each once
        properties: dict[str, Any] = {}
        reason = None
        for name, column, cell in cells:
            if name == "ITEM_ID":
                document["item_id"] = cell
            elif name in ("CREATION_TIMESTAMP", "PRICE"):
                number = _number(name, cell)
                if isinstance(number, str):
                    reason = reason or number
                document["created_at" if name == "CREATION_TIMESTAMP" else "price"] = number
            elif _is_category(name):
                categories.update(dict.fromkeys(part for part in cell.split("|") if part))
            else:
                properties[column] = scalar(cell)
        if reason is not None:
            yield line, raw, reason
            continue
        if categories:
            document["categories"] = list(categories)
        if properties:
            document["properties"] = properties
        yield line, raw, document


def read_personalize_users(lines: Iterable[str]) -> Iterator[Row]:
    """An Amazon Personalize users CSV: USER_ID, and any metadata fields, each an entry
    of the user's ``properties`` (cells as :func:`scalar` reads them)."""
    for line, raw, cells in _personalize_rows(lines, ("USER_ID",), "users"):
        if isinstance(cells, str):
            yield line, raw, cells
            continue
        document: dict[str, Any] = {}
        properties: dict[str, Any] = {}
        for name, column, cell in cells:
            if name == "USER_ID":
                document["user_id"] = cell
            else:
                properties[column] = scalar(cell)
        if properties:
            document["properties"] = properties
        yield line, raw, document


# --format name -> reader(lines, event types); every one yields events.
READERS = {"movielens-ratings": read_ratings_csv, "movielens-100k": read_u_data,
           "movielens-1m": read_ratings_dat, "personalize": read_personalize}
# --format name -> (kind, reader(lines)) of the formats that yield items or users.
CATALOG_READERS = {"personalize-items": ("items", read_personalize_items),
                   "personalize-users": ("users", read_personalize_users)}
