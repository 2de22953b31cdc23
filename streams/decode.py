"""Turn a batch of Kafka records into model inputs plus a list of rejects.

Pure of Faust so that it can be tested on plain records; the agents only move bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from recommender.attribution import Impression
from recommender.base import Interaction
from recommender.weights import EventWeights
from schemas.impression import ImpressionMessage
from schemas.models import EventContractError, Item, User, describe, parse_event


class Record(Protocol):
    """What the worker needs of a Kafka record (Faust's ``Message`` has all of it)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float


@dataclass(frozen=True)
class PlainRecord:
    """A :class:`Record` outside Faust: aiokafka's records (their milliseconds made seconds)
    in a rebuild, and tests. The protocol above is what Faust's messages already are."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float


@dataclass(frozen=True)
class Rejected:
    record: Record
    reason: str

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            ("streamrec-reason", self.reason.encode()[:4096]),
            ("streamrec-source", f"{self.record.topic}/{self.record.partition}"
                                 f"/{self.record.offset}".encode()),
        ]


@dataclass(frozen=True)
class Feedback:
    """An event that names the list it came from (its ``recommendation_id``)."""

    recommendation_id: str
    user_id: str
    item_id: str
    event_type: str
    timestamp: float  # what the event claims
    received: float  # its Kafka record time: when the API (or a producer) handed it over


@dataclass
class DecodedEvents:
    interactions: list[Interaction] = field(default_factory=list)
    feedback: list[Feedback] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def decode_events(records: list[Record], weights: EventWeights) -> DecodedEvents:
    """Validate each record; events without a timestamp take the record's (broker) time."""
    decoded = DecodedEvents()
    interactions, rejected = decoded.interactions, decoded.rejected
    for record in records:
        if record.value is None:
            rejected.append(Rejected(record, "body: empty message"))
            continue
        try:
            event = parse_event(record.value, weights)
        except EventContractError as error:
            rejected.append(Rejected(record, str(error)))
            continue
        if record.key is not None and record.key != event.user_id.encode():
            # Keying by user_id keeps a user's state in one partition, hence one worker.
            rejected.append(Rejected(record, "key: must equal user_id"))
            continue
        timestamp = event.timestamp if event.timestamp is not None else record.timestamp
        interactions.append(
            Interaction(event.user_id, event.item_id, timestamp,
                        weights.weight(event.event_type, event.value), event.event_type)
        )
        if event.recommendation_id is not None:
            decoded.feedback.append(Feedback(event.recommendation_id, event.user_id,
                                             event.item_id, event.event_type, timestamp,
                                             record.timestamp))
    return decoded


def decode_impressions(records: list[Record]) -> tuple[list[Impression], list[Rejected]]:
    """Impressions come from the API; each is validated like HTTP input
    (``schemas.impression.ImpressionMessage``: types, finite numbers, bounded names, a
    list of ids), and anything else on the topic is rejected, not fatal."""
    impressions: list[Impression] = []
    rejected: list[Rejected] = []
    for record in records:
        if record.value is None:
            rejected.append(Rejected(record, "impression: empty message"))
            continue
        try:
            message = ImpressionMessage.model_validate_json(record.value)
        except ValidationError as error:
            rejected.append(Rejected(record, f"impression: {describe(error)}"))
            continue
        impressions.append(Impression.from_dict(message.model_dump()))
    return impressions, rejected


def decode_catalog(
    records: list[Record], model: type[Item] | type[User]
) -> tuple[list[tuple[str, dict[str, Any] | None]], list[Rejected]]:
    """Validate item or user documents; returns ``(id, document)`` pairs in record order.

    On the compacted items topic a tombstone (no value) keyed by an item id deletes the
    item: its document is None.
    """
    id_field = "item_id" if model is Item else "user_id"
    documents: list[tuple[str, dict[str, Any] | None]] = []
    rejected: list[Rejected] = []
    for record in records:
        if record.value is None and model is Item:
            item_id, reason = _tombstone_key(record.key)
            if item_id is None:
                rejected.append(Rejected(record, reason))
            else:
                documents.append((item_id, None))
            continue
        if record.value is None:
            rejected.append(Rejected(record, "body: empty message"))
            continue
        try:
            document = model.model_validate_json(record.value)
        except ValidationError as error:
            rejected.append(Rejected(record, describe(error)))
            continue
        data = document.model_dump(mode="json")
        documents.append((data[id_field], data))
    return documents, rejected


def _tombstone_key(key: bytes | None) -> tuple[str | None, str]:
    """The item id a tombstone deletes, or None and why it names none."""
    if key is None:
        return None, "key: a tombstone must be keyed by the item_id it deletes"
    try:
        return Item(item_id=key.decode()).item_id, ""
    except UnicodeDecodeError:
        return None, "key: a tombstone's key must be a UTF-8 item_id"
    except ValidationError as error:
        return None, f"key: {describe(error)}"


def source(record: Record) -> str:
    """The ``"topic:partition"`` a record's offset belongs to."""
    return f"{record.topic}:{record.partition}"


def unapplied(records: list[Record], applied: dict[str, int]
              ) -> tuple[list[Record], dict[str, int]]:
    """Drop records at or below their partition's applied offset (a replay after a crash);
    returns the rest and the highest offset per partition among them.

    >>> from types import SimpleNamespace as R
    >>> batch = [R(topic="events", partition=0, offset=n) for n in (4, 5, 6)]
    >>> fresh, offsets = unapplied(batch, {"events:0": 5})
    >>> [r.offset for r in fresh], offsets
    ([6], {'events:0': 6})
    """
    fresh = [r for r in records if r.offset > applied.get(source(r), -1)]
    offsets: dict[str, int] = {}
    for record in fresh:
        name = source(record)
        offsets[name] = max(offsets.get(name, -1), record.offset)
    return fresh, offsets
