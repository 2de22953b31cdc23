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
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
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
    ``offsets`` receives each partition's first and last offset read (the lineage).

    A plain iterator (the import writes Redis synchronously) over batches an asyncio
    loop of its own fetches."""
    loop = asyncio.new_event_loop()
    batches = _topic_batches(settings, topic, until_end, timeout, offsets)
    try:
        while True:
            try:
                batch = loop.run_until_complete(anext(batches))
            except StopAsyncIteration:
                return
            progress(len(batch))
            yield from batch
    finally:
        loop.run_until_complete(batches.aclose())
        loop.close()


async def _topic_batches(settings: Settings, topic: str, until_end: bool, timeout: float,
                         offsets: dict[str, list[int]]
                         ) -> AsyncIterator[list[tuple[int, bytes]]]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streamrec.connections import kafka_client_options

    consumer = AIOKafkaConsumer(**kafka_client_options(settings), enable_auto_commit=False,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:  # a consumer without a subscription has read no metadata yet
            await consumer._client.force_metadata_update()  # noqa: SLF001
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ImportFailed(f"--topic: {topic!r} does not exist")
        assigned = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        # Without --until-end the end is where every partition stood when the marker was
        # read: the job sent it once its other records were acknowledged, in any partition.
        bounded = until_end
        deadline = time.monotonic() + timeout
        number = 0
        while True:
            if bounded and all([await consumer.position(tp) >= end
                                for tp, end in ends.items()]):
                return
            if time.monotonic() > deadline:
                raise ImportFailed(f"--topic: no end marker ({orjson.dumps(END_MARKER).decode()}"
                                   f") within {timeout:.0f} s (--until-end reads what is "
                                   "there)")
            batch: list[tuple[int, bytes]] = []
            fetched = await consumer.getmany(timeout_ms=500)
            for tp, records in sorted(fetched.items()):
                for record in records:
                    if bounded and record.offset >= ends[tp]:
                        continue
                    span = offsets.setdefault(str(tp.partition), [record.offset, record.offset])
                    span[1] = record.offset
                    if _is_end_marker(record.value):
                        if not bounded:
                            bounded = True
                            ends = await consumer.end_offsets(assigned)
                            ends[tp] = record.offset  # nothing after the marker counts
                        continue  # with --until-end: a marker an earlier run left
                    number += 1
                    batch.append((number, record.value or b""))
            yield batch
    finally:
        await consumer.stop()


def _is_end_marker(value: bytes | None) -> bool:
    try:
        return orjson.loads(value or b"") == END_MARKER
    except orjson.JSONDecodeError:
        return False
