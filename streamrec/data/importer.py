"""``streamrec import``: bulk-load items, users or events from CSV or JSON Lines into Kafka.

Every row is validated by the contract models the API uses (``schemas.models``); rows that
break the contract are reported with their line and field and never sent. The rest are
produced as the API produces them (same keys, same documents, ``event_id`` and
``timestamp`` filled in) with ``acks=all`` and an idempotent producer, and a row counts as
sent only once Kafka acknowledged it.

CSV cells become JSON values by the field they fill: an empty cell leaves the field out;
``categories`` is ``|``-separated; a number field (``price``, ``value``, ``timestamp``,
``created_at``) takes a JSON number, anything else is handed to the model as text (an
RFC 3339 ``timestamp`` is fine, ``abc`` is rejected); ``available`` takes ``true``/``false``,
``1``/``0``, ``yes``/``no``; ``properties.<name>`` (``context.<name>`` for events) becomes
one entry of that map: a JSON number is a number (``007`` is not: it stays text), ``true``
and ``false`` are booleans, anything else is a string.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from pydantic import BaseModel, ValidationError

from schemas.models import Event, Item, User, describe
from streamrec import apps
from streamrec.data import formats
from streamrec.settings import Settings

KINDS = {"items": Item, "users": User, "events": Event}
FORMATS = ("csv", "jsonl", "movielens-movies", "movielens-1m-movies", *formats.READERS,
           *formats.CATALOG_READERS)
# The kind of row each format that is not streamrec's own holds.
KIND_OF_FORMAT = {"movielens-movies": "items", "movielens-1m-movies": "items",
                  **dict.fromkeys(formats.READERS, "events"),
                  **{name: kind for name, (kind, _) in formats.CATALOG_READERS.items()}}
LIST_SEPARATOR = "|"
MOVIELENS_NO_GENRES = "(no genres listed)"


class ImportFailed(RuntimeError):
    """The file cannot be read as a whole (unknown format, header), or Kafka stopped
    acknowledging; ``str()`` says what and how far the import got."""


@dataclass(frozen=True)
class Rejected:
    line: int
    reason: str
    row: Any  # the raw row: a CSV row as {column: cell}, a JSON line as its text

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class Accepted:
    line: int
    key: bytes
    value: bytes


@dataclass
class ImportReport:
    read: int = 0
    sent: int = 0
    rejected: int = 0
    first_rejected: list[Rejected] = field(default_factory=list)
    seconds: float = 0.0


def detect(path: Path) -> str:
    """The format by the file's name; a CSV whose header is one of Amazon Personalize's
    datasets is ``personalize`` (interactions), ``personalize-items`` or
    ``personalize-users``."""
    if path.suffix == ".csv":
        return _personalize_csv(path) or "csv"
    if path.suffix in {".jsonl", ".ndjson"}:
        return "jsonl"
    if path.name == "u.data":
        return "movielens-100k"
    if path.name == "movies.dat":
        return "movielens-1m-movies"
    if path.suffix == ".dat":
        return "movielens-1m"
    raise ImportFailed(f"{path}: unknown format; name it *.csv, *.jsonl, u.data, ratings.dat "
                       "or movies.dat, or pass --format")


def _personalize_csv(path: Path) -> str | None:
    kind = formats.personalize_kind(formats.csv_header(path))
    return None if kind is None else {"events": "personalize", "items": "personalize-items",
                                      "users": "personalize-users"}[kind]


class Lines:
    """A binary file's lines as text, counting bytes for the progress bar. A line that is
    not UTF-8 is decoded with replacement characters and flagged, so its row is rejected
    rather than sent altered."""

    def __init__(self, file: IO[bytes], progress: Callable[[int], Any] = lambda _: None,
                 fallback: str | None = None) -> None:
        self.file = file
        self.progress = progress
        self.fallback = fallback  # the encoding of a line that is not UTF-8, if any
        self.undecodable = False  # since the caller last reset it

    def __iter__(self) -> Iterator[str]:
        first = True
        unreported = 0  # bytes read since the bar last moved (it moves in 64 KiB steps)
        for raw in self.file:
            unreported += len(raw)
            if unreported >= 1 << 16:
                self.progress(unreported)
                unreported = 0
            if first and raw.startswith(b"\xef\xbb\xbf"):  # a spreadsheet's byte-order mark
                raw = raw[3:]
            first = False
            try:
                yield raw.decode()
            except UnicodeDecodeError:
                if self.fallback is not None:
                    yield raw.decode(self.fallback)
                    continue
                self.undecodable = True
                yield raw.decode(errors="replace")
        self.progress(unreported)


def _schema_types(model: type[BaseModel]) -> dict[str, set[str]]:
    """Each field's JSON types (``number``, ``array``, ``object`` ...) from its schema."""
    types = {}
    for name, spec in model.model_json_schema()["properties"].items():
        variants = spec.get("anyOf", [spec])
        types[name] = {variant.get("type") for variant in variants}
    return types


