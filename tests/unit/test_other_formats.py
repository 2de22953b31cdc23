"""MovieLens 1M/10M ``ratings.dat`` and Amazon Personalize interactions CSVs: what
``streamrec import`` sends of them, and that ``streamrec evaluate`` and ``tune`` replay
exactly the events of the same ratings in MovieLens' ``ratings.csv``."""

from __future__ import annotations

import io

import click
import orjson
import pytest

from recommender.weights import EventWeights
from streamrec.cli import measurements
from streamrec.data import datasets
from streamrec.data.importer import Accepted, ImportFailed, detect, rows
from streamrec.measure.evaluate import catalog, load
from streamrec.settings import Settings
from tests.unit.test_import_formats import reasons, sent

EVENT_TYPES = {"view", "click", "purchase", "rating"}
PERSONALIZE = ("USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE,IMPRESSION,"
               "RECOMMENDATION_ID,DEVICE\n")


def read(text: str | bytes, data_format: str) -> list:
    data = text.encode() if isinstance(text, str) else text
    return list(rows(io.BytesIO(data), data_format, "events", EVENT_TYPES, max_skew=300.0))


def test_ratings_dat_rows_become_rating_events():
    outcomes = read(b"1::1193::5::978300760\n"
                    b"1::661::3::978302109\r\n"
                    b"\n"
                    b"2::3068\n"
                    b"2::1357::five::978298709\n"
                    b"3::48::4::978300\xff\n", "movielens-1m")
    assert sent(outcomes) == [
        {"user_id": "1", "item_id": "1193", "event_type": "rating", "value": 5.0,
         "timestamp": 978_300_760.0},
        {"user_id": "1", "item_id": "661", "event_type": "rating", "value": 3.0,
         "timestamp": 978_302_109.0}]
    assert reasons(outcomes) == [
        "line 4: row: 2 '::'-separated fields where ratings.dat has 4 (UserID, MovieID, "
        "Rating, Timestamp)",
        "line 5: rating: 'five' is not a number",
        "line 6: row: not valid UTF-8",
    ]


def test_personalize_rows_become_events_with_their_types_values_and_context():
    outcomes = read(PERSONALIZE
                    + "u1,i1,1700000000,Purchase,19.5,i1|i2|i3,rec-7,tv\n"
                    + "u2,i2,1700000001,,,,,\n"
                    + "u3,i3,1700000000000,click,,,,\n"
                    + "u4,i4,1700000002,Watch,,,,\n"
                    + "u5,i5,soon,click,,,,\n"
                    + "u6,i6,1700000003,click,,,\n", "personalize")
    assert sent(outcomes) == [
        # "Purchase" is the configured purchase; IMPRESSION is not read; DEVICE is context.
        {"user_id": "u1", "item_id": "i1", "event_type": "purchase", "value": 19.5,
         "timestamp": 1_700_000_000.0, "recommendation_id": "rec-7",
         "context": {"DEVICE": "tv"}},
        # No EVENT_TYPE: a view, as Personalize weighs such rows alike.
        {"user_id": "u2", "item_id": "i2", "event_type": "view",
         "timestamp": 1_700_000_001.0}]
    assert reasons(outcomes) == [
        "line 4: timestamp: timestamp must be epoch seconds between 1970 and 2100 "
        "(milliseconds are a unit mistake)",
        "line 5: event_type: 'Watch' is not one of ['click', 'purchase', 'rating', 'view']",
        "line 6: TIMESTAMP: 'soon' is not a number",
        "line 7: row: 7 cells where the header has 8",
    ]


