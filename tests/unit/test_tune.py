"""streamrec tune: the search (current settings first, one setting at a time from the best),
what is kept, the split, bad files named by line and field, and a quick run end to end."""

from __future__ import annotations

import orjson
import pytest
from click.testing import CliRunner

from recommender.base import Interaction
from streamrec.cli import main
from streamrec.measure import tune
from streamrec.sim.simulator import synthetic

CURRENT = {"decay_half_life_seconds": 7 * 86400.0, "cooccurrence_window_seconds": 7 * 86400.0,
           "cooccurrence_window": 20, "popularity_half_life_seconds": 86400.0}


def _trial(learning: dict, recall: float) -> tune.Trial:
    return tune.Trial(dict(learning), {"hybrid": recall, "mf": recall / 2}, 1.0)


def test_the_search_starts_from_the_current_settings_and_sweeps_from_the_best():
    trials: list[tune.Trial] = []
    search = tune.candidates(CURRENT, trials)
    assert next(search) == CURRENT
    trials.append(_trial(CURRENT, 0.1))
    half_lives = []
    for _ in range(5):
        setting = next(search)
        half_lives.append(setting["decay_half_life_seconds"])
        assert setting == {**CURRENT, "decay_half_life_seconds": half_lives[-1]}
        # the longer the half-life, the better here: the next sweep holds the longest
        trials.append(_trial(setting, setting["decay_half_life_seconds"] / 1e9))
    # one setting at a time, each value once (7 days was the current one)
    assert half_lives == [3600.0, 86400.0, 30 * 86400.0, 180 * 86400.0, 3650 * 86400.0]
    assert next(search) == {**CURRENT, "decay_half_life_seconds": 3650 * 86400.0,
                            "cooccurrence_window_seconds": 3600.0}


def test_every_combination_comes_once():
    tried = list(tune.candidates(CURRENT, []))
    assert len({tuple(sorted(setting.items())) for setting in tried}) == len(tried)
    assert len(tried) == tune.LEARNING_GRID  # the current settings lie on the grid


def test_the_current_settings_are_always_kept():
    trials = [_trial(CURRENT, 0.01)] + [_trial({**CURRENT, "cooccurrence_window": n}, n / 100)
                                        for n in (10, 50, 30, 40)]
    assert [trial.learning["cooccurrence_window"] for trial in tune.keep(trials, 2)] == [
        20, 50, 40]


def test_split_keeps_events_of_one_second_together_and_refuses_bad_fractions():
    events = [Interaction("u", "i", float(t), 1.0) for t in (1, 2, 3, 3, 3, 4, 5, 6, 7, 8)]
    prefix, rest = tune.split(events, 0.3)
    assert len(prefix) == 5 and len(rest) == 5
    with pytest.raises(ValueError, match="fraction"):
        tune.split(events, 1.0)


def test_best_settings_prefer_the_hybrid_on_a_tie():
    trial = tune.Trial(dict(CURRENT), {"cooccurrence": 0.2, "hybrid mf=0 popular=0": 0.2,
                                       "hybrid": 0.1}, 1.0, rest={"cooccurrence": 0.3})
    result = tune.Result([trial], 70, 30, 10, 1.0, {"hybrid_mf": 1.0,
                                                    "hybrid_cooccurrence": 1.0,
                                                    "hybrid_popular": 0.2,
                                                    "hybrid_rank_constant": 60.0})
    chosen = tune.best_settings(result)
    assert chosen["STREAMREC_DEFAULT_MODEL"] == "hybrid"
    assert chosen["STREAMREC_HYBRID_MF"] == "0"
    assert chosen["STREAMREC_DECAY_HALF_LIFE_SECONDS"] == "604800"


