"""Readers for evaluation data: MovieLens ``ratings.csv`` (ml-latest, ml-20m ...), MovieLens
100k ``u.data``, MovieLens 1M and 10M ``ratings.dat``, an Amazon Personalize item
interactions CSV, and streamrec's own events as JSON Lines (``schemas/v1/event.json``) or
CSV (``streamrec import``'s columns). The last four are checked by the event contract, as
``streamrec import`` checks them."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from recommender.weights import EventWeights
from schemas.models import Event, EventContractError, parse_event
from streamrec.data import formats
from streamrec.data.importer import ImportFailed, Lines, read_csv

FORMATS = ("ratings.csv", "u.data", "ratings.dat", "personalize", "csv", "jsonl")


def _events_csv(lines, event_types):
    return read_csv(lines, Event)


# Formats read by streamrec import's readers (streamrec.data.formats, .importer).
_IMPORT_READERS = {"ratings.dat": formats.read_ratings_dat,
                   "personalize": formats.read_personalize, "csv": _events_csv}


@dataclass(frozen=True)
class RawEvent:
    user_id: str
    item_id: str
    event_type: str
    timestamp: float
    value: float | None = None


class DatasetError(ValueError):
    """A row that cannot be read; the message names the file and line."""


def _refused(path: Path, line: int, error: EventContractError) -> DatasetError:
    """The contract's reason for a row, with how to weigh a type the replay does not know
    (evaluate and tune weigh events by the settings, not by a deployment's table)."""
    hint = ""
    if str(error).startswith("event_type:") and "is not one of" in str(error):
        hint = ("; give it a weight with STREAMREC_EVENT_WEIGHTS (JSON, every type: "
                "'{\"view\": 1, \"like\": 3}')")
    return DatasetError(f"{path}:{line}: {error}{hint}")


def detect(path: Path) -> str:
    """The format by the file's name; a CSV by its header: Amazon Personalize's
    (``personalize``), streamrec's own columns (``csv``: it has ``user_id``), else
    MovieLens ``ratings.csv``."""
    if path.name == "u.data":
        return "u.data"
    if path.suffix == ".csv":
        header = formats.csv_header(path)
        if formats.is_personalize_header(header):
            return "personalize"
        return "csv" if "user_id" in header else "ratings.csv"
    if path.suffix == ".dat":
        return "ratings.dat"
    if path.suffix in {".jsonl", ".ndjson"}:
        return "jsonl"
    raise DatasetError(f"{path}: unknown format; name it *.csv, u.data, ratings.dat or "
                       "*.jsonl, or pass --format")


def read(path: Path, format: str | None, weights: EventWeights) -> Iterator[RawEvent]:
    kind = format or detect(path)
    if kind == "ratings.csv":
        yield from _ratings_csv(path)
    elif kind == "u.data":
        yield from _u_data(path)
    elif kind == "jsonl":
        yield from _jsonl(path, weights)
    elif kind in _IMPORT_READERS:
        yield from _imported(path, _IMPORT_READERS[kind], weights)
    else:
        raise DatasetError(f"format {kind!r} is not one of {', '.join(FORMATS)}")


def _ratings_csv(path: Path) -> Iterator[RawEvent]:
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        missing = {"userId", "movieId", "rating", "timestamp"} - set(reader.fieldnames or ())
        if missing:
            raise DatasetError(
                f"{path}: header lacks {sorted(missing)} of a MovieLens ratings.csv (a CSV of "
                "streamrec events has user_id,item_id,event_type,timestamp; an Amazon "
                "Personalize one USER_ID,ITEM_ID,TIMESTAMP)")
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
                raise _refused(path, line, error) from None
            if event.timestamp is None:
                raise DatasetError(f"{path}:{line}: timestamp: required for evaluation")
            yield RawEvent(event.user_id, event.item_id, event.event_type, event.timestamp,
                           event.value)


def _imported(path: Path, reader, weights: EventWeights) -> Iterator[RawEvent]:
    """What ``streamrec import`` would send of the file, as events: its reader's documents,
    checked by the contract; the first row it would reject stops the replay, named."""
    with path.open("rb") as file:
        try:
            for line, _, document in reader(Lines(file), weights):
                if isinstance(document, str):
                    raise DatasetError(f"{path}:{line}: {document}")
                try:
                    event = parse_event(orjson.dumps(document), weights)
                except EventContractError as error:
                    raise _refused(path, line, error) from None
                if event.timestamp is None:
                    raise DatasetError(f"{path}:{line}: timestamp: required for evaluation")
                yield RawEvent(event.user_id, event.item_id, event.event_type,
                               event.timestamp, event.value)
        except (formats.FormatError, ImportFailed) as error:
            raise DatasetError(f"{path}: {error}") from None
