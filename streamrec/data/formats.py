"""Interaction files other tools write, read as streamrec events for ``streamrec import``.

- ``movielens-ratings``: MovieLens ``ratings.csv`` (ml-latest, ml-25m ...), a header
  ``userId,movieId,rating,timestamp``;
- ``movielens-100k``: MovieLens 100k ``u.data``, ``user item rating timestamp`` separated
  by tabs, no header.

Each row becomes one ``rating`` event: ``{"user_id", "item_id", "event_type": "rating",
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
from collections.abc import Iterable, Iterator
from typing import Any

RATINGS_HEADER = ("userId", "movieId", "rating", "timestamp")
Row = tuple[int, Any, "dict[str, Any] | str"]


class FormatError(ValueError):
    """The file as a whole is not in the format (its header); ``str()`` says why."""


def _number(field: str, text: str) -> float | str:
    """The cell as a finite number, or the reason it is none."""
    try:
        value = float(text)
    except ValueError:
        return f"{field}: {text!r} is not a number"
    return value if math.isfinite(value) else f"{field}: {text!r} is not a finite number"


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


def read_ratings_csv(lines: Iterable[str]) -> Iterator[Row]:
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
    _undecodable(lines)  # the header's, said by the header check if it mattered
    end = reader.line_num
    for cells in reader:
        line, end = end + 1, reader.line_num
        if not cells:
            continue  # a blank line
        if _undecodable(lines):
            yield line, cells, "row: not valid UTF-8"
            continue
        if len(cells) != len(header):
            yield line, cells, f"row: {len(cells)} cells where the header has {len(header)}"
            continue
        yield _rating(line, dict(zip(header, cells, strict=True)),
                      *(cells[index] for index in where))


def read_u_data(lines: Iterable[str]) -> Iterator[Row]:
    """MovieLens 100k ``u.data``: ``user item rating timestamp``, tab-separated."""
    for line, text in enumerate(lines, start=1):
        row = text.rstrip("\r\n")
        if _undecodable(lines):
            yield line, row, "row: not valid UTF-8"
            continue
        if not row.strip():
            continue
        parts = row.split("\t")
        if len(parts) != 4:
            yield line, row, (f"row: {len(parts)} tab-separated fields where u.data has 4 "
                              "(user, item, rating, timestamp)")
            continue
        yield _rating(line, row, *parts)


# --format name -> reader; every one yields events.
READERS = {"movielens-ratings": read_ratings_csv, "movielens-100k": read_u_data}
