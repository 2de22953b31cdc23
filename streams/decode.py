"""Turn a batch of Kafka records into model inputs plus a list of rejects.

Pure of Faust so that it can be tested on plain records; the agents only move bytes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from pydantic import ValidationError

from recommender.attribution import Impression
from recommender.base import Interaction
from recommender.once import Claim
from recommender.weights import EventWeights
from schemas.impression import ImpressionMessage
from schemas.models import EventContractError, Item, User, describe, event_time, parse_event
from streamrec.apps import DEFAULT, HEADER, AppError, check_name, record_key
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
    # Faust's: a list of (name, bytes) or a mapping; aiokafka's: a sequence of pairs.
    headers: Any


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
    headers: Any = ()


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


def header_app(record: Record) -> str | None:
    """The value of a record's ``app`` header, or None without one. Raises AppError for a
    value that is not UTF-8.

    >>> from types import SimpleNamespace as R
    >>> header_app(R(headers=[("app", b"shop")])), header_app(R(headers=None))
    ('shop', None)
    """
    headers = getattr(record, "headers", None) or ()
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        if name == HEADER:
            try:
                return bytes(value or b"").decode()
            except UnicodeDecodeError:
                raise AppError("app: the header is not UTF-8") from None
    return None


def _field_app(value: bytes | None) -> str | None:
    """The ``app`` field of an event's JSON (for producers that cannot set headers)."""
    if not value or b'"app"' not in value:  # most records: no parse
        return None
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None  # the event's own decoding says what is wrong with it
    if not isinstance(document, dict) or "app" not in document:
        return None
    found = document["app"]
    if not isinstance(found, str):
        raise AppError(f"app: the field must be an app name, not {found!r}")
    return found


def record_app(record: Record, field: bool = False) -> str:
    """The app a record belongs to: its ``app`` header, else (``field``: the events topic)
    its JSON field ``app``, else ``default``. Raises AppError naming what is wrong: a name
    that is not one, or a header and a field that disagree.

    >>> from types import SimpleNamespace as R
    >>> record_app(R(headers=None, value=b'{"app": "shop"}'), field=True)
    'shop'
    >>> record_app(R(headers=[("app", b"shop")], value=b'{"app": "toys"}'), field=True)
    Traceback (most recent call last):
    ...
    streamrec.apps.AppError: app: the header says 'shop' and the field 'toys'
    """
    header = header_app(record)
    body = _field_app(record.value) if field else None
    if header is not None and body is not None and header != body:
        raise AppError(f"app: the header says {header!r} and the field {body!r}")
    name = header if header is not None else body
    return DEFAULT if name is None else check_name(name)


def replays_for(record: Record, app: str, since: float) -> bool:
    """Whether a replay of the retained events topic (``streamrec rebuild``, the trainer)
    for app ``app`` takes ``record``: the app's (one naming no app that is one is not: the
    main worker dead-lettered it), written since ``since``: an app deleted and created again
    under the same name must not learn its predecessor's records still on the topic."""
    if record.timestamp < since:
        return False
    try:
        return record_app(record, field=True) == app
    except AppError:
        return False


def _parse(value: bytes, weights: EventWeights):
    """An event, its ``app`` field (which :func:`record_app` read) left out: the app is
    the record's envelope, not the event."""
    if b'"app"' in value:
        try:
            document = orjson.loads(value)
        except orjson.JSONDecodeError:
            document = None
        if isinstance(document, dict) and document.pop("app", None) is not None:
            value = orjson.dumps(document)
    return parse_event(value, weights)


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
                  now: float | None = None, refused: Mapping[str, str] | None = None
                  ) -> DecodedEvents:
    """Validate each record; event times are bounded by :func:`event_time` (``now``, the
    worker's clock, only matters for records without the broker's append time).
    ``refused`` rejects records by :func:`position` with a reason found before (an app
    that does not exist)."""
    now = time.time() if now is None else now
    decoded = DecodedEvents()
    interactions, rejected = decoded.interactions, decoded.rejected
    for record in records:
        if record.value is None:
            rejected.append(Rejected(record, "body: empty message"))
            continue
        if refused and position(record) in refused:
            rejected.append(Rejected(record, refused[position(record)]))
            continue
        try:
            event = _parse(record.value, weights)
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
    records: list[Record], model: type[Item] | type[User], app: str = DEFAULT
) -> tuple[list[tuple[str, dict[str, Any] | None]], list[Rejected]]:
    """Validate item or user documents of ``app``; returns ``(id, document)`` pairs in
    record order.

    The items and users topics are compacted by key, so a record counts only when its key
    is the id of its document (``app/id`` for an app other than default,
    :func:`streamrec.apps.record_key`): a record under another key would outlive the
    tombstone that deletes its id. A tombstone (no value) deletes the id its key names:
    its document is None.
    """
    id_field = "item_id" if model is Item else "user_id"
    documents: list[tuple[str, dict[str, Any] | None]] = []
    rejected: list[Rejected] = []
    for record in records:
        if record.value is None:
            bare = _strip_app(record.key, app)
            if bare is None and record.key is not None:
                rejected.append(Rejected(record, f"key: a tombstone of app {app!r} must be "
                                                 f"keyed '{app}/' and the {id_field}"))
                continue
            identifier, reason = _tombstone_key(bare, model, id_field)
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
        if record.key != record_key(app, data[id_field]).encode():
            expected = id_field if app == DEFAULT else f"'{app}/' and the {id_field}"
            rejected.append(Rejected(record, f"key: required, and must equal {expected} "
                                             "(the topic is compacted by it)"))
            continue
        documents.append((data[id_field], data))
    return documents, rejected


def _strip_app(key: bytes | None, app: str) -> bytes | None:
    """A tombstone's id: its key without the app's ``app/`` (None when it lacks it).

    >>> _strip_app(b"shop/42", "shop"), _strip_app(b"42", "shop"), _strip_app(b"42", "default")
    (b'42', None, b'42')
    """
    if app == DEFAULT or key is None:
        return key
    start = f"{app}/".encode()
    return key[len(start):] if key.startswith(start) else None


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


def highest_offsets(records: list[Record]) -> dict[str, int]:
    """The highest offset per partition among ``records``.

    >>> from types import SimpleNamespace as R
    >>> highest_offsets([R(topic="e", partition=0, offset=n) for n in (4, 6, 5)])
    {'e:0': 6}
    """
    offsets: dict[str, int] = {}
    for record in records:
        name = source(record)
        offsets[name] = max(offsets.get(name, -1), record.offset)
    return offsets


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
    return fresh, highest_offsets(fresh)