def test_a_personalize_header_in_any_order_and_case_and_its_mistakes():
    outcomes = read("timestamp,Item_Id,user_id\n1700000000,i1,u1\n", "personalize")
    assert sent(outcomes) == [{"user_id": "u1", "item_id": "i1", "event_type": "view",
                               "timestamp": 1_700_000_000.0}]
    with pytest.raises(ImportFailed, match=r"USER_ID,ITEM_ID,TIMESTAMP; this one lacks "
                                           r"\['ITEM_ID'\]"):
        read("USER_ID,TIMESTAMP\nu1,1\n", "personalize")
    with pytest.raises(ImportFailed, match=r"\['USER_ID'\] appear more than once"):
        read("USER_ID,ITEM_ID,TIMESTAMP,user_id\nu1,i1,1,u2\n", "personalize")
    with pytest.raises(ImportFailed, match="pass --format personalize"):
        read("USER_ID,ITEM_ID,TIMESTAMP\nu1,i1,1700000000\n", "csv")


def test_the_formats_are_recognised_and_offered(tmp_path):
    interactions = tmp_path / "interactions.csv"
    interactions.write_text("USER_ID,ITEM_ID,TIMESTAMP\nu1,i1,1700000000\n")
    ours = tmp_path / "events.csv"
    ours.write_text("user_id,item_id,event_type\nu1,i1,view\n")
    assert detect(interactions) == "personalize"
    assert detect(ours) == "csv"
    assert detect(tmp_path / "ratings.dat") == "movielens-1m"
    assert detect(tmp_path / "movies.dat") == "movielens-1m-movies"
    assert datasets.detect(interactions) == "personalize"
    assert datasets.detect(ours) == "csv"  # user_id, not USER_ID: streamrec's own columns
    assert datasets.detect(tmp_path / "ratings.dat") == "ratings.dat"
    assert measurements.DATA_FORMATS == datasets.FORMATS
    for command in (measurements.evaluate, measurements.tune):
        option = next(p for p in command.params if p.name == "data_format")
        assert isinstance(option.type, click.Choice)
        assert tuple(option.type.choices) == datasets.FORMATS


def ml_latest_rows() -> list[tuple[str, str, str, str]]:
    """Rows as MovieLens writes them: half stars, one user's films in no time order."""
    return [("1", "31", "2.5", "1260759144"), ("1", "1029", "3.0", "1260759179"),
            ("2", "31", "4.0", "1260759100"), ("2", "10", "5.0", "835355493"),
            ("3", "1029", "0.5", "1260759179")]


