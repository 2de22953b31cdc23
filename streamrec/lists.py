"""``streamrec lists import``: a batch job's lists, from a file or a Kafka topic, into a
new generation of a set, then one switch to it (:mod:`streamrec.storage.list_sets`).

The rows are parsed as they are read (:mod:`recommender.lists`) and written in pipelined
batches, so the memory stays bounded whatever the number of users; the set being served
is untouched until the switch, and stays so if the import fails or is killed.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from recommender.base import BATCH_MODELS, LISTS_PREFIX, MODELS
from recommender.lists import FORMATS, ListParser, ListRow, Rejections, detect
from streamrec.settings import Settings
from streamrec.storage.list_sets import ListSets

# A user the set has no list for (new since the job ran, or left out by it): the hybrid
# ranks from what they did so far, and gives a user nobody knows the popular items.
DEFAULT_FALLBACK = "hybrid"
FALLBACKS = (*MODELS, *BATCH_MODELS)
END_MARKER = {"end": True}  # the record a job streaming its lists sends last (--topic)


class ImportFailed(RuntimeError):
    """An import that switched nothing (the set being served, if any, is untouched)."""


@dataclass
class ImportReport:
    name: str
    generation: str | None
    read: int
    users: int
    item_lists: int
    items: int
    rejected: Rejections
    seconds: float
    previous: str | None
    card: dict[str, Any] | None

    @property
    def accepted(self) -> int:
        return self.users + self.item_lists


def check_options(fallback: str | None, blend: float) -> None:
    if fallback is not None and fallback not in FALLBACKS:
        raise ImportFailed(f"--fallback: {fallback!r} is not one of {list(FALLBACKS)} "
                           "(or 'none')")
    if not 0.0 <= blend < 1.0:
        raise ImportFailed(f"--blend: {blend} is not in [0, 1)")


class _HashedLines:
    """A binary file's lines as text, hashed (the card's lineage) and counted in bytes
    (the progress bar) as they are read."""

    def __init__(self, file: IO[bytes], progress: Callable[[int], Any]) -> None:
        self.file = file
        self.progress = progress
        self.sha256 = hashlib.sha256()

    def __iter__(self) -> Iterator[str]:
        unreported = 0
        for raw in self.file:
            self.sha256.update(raw)
            unreported += len(raw)
            if unreported >= 1 << 16:
                self.progress(unreported)
                unreported = 0
            yield raw.decode(errors="replace")
        self.progress(unreported)


def import_file(sets: ListSets, name: str, path: Path, data_format: str = "auto",
                fallback: str | None = DEFAULT_FALLBACK, blend: float = 0.0,
                similar: bool = False, progress: Callable[[int], Any] = lambda _: None,
                batch: int = 2000) -> ImportReport:
    """Import ``path``'s lists as set ``name`` (``data_format`` ``auto``: from its first
    line). The lists were made when the file was last written (its mtime): what a user
    did after that is what ``blend`` adds."""
    check_options(fallback, blend)
    if data_format == "auto":
        with path.open("rb") as file:
            data_format = detect(file.readline().decode(errors="replace"))
    if data_format not in FORMATS:
        raise ImportFailed(f"--format: {data_format!r} is not one of {list(FORMATS)} or auto")
    parser = ListParser(data_format, similar)
    stat = path.stat()
    with path.open("rb") as file:
        lines = _HashedLines(file, progress)
        try:
            return _import(sets, name, parser, parser.rows(lines), stat.st_mtime, fallback,
                           blend, lambda: {"file": path.name, "bytes": stat.st_size,
                                           "sha256": lines.sha256.hexdigest(),
                                           "format": data_format}, batch)
        except ValueError as error:  # a CSV header that is not one of ours
            raise ImportFailed(str(error)) from None


def import_records(sets: ListSets, name: str, records: Iterable[tuple[int, bytes]],
                   data_format: str, made_at: float, lineage: Callable[[], dict[str, Any]],
                   fallback: str | None = DEFAULT_FALLBACK, blend: float = 0.0,
                   similar: bool = False, batch: int = 2000) -> ImportReport:
    """Import records (number, JSON value) in a JSON format: a topic's messages."""
    check_options(fallback, blend)
    parser = ListParser(data_format, similar)

    def rows() -> Iterator[ListRow]:
        for number, value in records:
            row = parser.parse_record(value, number)
            if row is not None:
                yield row

    return _import(sets, name, parser, rows(), made_at, fallback, blend, lineage, batch)


