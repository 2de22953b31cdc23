"""The bench's verdicts (streamrec/measure/targets.py) on hand-made figures."""

from __future__ import annotations

from streamrec.measure.targets import judge


def open_loop(p99: float | None, rate: float = 1000.0, errors: dict | None = None) -> list:
    return [{"rate": rate, "errors": errors or {},
             "latency_ms": {} if p99 is None else {"p99": p99}}]


def verdicts(figures: dict, rate: float = 1000.0) -> dict[str, bool]:
    return {t.name: t.passed for t in judge(figures, "hybrid", budget_ms=10.0, rate=rate)}


def test_a_stage_that_did_not_run_is_not_judged():
    assert verdicts({"redis_memory": {"bytes_per_user": 500.0}}) == {
        "Redis per million users": True}


def test_the_two_process_run_is_judged_when_measured():
    figures = {"open_loop": {"mf": open_loop(5.0)},
               "open_loop_2_api_processes": {"mf": open_loop(12.0)}}
    assert verdicts(figures) == {
        "open loop p99 at 1,000 req/s, mf, two API processes": False,
        "shedding at 1,000 req/s, mf, two API processes": True}


def test_an_open_loop_rate_with_errors_or_no_answer_misses_and_another_rate_is_left_out():
    figures = {"open_loop": {"mf": open_loop(5.0, errors={"timeout": 3}),
                             "popular": open_loop(None), "hybrid": open_loop(1.0, rate=500.0)}}
    assert verdicts(figures) == {"open loop p99 at 1,000 req/s, mf, one API process": False,
                                 "open loop p99 at 1,000 req/s, popular, one API process": False,
                                 "shedding at 1,000 req/s, mf, popular, one API process": True}


def test_shedding_misses_when_any_request_went_unanswered_and_503s_do_not_count():
    def shedding(errors: dict) -> tuple[bool, str]:
        figures = {"open_loop": {"mf": open_loop(5.0, errors={"HTTP 503": 10}),
                                 "hybrid": open_loop(5.0, errors=errors)}}
        found = next(t for t in judge(figures, "hybrid", budget_ms=10.0, rate=1000.0)
                     if t.name.startswith("shedding"))
        return found.passed, found.figure

    assert shedding({"HTTP 503": 5}) == (
        True, "0 of 0 unanswered; 15 answered 503")
    assert shedding({"request: no answer within 5 s": 2, "request: OSError": 1})[0] is False


def test_freshness_counts_only_at_the_targets_load():
    def freshness(background: float) -> bool:
        figures = {"ingest": {"apply_per_second": 1000.0}, "freshness_ms": {"p99": 100.0},
                   "freshness_background_events_per_second": background}
        return next(passed for name, passed in verdicts(figures).items()
                    if name.startswith("freshness"))

    assert freshness(790.0) and not freshness(100.0)
