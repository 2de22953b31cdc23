"""A record's app (streams/decode.py): its header, or an event's JSON field, and what is
wrong when they disagree or name no app; an app's catalog keys are 'app/id'."""

from __future__ import annotations

import orjson
import pytest

from recommender.weights import EventWeights
from schemas.models import Item
from streamrec.apps import AppError
from streams.decode import (
    LOG_APPEND_TIME,
    PlainRecord,
    decode_catalog,
    decode_events,
    highest_offsets,
    record_app,
)
from tests.factories import event

WEIGHTS = EventWeights({"view": 1.0}, 3.5)


def record(value: dict | None, key: bytes = b"ann", headers=(), offset: int = 0,
           topic: str = "events") -> PlainRecord:
    raw = None if value is None else orjson.dumps(value)
    return PlainRecord(topic, 0, offset, key, raw, 1_750_000_000.0, LOG_APPEND_TIME, headers)


@pytest.mark.parametrize(("headers", "body", "app"), [
    ((), event(), "default"),
    ([("app", b"shop")], event(), "shop"),
    ({"app": b"shop"}, event(), "shop"),  # Faust may give the headers as a mapping
    ((), event(app="shop"), "shop"),
    ([("app", b"shop")], event(app="shop"), "shop"),
    ((), event(context={"app": "ios"}), "default"),  # a context key is not the field
])
def test_a_records_app_is_its_header_or_its_field(headers, body, app):
    assert record_app(record(body, headers=headers), field=True) == app


@pytest.mark.parametrize(("headers", "body", "message"), [
    ([("app", b"shop")], event(app="toys"), "app: the header says 'shop' and the field 'toys'"),
    ([("app", b"Shop!")], event(), "app: 'Shop!' must be 1-32 of a-z"),
    ([("app", b"\xff")], event(), "app: the header is not UTF-8"),
    ((), event(app=7), "app: the field must be an app name, not 7"),
])
def test_a_wrong_app_is_refused_naming_it(headers, body, message):
    with pytest.raises(AppError, match=message.replace("(", r"\(")):
        record_app(record(body, headers=headers), field=True)


def test_the_field_is_read_on_the_events_topic_only():
    assert record_app(record(event(app="shop")), field=False) == "default"


def test_the_field_is_the_envelope_not_the_event():
    decoded = decode_events([record(event(app="shop"))], WEIGHTS, 300.0, now=1.8e9)
    assert [(i.user_id, i.item_id) for i in decoded.interactions] == [("ann", "tea")]
    assert decoded.rejected == []


def test_refused_records_are_rejected_with_the_reason_given():
    refused = record(event(), offset=3)
    decoded = decode_events([record(event()), refused], WEIGHTS, 300.0, now=1.8e9,
                            refused={"0:3": "app: 'nope' does not exist"})
    assert len(decoded.interactions) == 1
    assert [(r.record.offset, r.reason) for r in decoded.rejected] == [
        (3, "app: 'nope' does not exist")]


def test_an_apps_catalog_keys_carry_its_name():
    headers = [("app", b"shop")]
    documents, rejected = decode_catalog([
        record({"item_id": "42"}, key=b"shop/42", headers=headers, topic="items"),
        record(None, key=b"shop/7", headers=headers, topic="items"),
        record({"item_id": "43"}, key=b"43", headers=headers, topic="items"),
        record(None, key=b"8", headers=headers, topic="items"),
    ], Item, "shop")
    assert [(identifier, document and document["item_id"])
            for identifier, document in documents] == [("42", "42"), ("7", None)]
    assert [r.reason for r in rejected] == [
        "key: required, and must equal 'shop/' and the item_id (the topic is compacted by it)",
        "key: a tombstone of app 'shop' must be keyed 'shop/' and the item_id"]


def test_highest_offsets_per_partition():
    records = [record(event(), offset=n) for n in (5, 9, 7)]
    assert highest_offsets(records) == {"events:0": 9}
