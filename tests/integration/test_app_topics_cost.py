"""``scripts/app_topics_cost.py`` measures both topic layouts on brokers of its own and prints
the table docs/apps.md quotes (tiny sizes: this checks that the measurement works and that
every event arrives once, not how fast anything is)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "scripts" / "app_topics_cost.py"
SMALL = ["--apps", "2", "--events", "2000", "--rounds", "1", "--latency-events", "200",
         "--rate", "400", "--backlog", "1000", "--idle", "0.5", "--metadata-max-age", "1"]


def test_both_layouts_are_measured_and_tabled():
    done = subprocess.run([sys.executable, str(SCRIPT), *SMALL], capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {}
    for line in done.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] in ("topic-per-app", "shared") and len(cells) == 15:
            rows[cells[0]] = cells
    assert set(rows) == {"topic-per-app", "shared"}, done.stdout
    # apps, topics, partitions: five topics of 4 partitions per app, or five in all.
    assert rows["topic-per-app"][1:4] == ["2", "10", "40"]
    assert rows["shared"][1:4] == ["2", "5", "20"]
    for cells in rows.values():
        (setup, rss, fds, join, pickup, rate, p50, p99, ack_p99, behind,
         drained) = map(float, cells[4:])
        assert rss > 0 and fds > 0 and join > 0 and rate > 0 and 0 < p50 <= p99
        assert 0 < ack_p99
        assert 0 < behind and 0 < drained
    # A pattern picks a new app's topics up at the consumer's next metadata refresh; the
    # shared topics need nothing new.
    assert float(rows["topic-per-app"][8]) <= 1 + 30
    assert "metadata_max_age_ms (1000 here)" in done.stdout
