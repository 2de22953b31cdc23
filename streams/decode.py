"""Turn a batch of Kafka records into model inputs plus a list of rejects.

Pure of Faust so that it can be tested on plain records; the agents only move bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from recommender.base import Interaction
from recommender.weights import EventWeights
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
class Rejected:
    record: Record
    reason: str

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            ("streamrec-reason", self.reason.encode()[:4096]),
            ("streamrec-source", f"{self.record.topic}/{self.record.partition}"
                                 f"/{self.record.offset}".encode()),
        ]


def decode_events(
    records: list[Record], weights: EventWeights
) -> tuple[list[Interaction], list[Rejected]]:
    """Validate each record; events without a timestamp take the record's (broker) time."""
    interactions: list[Interaction] = []
    rejected: list[Rejected] = []
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
                        weights.weight(event.event_type, event.value))
        )
    return interactions, rejected


def decode_catalog(
    records: list[Record], model: type[Item] | type[User]
) -> tuple[list[tuple[str, dict[str, Any]]], list[Rejected]]:
    """Validate item or user documents; returns ``(id, document)`` pairs."""
    id_field = "item_id" if model is Item else "user_id"
    documents: list[tuple[str, dict[str, Any]]] = []
    rejected: list[Rejected] = []
    for record in records:
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
