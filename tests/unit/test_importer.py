"""How ``streamrec import`` reads rows: cells to JSON values, line numbers, reasons."""

from __future__ import annotations

import io

import orjson
import pytest

from schemas.models import Item, User
from streamrec.data.importer import Accepted, ImportFailed, Rejected, rows

EVENT_TYPES = {"view", "click"}


def read(text: str | bytes, data_format: str = "csv", kind: str = "items") -> list:
    data = text.encode() if isinstance(text, str) else text
    return list(rows(io.BytesIO(data), data_format, kind, EVENT_TYPES, max_skew=300.0))


def documents(outcomes: list) -> list[dict]:
    return [orjson.loads(o.value) for o in outcomes if isinstance(o, Accepted)]


def as_sent(*items: dict) -> list[dict]:
    """The documents the API would send for these items (PUT /items)."""
    return [Item.model_validate(item).model_dump(mode="json") for item in items]


def reasons(outcomes: list) -> list[str]:
    return [str(o) for o in outcomes if isinstance(o, Rejected)]


def test_csv_cells_become_the_fields_json_values():
    outcomes = read("item_id,categories,price,available,created_at,properties.colour,"
                    "properties.size,properties.code,properties.new\n"
                    "tea,drinks|hot,3.5,no,2024-01-01T00:00:00Z,green,12,007,true\n"
                    "cup,,,,,,,,\n")
    assert documents(outcomes) == as_sent(
        {"item_id": "tea", "categories": ["drinks", "hot"], "price": 3.5, "available": False,
         "created_at": 1_704_067_200.0,
         "properties": {"colour": "green", "size": 12.0, "code": "007", "new": True}},
        {"item_id": "cup"})
    assert [o.key for o in outcomes] == [b"tea", b"cup"]


def test_rejected_rows_name_their_line_and_field():
    outcomes = read('item_id,price,properties.note\n'
                    'tea,1,"two\nlines"\n'
                    'cup,-1,\n'
                    '\n'
                    'pot,abc,\n'
                    ',1,\n'
                    'jam,1,x,surplus\n')
    assert reasons(outcomes) == [
        "line 4: price: Input should be greater than or equal to 0",
        "line 6: price: Input should be a valid number",
        "line 7: item_id: Field required",
        "line 8: row: 4 cells where the header has 3",
    ]
    assert [o.line for o in outcomes] == [2, 4, 6, 7, 8]
    assert outcomes[1].row == {"item_id": "cup", "price": "-1", "properties.note": ""}


def test_a_header_with_an_unknown_column_stops_before_any_row():
    with pytest.raises(ImportFailed, match=r"unknown column\(s\) \['colour'\]"):
        read("item_id,colour\ntea,green\n")
    with pytest.raises(ImportFailed, match="more than once"):
        read("item_id,price,price\ntea,1,2\n")


def test_byte_order_mark_and_bytes_that_are_not_utf8():
    outcomes = read(b"\xef\xbb\xbfuser_id,properties.city\nann,Z\xfcrich\nbob,Paris\n",
                    kind="users")
    assert reasons(outcomes) == ["line 2: row: not valid UTF-8"]
    assert documents(outcomes) == [User(user_id="bob", properties={"city": "Paris"})
                                   .model_dump(mode="json")]


def test_events_are_filled_in_and_keyed_by_user():
    outcomes = read("user_id,item_id,event_type,timestamp,context.device\n"
                    "ann,tea,view,1700000000,mobile\n"
                    "bob,tea,click,,\n"
                    "cat,tea,teleport,,\n", kind="events")
    ann, bob = documents(outcomes)
    assert ann["timestamp"] == 1_700_000_000 and ann["context"] == {"device": "mobile"}
    assert len(ann["event_id"]) == 32 and ann["event_id"] != bob["event_id"]
    assert bob["timestamp"] > 1_700_000_000
    assert [o.key for o in outcomes if isinstance(o, Accepted)] == [b"ann", b"bob"]
    assert reasons(outcomes) == ["line 4: event_type: 'teleport' is not one of "
                                 "['click', 'view']"]


def test_jsonl_lines_are_validated_as_sent():
    outcomes = read('{"user_id": "ann", "item_id": "tea", "event_type": "view", '
                    '"event_id": "e1", "timestamp": 1700000000}\n'
                    '\n'
                    'not json\n'
                    '{"user_id": "ann", "item_id": "tea", "event_type": "view", "extra": 1}\n',
                    data_format="jsonl", kind="events")
    assert documents(outcomes) == [{"user_id": "ann", "item_id": "tea", "event_type": "view",
                                    "event_id": "e1", "timestamp": 1_700_000_000}]
    assert [r.split(":")[0] for r in reasons(outcomes)] == ["line 3", "line 4"]
    assert "extra: Extra inputs are not permitted" in reasons(outcomes)[1]
    assert outcomes[1].row == "not json"


def test_movielens_movies_become_items():
    outcomes = read('movieId,title,genres\n'
                    '1,Toy Story (1995),Adventure|Animation\n'
                    '2,"Heat, Again (1995)",(no genres listed)\n', data_format="movielens-movies")
    assert documents(outcomes) == as_sent(
        {"item_id": "1", "categories": ["Adventure", "Animation"],
         "properties": {"title": "Toy Story (1995)"}},
        {"item_id": "2", "properties": {"title": "Heat, Again (1995)"}})
    with pytest.raises(ImportFailed, match="lacks"):
        read("movieId,name\n1,x\n", data_format="movielens-movies")
    with pytest.raises(ImportFailed, match="--kind items"):
        read("movieId,title,genres\n", data_format="movielens-movies", kind="events")


def test_an_import_again_gives_each_event_the_id_it_had():
    text = ("user_id,item_id,event_type\n"
            "ann,tea,view\n"
            "ann,tea,view\n"  # the same view twice: two events
            "bob,tea,click\n")
    first = [document["event_id"] for document in documents(read(text, kind="events"))]
    again = [document["event_id"] for document in documents(read(text, kind="events"))]
    assert first == again and len(set(first)) == 3