def test_evaluate_replays_the_same_events_from_each_format(tmp_path):
    """The same ratings as ratings.csv, ratings.dat and a Personalize CSV (its domains'
    capitalised "Rating") are the same events, in the same order, to the last digit."""
    plain = tmp_path / "csv"
    plain.mkdir()
    (plain / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{i},{r},{t}\n" for u, i, r, t in ml_latest_rows()))
    (tmp_path / "ratings.dat").write_text("".join(
        f"{u}::{i}::{r}::{t}\n" for u, i, r, t in ml_latest_rows()))
    (tmp_path / "interactions.csv").write_text(
        "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE\n" + "".join(
            f"{u},{i},{t},Rating,{r}\n" for u, i, r, t in ml_latest_rows()))
    settings = Settings()
    expected = list(datasets.read(plain / "ratings.csv", None, settings.weights()))
    for name in ("ratings.dat", "interactions.csv"):
        assert list(datasets.read(tmp_path / name, None, settings.weights())) == expected
        assert load(tmp_path / name, None, settings, None) == load(
            plain / "ratings.csv", None, settings, None)


def test_evaluate_names_the_first_row_it_cannot_read(tmp_path):
    weights = EventWeights({"view": 1.0, "rating": 3.0})
    dat = tmp_path / "ratings.dat"
    dat.write_text("1::2::5::978300760\n1::3::5\n")
    with pytest.raises(datasets.DatasetError, match=r"ratings.dat:2: row: 3 '::'-separated"):
        list(datasets.read(dat, None, weights))
    dat.write_bytes(b"1::2::5::978300760\n1::\xff::5::978300761\n")
    with pytest.raises(datasets.DatasetError, match=r"ratings.dat:2: row: not valid UTF-8"):
        list(datasets.read(dat, None, weights))
    interactions = tmp_path / "interactions.csv"
    interactions.write_text("USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE\nu1,i1,1700000000,Watch\n")
    with pytest.raises(datasets.DatasetError,
                       match=r"interactions.csv:2: event_type: 'Watch' is not one of .*; "
                             r"give it a weight with STREAMREC_EVENT_WEIGHTS"):
        list(datasets.read(interactions, None, weights))
    watched = EventWeights({"view": 1.0, "Watch": 2.0})
    assert [e.event_type for e in datasets.read(interactions, None, watched)] == ["Watch"]
    interactions.write_text("USER_ID,ITEM_ID,TIMESTAMP\nu1,i1,\n")
    with pytest.raises(datasets.DatasetError,
                       match=r"interactions.csv:2: timestamp: required for evaluation"):
        list(datasets.read(interactions, None, weights))
    interactions.write_text("USER_ID,TIMESTAMP\nu1,1700000000\n")
    with pytest.raises(datasets.DatasetError, match=r"interactions.csv: header: .* lacks"):
        list(datasets.read(interactions, "personalize", weights))


def test_movies_dat_beside_ratings_dat_is_the_catalog(tmp_path):
    """ml-1m writes movies.dat in Latin-1; ml-10m in UTF-8: both are read."""
    (tmp_path / "ratings.dat").write_text("1::1::5::978300760\n")
    movies = tmp_path / "movies.dat"
    movies.write_bytes("1::Toy Story (1995)::Animation|Children's|Comedy\n"
                       "73::Misérables, Les (1995)::Drama|Musical\n".encode("latin-1"))
    expected = [("1", {"item_id": "1", "categories": ["Animation", "Children's", "Comedy"],
                       "properties": {"title": "Toy Story (1995)"}}),
                ("73", {"item_id": "73", "categories": ["Drama", "Musical"],
                        "properties": {"title": "Misérables, Les (1995)"}})]
    assert catalog(tmp_path / "ratings.dat") == expected
    movies.write_bytes("1::Toy Story (1995)::Animation|Children's|Comedy\n"
                       "73::Misérables, Les (1995)::Drama|Musical\n".encode())
    assert catalog(tmp_path / "ratings.dat") == expected
    movies.write_text("1::Toy Story (1995)\n")
    with pytest.raises(ValueError, match=r"movies.dat:1: row: 2 '::'-separated fields"):
        catalog(tmp_path / "ratings.dat")


def test_movies_dat_is_imported_as_items_in_latin_1_or_utf_8():
    data = ("1::Toy Story (1995)::Animation|Children's|Comedy\n"
            "73::Misérables, Les (1995)::Drama|Musical\n").encode("latin-1")
    data += "74::Amélie (2001)::(no genres listed)\n".encode() + b"75::No genres\n"
    outcomes = list(rows(io.BytesIO(data), "movielens-1m-movies", "items", set(), 300.0))
    items = [orjson.loads(o.value) for o in outcomes if isinstance(o, Accepted)]
    assert [(i["item_id"], i["categories"], i["properties"]) for i in items] == [
        ("1", ["Animation", "Children's", "Comedy"], {"title": "Toy Story (1995)"}),
        ("73", ["Drama", "Musical"], {"title": "Misérables, Les (1995)"}),
        ("74", [], {"title": "Amélie (2001)"})]
    assert reasons(outcomes) == ["line 4: row: 2 '::'-separated fields where movies.dat has 3 "
                                 "(MovieID, Title, Genres)"]
    with pytest.raises(ImportFailed, match="loads items"):
        list(rows(io.BytesIO(data), "movielens-1m-movies", "events", set(), 300.0))


def test_evaluate_reads_the_csv_events_streamrec_import_reads(tmp_path):
    """A CSV of streamrec's own columns (``streamrec import``'s) replays the same events as
    the same lines in JSON; an RFC 3339 time is epoch seconds, as the API takes it."""
    events = tmp_path / "events.csv"
    events.write_text("user_id,item_id,event_type,timestamp,value,context.device\n"
                      "ann,tea,view,2024-01-01T00:00:00Z,,tv\n"
                      "bob,cup,rating,1704067205,4.5,\n")
    lines = tmp_path / "events.jsonl"
    lines.write_text('{"user_id": "ann", "item_id": "tea", "event_type": "view", '
                     '"timestamp": 1704067200, "context": {"device": "tv"}}\n'
                     '{"user_id": "bob", "item_id": "cup", "event_type": "rating", '
                     '"timestamp": 1704067205, "value": 4.5}\n')
    weights = Settings().weights()
    assert list(datasets.read(events, None, weights)) == list(datasets.read(lines, None,
                                                                             weights))
    events.write_text("user_id,item_id,event_type,colour\nann,tea,view,red\n")
    with pytest.raises(datasets.DatasetError, match=r"unknown column\(s\) \['colour'\]"):
        list(datasets.read(events, None, weights))
    events.write_text("user_id,item_id,event_type\nann,tea,view\n")
    with pytest.raises(datasets.DatasetError, match=r"events.csv:2: timestamp: required"):
        list(datasets.read(events, None, weights))
    odd = tmp_path / "odd.csv"
    odd.write_text("user,item\nann,tea\n")
    with pytest.raises(datasets.DatasetError, match="a CSV of streamrec events has user_id"):
        list(datasets.read(odd, None, weights))


def test_personalize_items_and_users_become_items_and_users():
    data = (b"ITEM_ID,GENRES,CATEGORY_L1,PRICE,CREATION_TIMESTAMP,YEAR,PRODUCT_DESCRIPTION\n"
            b"i1,Comedy|Drama,Drama,9.5,1700000000,1995,A film\n"
            b"i2,,,,,,\n"
            b"i3,Comedy,,cheap,,,\n")
    outcomes = list(rows(io.BytesIO(data), "personalize-items", "items", set(), 300.0))
    items = [orjson.loads(o.value) for o in outcomes if isinstance(o, Accepted)]
    assert [(i["item_id"], i["categories"], i["price"], i["created_at"], i["properties"])
            for i in items] == [
        ("i1", ["Comedy", "Drama"], 9.5, 1_700_000_000.0,
         {"YEAR": 1995.0, "PRODUCT_DESCRIPTION": "A film"}),
        ("i2", [], None, None, {})]
    assert reasons(outcomes) == ["line 4: PRICE: 'cheap' is not a number"]
    data = b"USER_ID,MEMBERSHIP,AGE\nu1,gold,42\nu2,,\n"
    outcomes = list(rows(io.BytesIO(data), "personalize-users", "users", set(), 300.0))
    users = [orjson.loads(o.value) for o in outcomes if isinstance(o, Accepted)]
    assert users == [{"user_id": "u1", "properties": {"MEMBERSHIP": "gold", "AGE": 42.0}},
                     {"user_id": "u2", "properties": {}}]
    with pytest.raises(ImportFailed, match=r"personalize-items loads items \(--kind items\)"):
        list(rows(io.BytesIO(data), "personalize-items", "events", set(), 300.0))
    with pytest.raises(ImportFailed, match=r"users CSV has USER_ID; this one lacks"):
        list(rows(io.BytesIO(b"ID,AGE\n1,2\n"), "personalize-users", "users", set(), 300.0))


def test_personalize_datasets_are_told_apart_by_their_headers(tmp_path):
    for header, expected in [("ITEM_ID,GENRES", "personalize-items"),
                             ("USER_ID,AGE", "personalize-users"),
                             ("USER_ID,ITEM_ID,TIMESTAMP", "personalize"),
                             ("item_id,categories", "csv")]:
        path = tmp_path / "data.csv"
        path.write_text(header + "\n")
        assert detect(path) == expected
