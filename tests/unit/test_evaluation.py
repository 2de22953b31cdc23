"""Prequential evaluation: hand-counted metrics, no peeking, readers, the CLI end to end."""

from __future__ import annotations

import math

import orjson
import pytest
from click.testing import CliRunner

from recommender.base import Interaction
from recommender.evaluation import Tally, prequential
from streamrec.cli import main
from streamrec.data.datasets import DatasetError, read
from streamrec.settings import Settings


def test_tally_matches_hand_counts():
    tally = Tally()
    tally.add(["a", "b", "c"], "b", known=True)  # hit at rank 1
    tally.add(["a", "b", "c"], "z", known=False)  # miss
    summary = tally.summary(catalog_size=6)
    assert summary["recall"] == 0.5
    assert summary["ndcg"] == pytest.approx((1 / math.log2(3)) / 2)
    assert summary["mrr"] == pytest.approx(0.25)
    assert summary["recall_known_users"] == 1.0
    assert summary["coverage"] == 0.5


class Parrot:
    """Recommends exactly what it has learned: any peeking would score hits."""

    def __init__(self):
        self.learned = []

    def learn_many(self, interactions):
        self.learned += [event.item_id for event in interactions]

    def recommend(self, user_id, k, now):
        return list(reversed(self.learned))[:k]


def test_no_model_sees_an_event_before_it_is_scored():
    events = [Interaction("u", f"item{n}", float(n * 10), 1.0) for n in range(20)]
    report = prequential(events, {"parrot": Parrot()}, k=50, batch_seconds=5.0)
    assert report.totals["parrot"]["recall"] == 0.0  # every item is new when scored
    repeated = events + [Interaction("v", "item3", 500.0, 1.0)]
    report = prequential(repeated, {"parrot": Parrot()}, k=50, batch_seconds=5.0)
    assert report.totals["parrot"]["events"] == 21
    assert report.totals["parrot"]["recall"] == pytest.approx(1 / 21)


def test_batches_score_everything_in_a_batch_before_learning_it():
    events = [Interaction("u", "x", 0.0, 1.0), Interaction("u", "x", 0.5, 1.0)]
    report = prequential(events, {"parrot": Parrot()}, k=5, batch_seconds=1.0)
    assert report.totals["parrot"]["recall"] == 0.0  # same batch: not learned yet
    report = prequential(events, {"parrot": Parrot()}, k=5, batch_seconds=0.1)
    assert report.totals["parrot"]["recall"] == 0.5


def test_readers(tmp_path):
    weights = Settings().weights()
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("userId,movieId,rating,timestamp\n1,10,4.0,100\n2,10,2.0,90\n")
    assert [(e.user_id, e.value) for e in read(ratings, None, weights)] == [("1", 4.0),
                                                                            ("2", 2.0)]
    udata = tmp_path / "u.data"
    udata.write_text("1\t10\t5\t100\n")
    assert next(read(udata, None, weights)).timestamp == 100.0
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text('{"user_id": "a", "item_id": "b", "event_type": "view", "timestamp": 1}\n'
                     '{"user_id": "a", "item_id": "b", "event_type": "fly", "timestamp": 2}\n')
    with pytest.raises(DatasetError, match=r"events.jsonl:2: event_type"):
        list(read(jsonl, None, weights))
    broken = tmp_path / "bad.csv"
    broken.write_text("userId,movieId,rating,timestamp\n1,10,four,100\n")
    with pytest.raises(DatasetError, match=r"bad.csv:2"):
        list(read(broken, None, weights))


def test_evaluate_cli_writes_table_json_and_plot(tmp_path):
    rows = ["userId,movieId,rating,timestamp"]
    for user in range(30):
        for step in range(12):
            rows.append(f"{user},{(user % 3) * 20 + step},{4 + step % 2}.0,"
                        f"{1_000_000 + user * 1000 + step * 60}")
    data = tmp_path / "ratings.csv"
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["evaluate", str(data), "--output-dir", str(out),
                                       "--retrain-every", "3600"])
    assert result.exit_code == 0, result.output
    totals = orjson.loads((out / "evaluation.json").read_bytes())["totals"]
    assert set(totals) == {"popular", "cooccurrence", "mf", "hybrid", "ease-daily",
                           "river-funkmf"}
    assert totals["cooccurrence"]["recall"] > totals["popular"]["recall"]
    assert "| hybrid |" in (out / "evaluation.md").read_text()
    # The four streaming models are one engine: each shows its seconds, shared by four.
    streaming = [totals[name] for name in ("popular", "cooccurrence", "mf", "hybrid")]
    assert {t["time_shared_by"] for t in streaming} == {4}
    assert len({(t["seconds_recommending"], t["seconds_learning"]) for t in streaming}) == 1
    assert totals["ease-daily"]["time_shared_by"] == 1
    assert " of 4 |" in (out / "evaluation.md").read_text()
    assert "events/s of CPU" in result.output
    assert (out / "evaluation.png").read_bytes().startswith(b"\x89PNG")
    bad = CliRunner().invoke(main, ["evaluate", str(data), "--models", "magic"])
    assert bad.exit_code != 0 and "magic" in bad.output


class LastItem:
    """Recommends the item learned last: hits exactly when an item repeats next."""

    def __init__(self):
        self.last = []

    def learn_many(self, interactions):
        self.last = [interactions[-1].item_id]

    def recommend(self, user_id, k, now):
        return self.last


def test_cold_start_slices_count_users_and_items_first_events():
    # One event a batch (10 s apart, 1 s batches). Hits: the 2nd and 4th events ("x" again,
    # "y" again); before each, its user and its item had one event: cold at N=2.
    events = [Interaction(user, item, 10.0 * n, 1.0) for n, (user, item) in enumerate([
        ("ann", "x"), ("ann", "x"), ("bob", "y"), ("bob", "y"), ("bob", "z")])]
    report = prequential(events, {"last": LastItem()}, k=1, cold_start=2)
    totals = report.totals["last"]
    assert (totals["events"], totals["recall"]) == (5, 2 / 5)
    # cold users: ann's two events and bob's first two (his third is warm): both hits among
    assert (totals["events_cold_users"], totals["recall_cold_users"]) == (4, 0.5)
    # cold items: x twice, y twice, z once: all 5 events had an item with < 2 events
    assert (totals["events_cold_items"], totals["recall_cold_items"]) == (5, 2 / 5)