@pytest.mark.parametrize("content, message", [
    ("userId,movieId,rating,timestamp\n1,2,4.0,100\n1,3,four,101\n", r"bad.csv:3: rating"),
    ("userId,movieId,rating,timestamp\n1,2,4.0,100\n1,3,4.0,nan\n", r"bad.csv:3: timestamp"),
    ("userId,movieId,rating,timestamp\n1,2,4.0\n", r"bad.csv:2: expected"),
    ("userId,movieId,timestamp\n1,2,100\n", r"bad.csv: header lacks \['rating'\]"),
])
def test_a_bad_file_is_refused_naming_its_line_and_field(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    result = CliRunner().invoke(main, ["tune", str(path), "--budget", "1"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert message.replace("\\", "") in result.output


def test_a_bad_jsonl_line_is_named(tmp_path):
    path = tmp_path / "events.jsonl"
    good = {"user_id": "u", "item_id": "i", "event_type": "view", "timestamp": 1.7e9}
    path.write_bytes(orjson.dumps(good) + b"\n" + orjson.dumps({**good, "event_type": 3}))
    result = CliRunner().invoke(main, ["tune", str(path)])
    assert result.exit_code == 1 and "events.jsonl:2: event_type" in result.output


def test_tune_end_to_end_on_a_small_synthetic_file(tmp_path):
    path = tmp_path / "sessions.jsonl"
    path.write_bytes(b"".join(orjson.dumps(event) + b"\n"
                              for event in synthetic("sessions", 1500, seed=3)))
    result = CliRunner().invoke(main, ["tune", str(path), "--budget", "4", "--top", "1"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("replayed over the first 1,050 events" in line
               for line in lines)
    assert any("hybrid (current)" in line for line in lines)
    settings = [line for line in lines if line.startswith("STREAMREC_")]
    names = {line.split("=")[0] for line in settings}
    assert {"STREAMREC_DECAY_HALF_LIFE_SECONDS", "STREAMREC_COOCCURRENCE_WINDOW_SECONDS",
            "STREAMREC_COOCCURRENCE_WINDOW", "STREAMREC_DEFAULT_MODEL"} <= names


SMALL_GRID = {"decay_half_life_seconds": (86400.0, 7 * 86400.0),
              "cooccurrence_window_seconds": (7 * 86400.0,),
              "cooccurrence_window": (10, 20),
              "popularity_half_life_seconds": (86400.0,)}


def _sessions(tmp_path, settings):
    path = tmp_path / "sessions.jsonl"
    path.write_bytes(b"".join(orjson.dumps(event) + b"\n"
                              for event in synthetic("sessions", 1200, seed=5)))
    return tune.read(path, None, settings)


def test_settings_replayed_in_processes_score_as_in_one(tmp_path, monkeypatch):
    # A grid small enough to finish within the budget whatever the machine's speed: both
    # runs replay every setting, so they must agree on each one's figures.
    from streamrec.settings import Settings

    monkeypatch.setattr(tune, "LEARNING", SMALL_GRID)
    settings = Settings(decay_half_life_seconds=7 * 86400.0,
                        cooccurrence_window_seconds=7 * 86400.0, cooccurrence_window=20,
                        popularity_half_life_seconds=86400.0)
    events, documents = _sessions(tmp_path, settings)
    seen: list[int] = []
    results = {jobs: tune.tune(events, documents, settings, budget=600.0, top=2, jobs=jobs,
                               progress=seen.append)
               for jobs in (1, 2)}

    def figures(result):
        return {tuple(sorted(trial.learning.items())): (trial.prefix, trial.rest)
                for trial in result.trials}

    assert len(results[1].trials) == len(results[2].trials) == 4
    assert figures(results[1]) == figures(results[2])
    assert results[2].trials[0].learning == results[1].trials[0].learning  # current first
    assert tune.best_settings(results[1]) == tune.best_settings(results[2])
    # The processes told how far they got: every event of every replay, once.
    assert sum(seen) == 2 * (4 * results[1].prefix_events + 3 * results[1].rest_events)


def test_a_failing_replay_process_is_an_error_not_a_hang(tmp_path, monkeypatch):
    from streamrec.settings import Settings

    settings = Settings()
    events, documents = _sessions(tmp_path, settings)

    def broken(*args, **kwargs):
        raise ValueError("the replay broke")

    monkeypatch.setattr(tune, "_recall", broken)  # forked after: the processes have it too
    with pytest.raises(RuntimeError, match="the replay broke"):
        tune.tune(events, documents, settings, budget=60.0, jobs=2)
    with pytest.raises(ValueError, match="jobs"):
        tune.tune(events, documents, settings, budget=60.0, jobs=0)
