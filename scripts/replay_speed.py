"""Replay speed of ``streamrec evaluate``: the same replay, its CPU time alone.

Builds what ``streamrec evaluate PATH --baselines ""`` builds (the shipped settings, the
catalog beside a MovieLens ``ratings.csv``), replays the first ``--limit`` events through
``recommender.evaluation.prequential`` and prints the replay's CPU and wall seconds, its
events/s, each model's totals, and a digest of them: two checkouts that replay alike print
the same digest. To compare a change with ``main`` under the same load, run both at once,
``main``'s from an export of it (``PYTHONPATH`` first: this checkout's editable install
would otherwise be imported, whatever the working directory)::

    mkdir -p /tmp/main-export && git archive main | tar -x -C /tmp/main-export
    .venv/bin/python scripts/replay_speed.py ../shared/data/ml-latest-small/ratings.csv \\
        --limit 20000 &
    PYTHONPATH=/tmp/main-export .venv/bin/python /tmp/main-export/scripts/replay_speed.py \\
        ../shared/data/ml-latest-small/ratings.csv --limit 20000

CPU time is the fair figure on a shared machine: the wall clock stretches with the load.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

# First: streamrec sets one BLAS thread before numpy loads, as every streamrec process
# does (numpy's default pool would spin on the second core and count in the CPU figures).
import streamrec  # noqa: F401
from recommender.base import MODELS
from recommender.evaluation import MAX_BATCH, prequential
from streamrec.measure.ahead import learning_ahead
from streamrec.measure.evaluate import build, catalog, load, settle
from streamrec.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--limit", type=int, default=None, help="the first N events")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch-seconds", type=float, default=1.0)
    parser.add_argument("--serial", action="store_true",
                        help="learn in the replay's own process (no learning ahead)")
    args = parser.parse_args()
    settings = Settings()
    events = load(args.path, None, settings, args.limit)
    if not events:
        parser.error(f"{args.path}: no events")
    models = build(list(MODELS), [], settings, retrain_every=86400.0,
                   documents=catalog(args.path))
    settle()
    cpu, wall = time.process_time(), time.perf_counter()
    with learning_ahead(models, events, args.batch_seconds, MAX_BATCH,
                        enabled=not args.serial) as ahead:
        report = prequential(events, models, k=args.k, batch_seconds=args.batch_seconds,
                             max_batch=MAX_BATCH)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    learner = (f" + the learning process's {ahead.cpu_seconds:.1f} s"
               if ahead.used else " (learning in this process)")
    total = cpu + ahead.cpu_seconds
    print(f"{len(events):,} events, {report.batches:,} batches: wall {wall:.1f} s "
          f"({len(events) / wall:,.0f} events/s); CPU {cpu:.1f} s{learner} = {total:.1f} s "
          f"({len(events) / total:,.0f} events/s of CPU)")
    # The timings differ between runs; every other total must not (time_shared_by, how
    # many models the timings served, is left out too: digests from before it still match).
    totals = {name: {key: value for key, value in sorted(total.items())
                     if not key.startswith("seconds") and key != "time_shared_by"}
              for name, total in sorted(report.totals.items())}
    for name, total in totals.items():
        print(f"{name}: Recall@{args.k} {total['recall']:.4f}, NDCG@{args.k} "
              f"{total['ndcg']:.4f}, coverage {total['coverage']:.3f}")
    digest = hashlib.sha256(json.dumps(totals).encode()).hexdigest()[:16]
    print(f"totals digest: {digest}")


if __name__ == "__main__":
    main()
