"""Turn a batch of Kafka records into model inputs plus a list of rejects.

Pure of Faust so that it can be tested on plain records; the agents only move bytes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from recommender.attribution import Impression
from recommender.base import Interaction
from recommender.once import Claim
from recommender.weights import EventWeights
from schemas.impression import ImpressionMessage
from schemas.models import EventContractError, Item, User, describe, event_time, parse_event
from streamrec.logs import escape

# Kafka's timestamp types: the producer's clock, or the broker's when it appended the record
# (a topic's message.timestamp.type; streamrec creates the events topic with the latter).
CREATE_TIME, LOG_APPEND_TIME = 0, 1


class Record(Protocol):
    """What the worker needs of a Kafka record (Faust's ``Message`` has all of it)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float
    timestamp_type: int | None


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
    timestamp_type: int | None


@dataclass(frozen=True)
class Rejected:
    record: Record
    reason: str

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            # The reason quotes the message (a context key, say): one line, no escapes.
            ("streamrec-reason", escape(self.reason).encode()[:4096]),
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
    received: float  # when streamrec received it (received_at): the attribution clock
    position: str = ""  # the record's "partition:offset" (see recommender.once.Claim)


@dataclass
class DecodedEvents:
    interactions: list[Interaction] = field(default_factory=list)
    # Each interaction's claim on its event_id (None: the event has none), in step with it.
    claims: list[Claim | None] = field(default_factory=list)
    feedback: list[Feedback] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def received_at(record: Record, now: float) -> float:
    """When streamrec received ``record``, as no producer can set it far ahead and every
    replay finds it again: the broker's append time, which the log keeps. A record with
    the producer's time (written before the topic stamped its records, or to a topic
    streamrec could not configure) is bounded by the worker's clock ``now`` instead.

    >>> from types import SimpleNamespace as R
    >>> received_at(R(timestamp=4e9, timestamp_type=LOG_APPEND_TIME), now=2e9)
    4000000000.0
    >>> received_at(R(timestamp=4e9, timestamp_type=CREATE_TIME), now=2e9)
    2000000000.0
    """
    if record.timestamp_type == LOG_APPEND_TIME:
        return record.timestamp
    return min(record.timestamp, now)


def decode_events(records: list[Record], weights: EventWeights, max_skew: float,
                  now: float | None = None) -> DecodedEvents:
    """Validate each record; event times are bounded by :func:`event_time` (``now``, the
    worker's clock, only matters for records without the broker's append time)."""
    now = time.time() if now is None else now
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
        if record.key != event.user_id.encode():
            # Keying by user_id keeps a user's state in one partition, hence one worker.
            rejected.append(Rejected(record, "key: required, and must equal user_id"))
            continue
        received = received_at(record, now)
        timestamp = event_time(event.timestamp, received, max_skew)
        interactions.append(
            Interaction(event.user_id, event.item_id, timestamp,
                        weights.weight(event.event_type, event.value), event.event_type)
        )
        at = position(record)
        decoded.claims.append(None if event.event_id is None
                              else Claim(event.event_id, at, received))
        if event.recommendation_id is not None:
            decoded.feedback.append(Feedback(event.recommendation_id, event.user_id,
                                             event.item_id, event.event_type, timestamp,
                                             received, at))
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

    The items and users topics are compacted by key, so a record counts only when its key
    is the id of its document: a record under another key would outlive the tombstone
    that deletes its id. A tombstone (no value) deletes the id its key names: its document
    is None.
    """
    id_field = "item_id" if model is Item else "user_id"
    documents: list[tuple[str, dict[str, Any] | None]] = []
    rejected: list[Rejected] = []
    for record in records:
        if record.value is None:
            identifier, reason = _tombstone_key(record.key, model, id_field)
            if identifier is None:
                rejected.append(Rejected(record, reason))
            else:
                documents.append((identifier, None))
            continue
        try:
            document = model.model_validate_json(record.value)
        except ValidationError as error:
            rejected.append(Rejected(record, describe(error)))
            continue
        data = document.model_dump(mode="json")
        if record.key != data[id_field].encode():
            rejected.append(Rejected(record, f"key: required, and must equal {id_field} "
                                             "(the topic is compacted by it)"))
            continue
        documents.append((data[id_field], data))
    return documents, rejected


def _tombstone_key(key: bytes | None, model: type[Item] | type[User], id_field: str
                   ) -> tuple[str | None, str]:
    """The id a tombstone deletes, or None and why it names none."""
    if key is None:
        return None, f"key: a tombstone must be keyed by the {id_field} it deletes"
    try:
        return getattr(model.model_validate({id_field: key.decode()}), id_field), ""
    except UnicodeDecodeError:
        return None, f"key: a tombstone's key must be a UTF-8 {id_field}"
    except ValidationError as error:
        return None, f"key: {describe(error)}"


def position(record: Record) -> str:
    """A record's ``"partition:offset"``: what names it in a claim on its event id (the
    events topic is implied: a shorter value to keep for every id remembered)."""
    return f"{record.partition}:{record.offset}"


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