def _import(sets: ListSets, name: str, parser: ListParser, rows: Iterable[ListRow],
            made_at: float, fallback: str | None, blend: float,
            lineage: Callable[[], dict[str, Any]], batch: int) -> ImportReport:
    started = time.monotonic()
    writer = sets.begin(name, parser.rejected, batch)
    try:
        for row in rows:
            writer.add(row)
        writer.flush()
    except BaseException:
        # The generation stays registered as being written: the next import or
        # `streamrec lists delete` deletes it (as after a kill).
        raise
    written = writer.written
    report = ImportReport(name, None, parser.read, written.users, written.item_lists,
                          len(written.items), parser.rejected, 0.0, None, None)
    if not report.accepted:
        sets.drop(name, writer.generation)
        report.seconds = time.monotonic() - started
        return report
    counts = {"users": written.users, "item_lists": written.item_lists,
              "items": len(written.items), "read": parser.read,
              "rejected": parser.rejected.total}
    pointer = {"made_at": made_at, "imported_at": time.time(), "fallback": fallback,
               "blend": blend, **counts}
    report.card = {
        "model": LISTS_PREFIX + name, "kind": "imported", "run": writer.generation,
        "made_at": made_at, "lineage": lineage(),
        "hyperparameters": {"fallback": fallback, "blend": blend}, "counts": counts,
        # Lists from outside are judged on live traffic (the placement report), not offline.
        "offline": None}
    report.generation = writer.generation
    report.previous = sets.swap(name, writer.generation, pointer, report.card)
    report.seconds = time.monotonic() - started
    return report


def topic_records(settings: Settings, topic: str, until_end: bool, timeout: float,
                  offsets: dict[str, list[int]], progress: Callable[[int], Any] = lambda _: None
                  ) -> Iterator[tuple[int, bytes]]:
    """The values of ``topic``'s records from its start: up to the end marker record
    (``{"end": true}``), or with ``until_end`` up to the end it had when this began.
    ``offsets`` receives each partition's first and last offset read (the lineage)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streamrec.connections import kafka_client_options

    loop = asyncio.new_event_loop()
    options = {key: value for key, value in kafka_client_options(settings).items()
               if key not in ("client_id",)}

    async def make() -> AIOKafkaConsumer:  # made in the loop that runs it
        return AIOKafkaConsumer(**options, enable_auto_commit=False,
                                auto_offset_reset="earliest", group_id=None)

    consumer = loop.run_until_complete(make())
    try:
        loop.run_until_complete(consumer.start())
        loop.run_until_complete(consumer.topics())  # the cluster's metadata, read now
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ImportFailed(f"--topic: {topic!r} does not exist")
        assigned = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        consumer.assign(assigned)
        loop.run_until_complete(consumer.seek_to_beginning(*assigned))
        ends = loop.run_until_complete(consumer.end_offsets(assigned))
        deadline = time.monotonic() + timeout
        number = 0
        while True:
            if until_end and all(loop.run_until_complete(consumer.position(tp)) >= end
                                 for tp, end in ends.items()):
                return
            if time.monotonic() > deadline:
                raise ImportFailed(f"--topic: no end marker ({orjson.dumps(END_MARKER).decode()}"
                                   f") within {timeout:.0f} s (--until-end reads what is "
                                   "there)")
            batches = loop.run_until_complete(consumer.getmany(timeout_ms=500))
            for tp, records in sorted(batches.items()):
                for record in records:
                    if until_end and record.offset >= ends[tp]:
                        continue
                    span = offsets.setdefault(str(tp.partition), [record.offset, record.offset])
                    span[1] = record.offset
                    number += 1
                    progress(1)
                    if not until_end and _is_end_marker(record.value):
                        return
                    yield number, record.value or b""
    finally:
        loop.run_until_complete(consumer.stop())
        loop.close()


def _is_end_marker(value: bytes | None) -> bool:
    try:
        return orjson.loads(value or b"") == END_MARKER
    except orjson.JSONDecodeError:
        return False
