"""Learning ahead (streamrec.measure.ahead): a replay whose engine learns in a forked
process scores exactly as one that learns itself, and ends with the same state; a learning
process that fails or falls out of step is an error that says so, never a hang."""

from __future__ import annotations

import random

import numpy as np
import pytest

from recommender.base import MODELS, Interaction
from recommender.evaluation import MAX_BATCH, prequential
from streamrec.measure import ahead as ahead_module
from streamrec.measure.ahead import learning_ahead
from streamrec.measure.evaluate import build
from streamrec.settings import Settings


def _events(n: int = 3000, seed: int = 7) -> list[Interaction]:
    """Users who favour a band of items, several events of a user at one time (one batch
    of many), dislikes (weight 0) and event types: every kind of update."""
    rng = random.Random(seed)
    events, now = [], 1_000_000.0
    for _ in range(n // 3):
        now += rng.choice([0.0, 0.4, 3.0, 60.0, 3600.0])
        user = rng.randrange(120)
        for _ in range(3):
            item = (user % 6) * 15 + int(rng.expovariate(0.2)) % 40
            weight = rng.choice([1.0, 1.0, 1.0, 0.0, 2.0])
            events.append(Interaction(f"u{user}", f"i{item}", now, weight,
                                      rng.choice([None, "view", "purchase"])))
    return events


def _documents() -> list[tuple[str, dict]]:
    return [(f"i{n}", {"item_id": f"i{n}", "categories": [f"c{n % 4}"]}) for n in range(100)]


def _replay(events, ahead: bool):
    settings = Settings()
    models = build(list(MODELS), [], settings, retrain_every=86400.0, documents=_documents())
    with learning_ahead(models, events, 1.0, MAX_BATCH, enabled=ahead) as used:
        report = prequential(events, models, k=10, batch_seconds=1.0, max_batch=MAX_BATCH)
    assert used.used is ahead and (used.cpu_seconds > 0) is ahead
    engine = next(iter(models.values())).group.engine
    return report, engine.store


def _scores(report) -> dict:
    return {name: {key: value for key, value in totals.items() if "seconds" not in key}
            for name, totals in report.totals.items()}


def test_learning_ahead_scores_and_stores_exactly_as_learning_in_process(monkeypatch):
    monkeypatch.setattr(ahead_module.os, "cpu_count", lambda: 2)  # runs ahead on one core too
    events = _events()
    serial, serial_store = _replay(events, ahead=False)
    ahead, ahead_store = _replay(events, ahead=True)
    assert _scores(ahead) == _scores(serial)
    assert ahead.over_time == serial.over_time
    assert serial.totals["cooccurrence"]["recall"] > 0
    users = sorted({event.user_id for event in events})
    items = sorted({event.item_id for event in events})
    assert ahead_store.histories(users, 500) == serial_store.histories(users, 500)
    assert ahead_store.popular(100).scores == serial_store.popular(100).scores
    for category in ("c0", "c3"):
        assert ahead_store.popular(50, category).scores == \
            serial_store.popular(50, category).scores
    assert ahead_store.neighbours(items, 100) == serial_store.neighbours(items, 100)
    assert ahead_store.blend_tally() == serial_store.blend_tally()
    assert sum(serial_store.blend_tally().values()) > 0  # the tally's trials were made
    for read in ("user_factors", "item_factors"):
        keys = users if read == "user_factors" else items
        mine, theirs = getattr(ahead_store, read)(keys), getattr(serial_store, read)(keys)
        assert mine.keys() == theirs.keys() and mine
        assert all(np.array_equal(mine[key], theirs[key]) for key in mine)
    assert ahead_store.interaction_types("u3") == serial_store.interaction_types("u3")


def test_a_learning_process_that_fails_is_an_error_naming_why(monkeypatch):
    events = _events(600)
    settings = Settings()
    models = build(list(MODELS), [], settings, retrain_every=86400.0)
    engine = next(iter(models.values())).group.engine
    calls = []

    def failing(interactions, **options):
        calls.append(1)
        if len(calls) > 40:  # in the learning process only: this one never learns
            raise ValueError("a broken model")
        return learn(interactions, **options)

    learn = engine.learn_many
    monkeypatch.setattr(engine, "learn_many", failing)
    with pytest.raises(RuntimeError, match="learning process failed(.|\n)*a broken model"), \
            learning_ahead(models, events, 1.0, MAX_BATCH):
        prequential(events, models, k=10, batch_seconds=1.0, max_batch=MAX_BATCH)


def test_batches_out_of_step_are_an_error():
    events = _events(600)
    models = build(list(MODELS), [], Settings(), retrain_every=86400.0)
    # The learner batches by 1 s, the replay by 3600 s: the first update is too small.
    with pytest.raises(RuntimeError, match="out of step"), \
            learning_ahead(models, events, 1.0, MAX_BATCH):
        prequential(events, models, k=10, batch_seconds=3600.0, max_batch=MAX_BATCH)


def test_nothing_runs_ahead_without_an_engine_group_alone(monkeypatch):
    settings = Settings()
    models = build(list(MODELS), ["river-funkmf"], settings, retrain_every=86400.0)
    assert ahead_module.usable(models) is not None  # baselines learn in this process
    assert ahead_module.usable({"river-funkmf": models["river-funkmf"]}) is None
    monkeypatch.setattr(ahead_module.os, "cpu_count", lambda: 1)
    assert ahead_module.usable(models) is None
