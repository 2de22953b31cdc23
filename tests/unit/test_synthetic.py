"""The synthetic regimes (streamrec simulate --to-file): valid events in time order, the same
file for the same seed, and each regime shaped as its description says."""

from collections import Counter

import orjson
import pytest
from click.testing import CliRunner

from streamrec.cli import main
from streamrec.sim.simulator import REGIMES, synthetic


@pytest.mark.parametrize("regime", sorted(REGIMES))
def test_each_regime_is_a_replayable_event_log(regime):
    events = list(synthetic(regime, 3000, seed=7))
    assert len(events) == 3000
    times = [event["timestamp"] for event in events]
    assert times == sorted(times)
    assert all(event["user_id"] and event["item_id"] and event["event_type"]
               for event in events)
    assert events == list(synthetic(regime, 3000, seed=7))
    assert events != list(synthetic(regime, 3000, seed=8))


def test_the_regimes_differ_as_described():
    def share_of_top_items(regime: str, top: int = 50) -> float:
        counts = Counter(event["item_id"] for event in synthetic(regime, 20000))
        return sum(count for _, count in counts.most_common(top)) / counts.total()

    def overlap_of_first_and_last_bestsellers(regime: str, top: int = 20) -> float:
        events = list(synthetic(regime, 20000))
        first, last = (Counter(event["item_id"] for event in part)
                       for part in (events[:5000], events[-5000:]))
        return len({item for item, _ in first.most_common(top)}
                   & {item for item, _ in last.most_common(top)}) / top

    # a long-tail shop spreads its events: its 50 best sellers take the smallest share
    assert share_of_top_items("longtail") < min(share_of_top_items(regime)
                                                for regime in ("stable", "trending"))
    # news: what is read most changes over the run; stable tastes keep their bestsellers
    assert (overlap_of_first_and_last_bestsellers("trending")
            < overlap_of_first_and_last_bestsellers("stable"))


def test_simulate_writes_a_file_that_evaluate_reads(tmp_path):
    path = tmp_path / "news.jsonl"
    result = CliRunner().invoke(main, ["simulate", "--to-file", str(path), "--events", "500",
                                       "--regime", "trending"])
    assert result.exit_code == 0, result.output
    lines = path.read_bytes().splitlines()
    assert [orjson.loads(line) for line in lines] == list(synthetic("trending", 500))
    refused = CliRunner().invoke(main, ["simulate", "--to-file", str(path)])
    assert refused.exit_code != 0 and "--to-file needs --events" in refused.output