class _CsvColumns:
    """How a header's columns fill a model's fields (checked once, before any row)."""

    def __init__(self, header: list[str], model: type[BaseModel]) -> None:
        self.types = _schema_types(model)
        maps = sorted(name for name, kinds in self.types.items() if "object" in kinds)
        unknown = [column for column in header if column not in self.types
                   and not any(column.startswith(f"{name}.") and len(column) > len(name) + 1
                               for name in maps)]
        if unknown:
            allowed = sorted(set(self.types) - set(maps)) + [f"{name}.<name>" for name in maps]
            hint = ("; a MovieLens ratings.csv? pass --format movielens-ratings"
                    if set(formats.RATINGS_HEADER) <= set(header) else
                    "; an Amazon Personalize interactions CSV? pass --format personalize"
                    if formats.is_personalize_header(header) else "")
            raise ImportFailed(f"header: unknown column(s) {unknown}; the columns of "
                               f"{model.__name__} are {allowed}{hint}")
        repeated = sorted({column for column in header if header.count(column) > 1})
        if repeated:
            raise ImportFailed(f"header: column(s) {repeated} appear more than once")
        self.header = header

    def document(self, cells: list[str]) -> dict[str, Any]:
        document: dict[str, Any] = {}
        for column, cell in zip(self.header, cells, strict=True):
            if cell == "":
                continue
            if column not in self.types:
                name, _, entry = column.partition(".")
                document.setdefault(name, {})[entry] = formats.scalar(cell)
            elif "array" in self.types[column]:
                document[column] = cell.split(LIST_SEPARATOR)
            elif "number" in self.types[column] and formats.JSON_NUMBER.fullmatch(cell):
                document[column] = float(cell)
            else:
                document[column] = cell
        return document


def _movielens_movie(row: dict[str, str]) -> dict[str, Any]:
    genres = row["genres"]
    return {"item_id": row["movieId"], "properties": {"title": row["title"]},
            "categories": [] if genres in ("", MOVIELENS_NO_GENRES)
            else genres.split(LIST_SEPARATOR)}


