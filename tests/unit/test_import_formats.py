"""``streamrec import`` of interaction files: MovieLens ``ratings.csv`` and ``u.data`` as
rating events, and the JSONL events ``streamrec evaluate`` reads, with the catalog
import's reasons and line numbers."""

from __future__ import annotations

import io

import click
import orjson
import pytest

from recommender.weights import EventWeights
from streamrec.cli.import_export import import_rows
from streamrec.data import datasets
from streamrec.data.importer import FORMATS, Accepted, ImportFailed, Rejected, detect, rows

EVENT_TYPES = {"view", "rating"}


def read(text: str | bytes, data_format: str, event_types=EVENT_TYPES) -> list:
    data = text.encode() if isinstance(text, str) else text
    return list(rows(io.BytesIO(data), data_format, "events", event_types, max_skew=300.0))


def sent(outcomes: list) -> list[dict]:
    """The documents sent, without the event_id the importer's path fills in."""
    documents = [orjson.loads(o.value) for o in outcomes if isinstance(o, Accepted)]
    for document in documents:
        assert document.pop("event_id")
    return documents


def reasons(outcomes: list) -> list[str]:
    return [str(o) for o in outcomes if isinstance(o, Rejected)]


def rating(user: str, item: str, value: float, timestamp: float) -> dict:
    return {"user_id": user, "item_id": item, "event_type": "rating", "value": value,
            "timestamp": timestamp}


def test_movielens_ratings_become_rating_events():
    outcomes = read("userId,movieId,rating,timestamp\n"
                    "1,31,2.5,1260759144\n"
                    "1,1029,3.0,1260759179\n"
                    "\n"
                    "2,10,four,835355493\n"
                    "2,17,5.0\n"
                    ",17,5.0,835355681\n"
                    "3,60,nan,835355681\n"
                    "3,61,4.0,4102444800\n", "movielens-ratings")
    assert sent(outcomes) == [rating("1", "31", 2.5, 1_260_759_144),
                              rating("1", "1029", 3.0, 1_260_759_179)]
    assert [o.key for o in outcomes if isinstance(o, Accepted)] == [b"1", b"1"]
    assert reasons(outcomes) == [
        "line 5: rating: 'four' is not a number",
        "line 6: row: 3 cells where the header has 4",
        "line 7: user_id: String should have at least 1 character",
        "line 8: rating: 'nan' is not a finite number",
        "line 9: timestamp: 4102444800 is more than 300 s after now (the import's clock; "
        "STREAMREC_MAX_EVENT_TIME_SKEW_SECONDS)",
    ]
    assert outcomes[2].row == {"userId": "2", "movieId": "10", "rating": "four",
                               "timestamp": "835355493"}


def test_a_ratings_header_in_another_order_or_lacking_a_column():
    outcomes = read("timestamp,rating,movieId,userId,tag\n1260759144,4,31,1,x\n",
                    "movielens-ratings")
    assert sent(outcomes) == [rating("1", "31", 4.0, 1_260_759_144)]
    with pytest.raises(ImportFailed, match=r"lacks \['timestamp'\]"):
        read("userId,movieId,rating\n1,2,3\n", "movielens-ratings")
    with pytest.raises(ImportFailed, match="pass --format movielens-ratings"):
        read("userId,movieId,rating,timestamp\n1,2,3,4\n", "csv")


def test_u_data_rows_become_rating_events():
    outcomes = read(b"196\t242\t3\t881250949\n"
                    b"186\t302\t3\t891717742\r\n"
                    b"22 377 1 878887116\n"
                    b"\n"
                    b"244\t51\t2\t880606923\xff\n", "movielens-100k")
    assert sent(outcomes) == [rating("196", "242", 3.0, 881_250_949),
                              rating("186", "302", 3.0, 891_717_742)]
    assert reasons(outcomes) == [
        "line 3: row: 1 tab-separated fields where u.data has 4 (user, item, rating, "
        "timestamp)",
        "line 5: row: not valid UTF-8",
    ]


def test_ratings_need_the_rating_event_type():
    outcomes = read("196\t242\t3\t881250949\n", "movielens-100k", event_types={"view"})
    assert reasons(outcomes) == ["line 1: event_type: 'rating' is not one of ['view']"]
    with pytest.raises(ImportFailed, match="--kind events"):
        list(rows(io.BytesIO(b""), "movielens-100k", "items", EVENT_TYPES, 300.0))


def test_what_evaluate_reads_is_imported_as_it_is(tmp_path):
    """``streamrec evaluate``'s JSONL events are ``--format jsonl`` events: every line
    evaluate reads is imported unchanged."""
    lines = [{"user_id": "ann", "item_id": "tea", "event_type": "view",
              "timestamp": 1_700_000_000},
             {"user_id": "bob", "item_id": "cup", "event_type": "rating", "value": 4.5,
              "timestamp": 1_700_000_100, "context": {"device": "tv"}}]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    weights = EventWeights({"view": 1.0, "rating": 3.0})
    evaluated = list(datasets.read(path, None, weights))
    assert [(e.user_id, e.item_id, e.event_type, e.timestamp, e.value) for e in evaluated] == [
        ("ann", "tea", "view", 1_700_000_000, None), ("bob", "cup", "rating", 1_700_000_100, 4.5)]
    assert detect(path) == "jsonl"
    assert sent(read(path.read_bytes(), "jsonl")) == lines


def test_u_data_is_recognised_by_name_and_the_cli_offers_every_format(tmp_path):
    assert detect(tmp_path / "u.data") == "movielens-100k"
    option = next(p for p in import_rows.params if p.name == "data_format")
    assert isinstance(option.type, click.Choice)
    assert tuple(option.type.choices) == FORMATS
