"""Readers for evaluation data: MovieLens ``ratings.csv`` (ml-latest), MovieLens 100k
``u.data``, and streamrec's own JSONL events (``schemas/v1/event.json``)."""

from __future__ import annotations

import csv
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
            try:
                yield RawEvent(row["userId"], row["movieId"], "rating",
                               float(row["timestamp"]), float(row["rating"]))
            except (TypeError, ValueError) as error:
                raise DatasetError(f"{path}:{line}: {error}") from None


def _u_data(path: Path) -> Iterator[RawEvent]:
    with path.open() as file:
        for line, text in enumerate(file, start=1):
            parts = text.split("\t")
            if len(parts) != 4:
                raise DatasetError(f"{path}:{line}: expected 4 tab-separated fields")
            try:
                yield RawEvent(parts[0], parts[1], "rating", float(parts[3]), float(parts[2]))
            except ValueError as error:
                raise DatasetError(f"{path}:{line}: {error}") from None


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
