"""Readers for evaluation data: MovieLens ``ratings.csv`` (ml-latest), MovieLens 100k
``u.data``, and streamrec's own JSONL events (``schemas/v1/event.json``)."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from recommender.weights import EventWeights
from schemas.models import EventContractError, parse_event


@dataclass(frozen=True)
class RawEvent:
    user_id: str
    item_id: str
    event_type: str
    timestamp: float
    value: float | None = None


class DatasetError(ValueError):
    """A row that cannot be read; the message names the file and line."""


def detect(path: Path) -> str:
    if path.name == "u.data":
        return "u.data"
    if path.suffix == ".csv":
        return "ratings.csv"
    if path.suffix in {".jsonl", ".ndjson"}:
        return "jsonl"
    raise DatasetError(f"{path}: unknown format; name it *.csv, u.data or *.jsonl, or pass "
                       "--format")


def read(path: Path, format: str | None, weights: EventWeights) -> Iterator[RawEvent]:
    kind = format or detect(path)
    if kind == "ratings.csv":
        yield from _ratings_csv(path)
    elif kind == "u.data":
        yield from _u_data(path)
    elif kind == "jsonl":
        yield from _jsonl(path, weights)
    else:
        raise DatasetError(f"format {kind!r} is not one of ratings.csv, u.data, jsonl")


def _ratings_csv(path: Path) -> Iterator[RawEvent]:
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        missing = {"userId", "movieId", "rating", "timestamp"} - set(reader.fieldnames or ())
        if missing:
            raise DatasetError(f"{path}: header lacks {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            if None in row or None in row.values():  # too many fields, or too few
                raise DatasetError(f"{path}:{line}: expected the header's "
                                   f"{len(reader.fieldnames or ())} comma-separated fields")
            yield RawEvent(_id(path, line, "userId", row["userId"]),
                           _id(path, line, "movieId", row["movieId"]), "rating",
                           _number(path, line, "timestamp", row["timestamp"]),
                           _number(path, line, "rating", row["rating"]))


def _id(path: Path, line: int, field: str, text: str) -> str:
    if not text.strip():
        raise DatasetError(f"{path}:{line}: {field}: empty")
    return text


def _number(path: Path, line: int, field: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{path}:{line}: {field}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DatasetError(f"{path}:{line}: {field}: {text!r} is not a finite number")
    return value


def _u_data(path: Path) -> Iterator[RawEvent]:
    with path.open() as file:
        for line, text in enumerate(file, start=1):
            parts = text.rstrip("\r\n").split("\t")
            if len(parts) != 4:
                raise DatasetError(f"{path}:{line}: expected 4 tab-separated fields "
                                   f"(user, item, rating, timestamp), got {len(parts)}")
            yield RawEvent(_id(path, line, "user", parts[0]), _id(path, line, "item", parts[1]),
                           "rating", _number(path, line, "timestamp", parts[3]),
                           _number(path, line, "rating", parts[2]))


def _jsonl(path: Path, weights: EventWeights) -> Iterator[RawEvent]:
    with path.open("rb") as file:
        for line, raw in enumerate(file, start=1):
            if not raw.strip():
                continue
            try:
                event = parse_event(raw, weights)
            except EventContractError as error:
                raise DatasetError(f"{path}:{line}: {error}") from None
            if event.timestamp is None:
                raise DatasetError(f"{path}:{line}: timestamp: required for evaluation")
            yield RawEvent(event.user_id, event.item_id, event.event_type, event.timestamp,
                           event.value)