def read_csv(lines: Lines, model: type[BaseModel], movielens: bool = False
             ) -> Iterator[tuple[int, Any, dict[str, Any] | str]]:
    """``(line, raw row, document)``, or a reason in place of the document."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return
    if movielens:
        missing = {"movieId", "title", "genres"} - set(header)
        if missing:
            raise ImportFailed(f"header: a MovieLens movies.csv has movieId,title,genres; "
                               f"this one lacks {sorted(missing)}")
    else:
        columns = _CsvColumns(header, model)
    lines.undecodable = False
    end = reader.line_num
    for cells in reader:
        line, end = end + 1, reader.line_num
        if not cells:
            continue  # a blank line
        undecodable, lines.undecodable = lines.undecodable, False
        if len(cells) != len(header):
            yield line, cells, f"row: {len(cells)} cells where the header has {len(header)}"
            continue
        raw = dict(zip(header, cells, strict=True))
        if undecodable:
            yield line, raw, "row: not valid UTF-8"
        elif movielens:
            yield line, raw, _movielens_movie(raw)
        else:
            yield line, raw, columns.document(cells)


def read_movies_dat(lines: Lines) -> Iterator[tuple[int, Any, dict[str, Any] | str]]:
    """MovieLens 1M and 10M ``movies.dat``: ``MovieID::Title::Genres`` (ml-1m writes it
    in Latin-1, read as such)."""
    for line, text in enumerate(lines, start=1):
        row = text.rstrip("\r\n")
        if not row.strip():
            continue
        parts = row.split("::")
        if len(parts) != 3:
            yield line, row, (f"row: {len(parts)} '::'-separated fields where movies.dat has 3 "
                              "(MovieID, Title, Genres)")
            continue
        yield line, row, _movielens_movie(dict(zip(("movieId", "title", "genres"), parts,
                                                   strict=True)))


def read_jsonl(lines: Lines) -> Iterator[tuple[int, Any, bytes | str]]:
    for line, text in enumerate(lines, start=1):
        undecodable, lines.undecodable = lines.undecodable, False
        if not text.strip():
            continue
        row = text.rstrip("\r\n")
        yield line, row, "row: not valid UTF-8" if undecodable else row.encode()


class _Messages:
    """Validated rows as the API would produce them: ``(key, value)`` per row."""

    def __init__(self, kind: str, event_types: set[str], max_skew: float) -> None:
        self.model = KINDS[kind]
        self.kind = kind
        self.event_types = event_types
        self.max_skew = max_skew

    def message(self, document: dict[str, Any] | bytes, line: int = 0
                ) -> tuple[bytes, bytes]:
        """Raises ValueError naming the field at fault. An event without an ``event_id``
        gets :func:`stable_event_id` of its row and ``line``."""
        try:
            if isinstance(document, bytes):
                valid = self.model.model_validate_json(document)
            else:
                valid = self.model.model_validate(document)
        except ValidationError as error:
            raise ValueError(describe(error)) from None
        if isinstance(valid, Event):
            if valid.event_type not in self.event_types:
                raise ValueError(f"event_type: {valid.event_type!r} is not one of "
                                 f"{sorted(self.event_types)}")
            now = time.time()
            if valid.timestamp is not None and valid.timestamp > now + self.max_skew:
                # A file is history: a time after the import is a mistake to mend, not to
                # clamp (the worker would clamp it to when the broker got it).
                raise ValueError(f"timestamp: {valid.timestamp:.0f} is more than "
                                 f"{self.max_skew:g} s after now (the import's clock; "
                                 "STREAMREC_MAX_EVENT_TIME_SKEW_SECONDS)")
            filled = valid.model_copy(update={
                "timestamp": now if valid.timestamp is None else valid.timestamp,
                "event_id": valid.event_id or stable_event_id(valid, line),
            })
            return filled.user_id.encode(), orjson.dumps(
                filled.model_dump(exclude_none=True, exclude_defaults=True))
        identifier = valid.item_id if isinstance(valid, Item) else valid.user_id
        return identifier.encode(), orjson.dumps(valid.model_dump(mode="json"))


def stable_event_id(event: Event, line: int) -> str:
    """The id of an imported event that has none: a digest of the row's validated content
    (as given: a missing ``timestamp`` is not filled in yet) and its line number.

    Importing the same file again gives every row the id it had, so the worker leaves
    them all out (``recommender.once``); two equal rows on different lines stay two events.
    The same content on the same line of another file is taken for the same event: give
    rows an ``event_id`` (or a ``timestamp``) when that is wrong.

    >>> from schemas.models import Event
    >>> row = Event(user_id="ann", item_id="tea", event_type="view")
    >>> stable_event_id(row, 2) == stable_event_id(row, 2) != stable_event_id(row, 3)
    True
    >>> len(stable_event_id(row, 2))
    32
    """
    content = orjson.dumps(event.model_dump(mode="json", exclude_none=True),
                           option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(b"%d\n%s" % (line, content), digest_size=16).hexdigest()


def rows(file: IO[bytes], data_format: str, kind: str, event_types: set[str],
         max_skew: float, progress: Callable[[int], Any] = lambda _: None
         ) -> Iterator[Accepted | Rejected]:
    """Each non-blank row of ``file``, validated: an :class:`Accepted` message or a
    :class:`Rejected` row. An event more than ``max_skew`` seconds in the future is
    rejected."""
    loads = KIND_OF_FORMAT.get(data_format, kind)
    if loads != kind:
        raise ImportFailed(f"--format {data_format} loads {loads} (--kind {loads})")
    messages = _Messages(kind, event_types, max_skew)
    lines = Lines(file, progress, "latin-1" if data_format == "movielens-1m-movies" else None)
    if data_format == "jsonl":
        source = read_jsonl(lines)
    elif data_format == "movielens-1m-movies":
        source = read_movies_dat(lines)
    elif data_format in ("csv", "movielens-movies"):
        source = read_csv(lines, messages.model, movielens=data_format == "movielens-movies")
    elif data_format in formats.READERS:
        source = formats.READERS[data_format](lines, event_types)
    elif data_format in formats.CATALOG_READERS:
        source = formats.CATALOG_READERS[data_format][1](lines)
    else:
        raise ImportFailed(f"format {data_format!r} is not one of {list(FORMATS)}")
    try:
        yield from _validated(source, messages)
    except formats.FormatError as error:
        raise ImportFailed(str(error)) from None


def _validated(source, messages: _Messages) -> Iterator[Accepted | Rejected]:
    for line, raw, document in source:
        if isinstance(document, str):
            yield Rejected(line, document, raw)
            continue
        try:
            key, value = messages.message(document, line)
        except ValueError as error:
            yield Rejected(line, str(error), raw)
            continue
        yield Accepted(line, key, value)


async def produce(settings: Settings, topic: str, outcomes: Iterator[Accepted | Rejected],
                  report: ImportReport, on_rejected: Callable[[Rejected], Any],
                  batch: int = 1000, after_batch: Callable[[], Any] = lambda: None,
                  app: str = apps.DEFAULT) -> None:
    """Send every accepted row to ``topic`` in batches, two batches in flight at most;
    ``report.sent`` grows only by rows Kafka acknowledged. Rows of an ``app`` other than
    default carry its header (and its outcomes' keys are its own: see :func:`run`).

    Raises
    ------
    ImportFailed
        When Kafka does not acknowledge a row: naming the first line not acknowledged.
    """
    from aiokafka.errors import KafkaError

    from streamrec.kafka import ensure_topics
    from streamrec.kafka import producer as kafka_producer

    try:
        await ensure_topics(settings, "import")
        producer = kafka_producer(settings, linger_ms=20,
                                  max_batch_size=512 * 1024)
        await producer.start()
    except KafkaError as error:
        raise ImportFailed(f"Kafka at {settings.kafka_bootstrap} is not reachable ({error!r});"
                           " nothing was sent") from None
    in_flight: deque[list[tuple[int, asyncio.Future]]] = deque()
    headers = apps.record_headers(app)

    async def settle() -> None:
        pending = in_flight.popleft()
        results = await asyncio.gather(*(f for _, f in pending), return_exceptions=True)
        failed = [(line, r) for (line, _), r in zip(pending, results, strict=True)
                  if isinstance(r, BaseException)]
        report.sent += len(pending) - len(failed)
        after_batch()
        if failed:
            line, error = failed[0]
            raise ImportFailed(f"Kafka did not acknowledge line {line} ({error!r}); "
                               f"{report.sent} rows were acknowledged before it stopped")

    try:
        current: list[tuple[int, asyncio.Future]] = []
        for outcome in outcomes:
            report.read += 1
            if isinstance(outcome, Rejected):
                report.rejected += 1
                on_rejected(outcome)
                continue
            try:
                future = await producer.send(topic, outcome.value, key=outcome.key,
                                             headers=headers)
            except KafkaError as error:
                raise ImportFailed(f"Kafka refused line {outcome.line} ({error!r}); "
                                   f"{report.sent} rows were acknowledged before it") from None
            current.append((outcome.line, future))
            if len(current) >= batch:
                in_flight.append(current)
                current = []
                # Reading and validating never wait, so give the producer its turn here.
                if len(in_flight) > 1:
                    await settle()
                else:
                    await asyncio.sleep(0)
        if current:
            in_flight.append(current)
        while in_flight:
            await settle()
    finally:
        await producer.stop()


def shared_event_types(settings: Settings) -> set[str]:
    """The event types every role accepts (:mod:`streamrec.storage.event_weights`), so an
    imported row is accepted exactly when the API would accept it (an app's: ``settings``
    are the app's, :func:`streamrec.apps.app_settings`)."""
    import redis

    from streamrec.wiring import Wiring

    try:
        wiring = Wiring.connect(settings)
        try:
            return set(wiring.read_event_types()())
        finally:
            wiring.close()
    except redis.RedisError as error:
        raise ImportFailed(f"Redis (STREAMREC_REDIS_URL), which holds the event types, is not "
                           f"reachable ({error}); nothing was sent") from None


def run(path: Path, kind: str, data_format: str | None, settings: Settings,
        rejects: Path | None = None, keep_rejected: int = 10, batch: int = 1000,
        show_progress: bool | None = None, app: str = apps.DEFAULT) -> ImportReport:
    """Import ``path`` into ``app`` (``settings`` are that app's). Every rejected row goes
    to ``rejects`` (JSON Lines of ``line``, ``reason``, ``row``) when given; the report
    keeps the first ``keep_rejected``. ``show_progress=None`` shows a progress bar on a
    terminal only."""
    from tqdm import tqdm

    data_format = data_format or detect(path)
    topic = {"items": settings.items_topic, "users": settings.users_topic,
             "events": settings.events_topic}[kind]
    report = ImportReport()
    with contextlib.ExitStack() as stack:
        file = stack.enter_context(path.open("rb"))
        rejects_file = None if rejects is None else stack.enter_context(rejects.open("wb"))
        bar = stack.enter_context(tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                       desc=f"import {kind}", disable=None if show_progress
                                       is None else not show_progress))

        def rejected(row: Rejected) -> None:
            if len(report.first_rejected) < keep_rejected:
                report.first_rejected.append(row)
            if rejects_file is not None:
                rejects_file.write(orjson.dumps(vars(row), option=orjson.OPT_APPEND_NEWLINE))

        def progress() -> None:
            bar.set_postfix(sent=f"{report.sent:,}", rejected=f"{report.rejected:,}",
                            refresh=False)

        event_types = shared_event_types(settings) if kind == "events" else set()
        outcomes = rows(file, data_format, kind, event_types,
                        settings.max_event_time_skew_seconds, bar.update)
        if kind != "events" and app != apps.DEFAULT:
            # The compacted topics are shared: an app's catalog keys are "app/id".
            outcomes = (outcome if isinstance(outcome, Rejected) else dataclasses.replace(
                outcome, key=apps.record_key(app, outcome.key.decode()).encode())
                for outcome in outcomes)
        started = time.monotonic()
        asyncio.run(produce(settings, topic, outcomes, report, rejected, batch, progress,
                            app))
        report.seconds = time.monotonic() - started
    return report
