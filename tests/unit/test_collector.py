"""A role settles its garbage collector once it is built (streamrec/collector.py): checked
in a process of its own, since it changes the collector of the process it runs in."""

from __future__ import annotations

import subprocess
import sys

import orjson

SCRIPT = """
import gc, orjson
from streamrec.collector import THRESHOLDS, settle
built = [{"n": n} for n in range(1000)]  # what a process built before serving
before = gc.get_threshold()
settle()
print(orjson.dumps({"before": before, "after": gc.get_threshold(), "wanted": THRESHOLDS,
                    "frozen": gc.get_freeze_count(), "enabled": gc.isenabled()}).decode())
"""


def test_what_was_built_is_frozen_and_the_young_generation_collected_less_often():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          check=True, timeout=60)
    found = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert found["after"] == list(found["wanted"]) != found["before"]
    assert found["frozen"] >= 1000 and found["enabled"]

