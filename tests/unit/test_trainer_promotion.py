"""The trainer's promotion rule (streams/trainer.py): a new run is judged against the
serving one on the same held-back events, the ones the serving run never trained on, not
on each run's own slice (whose Recall@10 falls as the catalogue grows)."""

from __future__ import annotations

from recommender.base import Interaction
from recommender.batch_models import TrainingData, fit, split_by_time
from streamrec.settings import Settings
from streamrec.storage.trained_runs import RunError
from streams.trainer import Champion, _verdict, train
from tests.factories import taste_groups

SETTINGS = Settings(trainer_compare_min_events=20)


def _renamed(events: list[Interaction], prefix: str) -> list[Interaction]:
    return [Interaction(f"{prefix}{e.user_id}", f"{prefix}{e.item_id}", e.timestamp, e.weight)
            for e in events]


def _fitted(events: list[Interaction], items: int | None = None):
    return fit("ease", TrainingData.of(events, SETTINGS.trainer_item_cap("ease", items)),
               SETTINGS.trainer_hyperparameters("ease"))


def test_a_first_run_on_a_small_catalogue_does_not_block_every_later_run() -> None:
    # Day one: two groups of six items (a top ten holds a group's every item). Later: eight
    # groups of thirty items, new users, in the same log.
    early = taste_groups(groups=2, users=20, items=6, per_user=4, start=1_000.0, seed=1)
    late = _renamed(taste_groups(groups=8, users=20, items=30, per_user=6, start=5_000.0,
                                 seed=2), "late-")
    _, first = train("ease", early, SETTINGS)
    champion = Champion("ease@1", max(e.timestamp for e in early), lambda: _fitted(early))
    _, second = train("ease", early + late, SETTINGS, champion=champion)
    # Each on its own slice, the first run looks far better: the old rule refused the
    # second (more than 10% below), and every run after it.
    assert second["offline"]["recall@10"] < 0.9 * first["offline"]["recall@10"], (
        first["offline"], second["offline"])
    duel = second["duel"]
    assert duel["metrics"]["events"] == duel["champion_metrics"]["events"] >= 20
    worse, said = _verdict(duel, "ease@1", SETTINGS)
    assert not worse, said
    assert duel["metrics"]["recall@10"] > duel["champion_metrics"]["recall@10"], duel
    assert "on the same" in said and "never trained on" in said


def test_a_run_worse_on_the_same_events_is_not_promoted() -> None:
    events = taste_groups(groups=4, users=30, items=20, per_user=8, seed=3)
    head, tail, cut = split_by_time(events, SETTINGS.trainer_holdout)
    # The serving run trained on the same head; the new one may rank only two items (a
    # setting gone wrong).
    champion = Champion("ease@4", cut, lambda: _fitted(head))
    _, made = train("ease", events, SETTINGS, items=2, champion=champion)
    worse, said = _verdict(made["duel"], "ease@4", SETTINGS)
    assert worse, made["duel"]
    assert said.startswith("more than 10% below ease@4"), said
    # The events it was judged on are the held-back ones after the serving run's newest.
    assert made["duel"]["from"] == cut
    assert made["duel"]["metrics"]["events"] == made["offline"]["events"]


def test_without_events_the_serving_run_never_saw_the_new_run_is_promoted() -> None:
    events = taste_groups(groups=4, users=30, items=20, per_user=8, seed=4)
    newest = max(e.timestamp for e in events)
    # The serving run saw the whole log (a cycle run again before new events came).
    champion = Champion("ease@2", newest, lambda: _fitted(events))
    _, made = train("ease", events, SETTINGS, items=2, champion=champion)
    assert made["duel"] is None
    worse, said = _verdict(made["duel"], "ease@2", SETTINGS)
    assert not worse and "not compared" in said and "MIN_EVENTS=20" in said, said
    # Too few such events to tell 10% apart: not compared either.
    few = Settings(trainer_compare_min_events=10_000)
    champion = Champion("ease@2", min(e.timestamp for e in events), lambda: _fitted(events))
    _, made = train("ease", events, few, items=2, champion=champion)
    worse, said = _verdict(made["duel"], "ease@2", few)
    assert not worse and "fewer than" in said, said


def test_a_serving_run_that_cannot_be_loaded_is_not_a_yardstick() -> None:
    events = taste_groups(groups=4, users=30, items=20, per_user=8, seed=5)

    def broken():
        raise RunError("run ease@3: its artifact does not match its digest")

    _, made = train("ease", events, SETTINGS,
                    champion=Champion("ease@3", min(e.timestamp for e in events), broken))
    worse, said = _verdict(made["duel"], "ease@3", SETTINGS)
    assert not worse and "does not match its digest" in said, said
    assert made["offline"]["recall@10"] > 0  # the new run is still scored on its slice
