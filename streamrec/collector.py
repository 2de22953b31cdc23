"""The garbage collector of a long-running role, settled once the role is built.

A role builds most of what it keeps before it serves: modules, its app, clients, caches.
Python's collector keeps scanning all of that in its older generations, and with the
default thresholds it collects the young one every 700 net allocations. The API, the
worker, its learning process and the do-nothing agent the worker is compared with each
call :func:`settle` once they are built, in their own processes. Nothing calls it in a
process that is not a role's (a test's client, a script).

Measured (docs/benchmarks.md, 2026-12-05): at 1,000 req/s over two API processes, p99
was 21.8-113 ms for popular and 7.4-22.5 ms for mf before. After, it was 6.6-8.5 ms for
popular (one run of five at 68.8) and 5.2-6.7 ms for mf. At the issue-size ingest the
worker went from 61-62% of the do-nothing agent to 64-65%, with both settled.
"""

from __future__ import annotations

import gc

# The young generation collected every 20,000 net allocations instead of 700; the older
# ones as rarely, relative to it, as measured.
THRESHOLDS = (20_000, 50, 100)


def settle() -> None:
    """Collect once, move every object that survives out of the collector's reach (it
    lives as long as the process), and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
