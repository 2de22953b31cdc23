"""Decoding Kafka records into model inputs and rejects (streams/decode.py), on plain
records: what the worker and every rebuild do with each message."""

from __future__ import annotations

import orjson
import pytest

from recommender.weights import EventWeights
from schemas.models import Item, User
from streams.decode import (
    CREATE_TIME,
    LOG_APPEND_TIME,
    PlainRecord,
    decode_catalog,
    decode_events,
    decode_impressions,
    unapplied,
)
from tests.factories import event

RECEIVED = 1_750_000_000.0
WEIGHTS = EventWeights({"view": 1.0, "click": 2.0, "rating": 3.0}, 3.5)


def record(value: dict | bytes | None, key: bytes | None = b"ann", offset: int = 0,
           timestamp: float = RECEIVED, kind: int = LOG_APPEND_TIME,
           topic: str = "events") -> PlainRecord:
    raw = orjson.dumps(value) if isinstance(value, dict) else value
    return PlainRecord(topic, 0, offset, key, raw, timestamp, kind)


def decode(*records: PlainRecord, now: float = RECEIVED):
    return decode_events(list(records), WEIGHTS, max_skew=300.0, now=now)


def test_a_valid_event_becomes_an_interaction_weighted_by_its_type():
    decoded = decode(record(event(kind="click", timestamp=RECEIVED - 10)))
    (interaction,) = decoded.interactions
    assert (interaction.user_id, interaction.item_id, interaction.weight,
            interaction.timestamp, interaction.event_type) == (
        "ann", "tea", 2.0, RECEIVED - 10, "click")
    assert decoded.rejected == [] and decoded.feedback == []


def test_an_event_naming_its_list_is_feedback_too():
    decoded = decode(record(event(kind="click", recommendation_id="r1")))
    (feedback,) = decoded.feedback
    assert (feedback.recommendation_id, feedback.item_id, feedback.received) == (
        "r1", "tea", RECEIVED)


@pytest.mark.parametrize(("value", "key", "reason"), [
    (None, b"ann", "body: empty message"),
    (b"{not json", b"ann", "body"),
    (event(kind="teleport"), b"ann", "event_type"),
    (event(), None, "key: required, and must equal user_id"),
    (event(), b"bob", "key: required, and must equal user_id"),
])
def test_a_bad_record_is_rejected_with_a_reason_and_the_rest_go_on(value, key, reason):
    decoded = decode(record(value, key, offset=0), record(event(item="jam"), offset=1))
    (rejected,) = decoded.rejected
    assert rejected.record.offset == 0 and reason in rejected.reason
    assert [i.item_id for i in decoded.interactions] == ["jam"]
    names = dict(rejected.headers())
    assert names["streamrec-source"] == b"events/0/0"


def test_an_event_time_ahead_of_its_arrival_is_clamped():
    (interaction,) = decode(record(event(timestamp=RECEIVED + 86400))).interactions
    assert interaction.timestamp == RECEIVED + 300.0


def test_a_producers_time_is_bounded_by_the_workers_clock():
    late_clock = record(event(), timestamp=RECEIVED + 86400, kind=CREATE_TIME)
    (interaction,) = decode(late_clock, now=RECEIVED).interactions
    assert interaction.timestamp == RECEIVED  # no event time: the receipt, bounded


def test_a_low_rating_marks_the_item_seen_without_weight():
    (interaction,) = decode(record(event(kind="rating", value=2.0))).interactions
    assert interaction.weight == 0.0


def test_impressions_are_validated_like_http_input():
    good = {"recommendation_id": "r1", "user_id": "ann", "placement": "home",
            "variant": "a", "model": "mf", "items": ["tea"], "timestamp": RECEIVED,
            "allocated": True}
    impressions, rejected = decode_impressions([
        record(good, topic="impressions"), record({**good, "model": "magic"}, offset=1),
        record(None, offset=2)])
    assert [i.recommendation_id for i in impressions] == ["r1"]
    assert [r.record.offset for r in rejected] == [1, 2]
    assert rejected[0].reason.startswith("impression: ")


def test_catalog_records_count_under_their_own_id_and_tombstones_delete():
    documents, rejected = decode_catalog([
        record({"item_id": "tea", "categories": ["drink"]}, key=b"tea"),
        record({"item_id": "jam"}, key=b"tea", offset=1),  # under another id's key
        record(None, key=b"tea", offset=2),  # a tombstone
        record(None, key=None, offset=3),  # a tombstone naming nothing
        # Without a key (a topic not compacted yet: a compacted one refuses it).
        record({"item_id": "jam"}, key=None, offset=4),
    ], Item)
    assert [(item, doc is None) for item, doc in documents] == [("tea", False), ("tea", True)]
    assert [r.record.offset for r in rejected] == [1, 3, 4]
    assert "must equal item_id" in rejected[2].reason
    users, rejected = decode_catalog([record({"user_id": "ann"}, key=b"ann"),
                                      record({"user_id": "bob"}, key=None, offset=1)], User)
    assert users[0][0] == "ann" and len(users) == 1
    assert "must equal user_id" in rejected[0].reason


def test_records_at_or_below_the_applied_offset_are_skipped():
    batch = [record(event(), offset=n) for n in (3, 4, 5)]
    fresh, offsets = unapplied(batch, {"events:0": 4})
    assert [r.offset for r in fresh] == [5] and offsets == {"events:0": 5}
