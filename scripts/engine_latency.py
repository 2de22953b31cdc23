"""What ``Engine.recommend`` costs a serving process per request, and its latency tail. Not
a test.

Asks ``--requests`` lists (``k`` 10) of random users of a ``scripts/serving_reads.py fill``
state, one at a time, per model, after ``--warm`` untimed ones, and prints the process's
CPU per request and the wall-time percentiles. With ``--keep-reads`` the engine keeps its
requests' reads as an offline replay's does (``Engine(keep_reads=True)``): 256 of them
are freed at once, which shows in the tail (docs/benchmarks.md, 2026-12-05, night, later).

    .venv/bin/python scripts/engine_latency.py redis://127.0.0.1:46379/0 --models hybrid
    .venv/bin/python scripts/engine_latency.py redis://127.0.0.1:46379/0 --models hybrid \\
        --keep-reads
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

from streamrec.settings import Settings
from streamrec.wiring import Wiring


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--prefix", default="reads")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--models", default="popular,cooccurrence,mf,hybrid")
    parser.add_argument("--requests", type=int, default=3700)
    parser.add_argument("--warm", type=int, default=300)
    parser.add_argument("--keep-reads", action="store_true")
    arguments = parser.parse_args()
    engine = Wiring.connect(Settings(redis_url=arguments.url,
                                     redis_prefix=arguments.prefix)).engine()
    engine.keep_reads = arguments.keep_reads
    rng = random.Random(1)
    users = [f"user-{rng.randrange(arguments.users)}"
             for _ in range(arguments.warm + arguments.requests)]
    for model in arguments.models.split(","):
        for user in users[:arguments.warm]:
            engine.recommend(user, 10, time.time(), model)
        waited = []
        started = time.process_time()
        for user in users[arguments.warm:]:
            at = time.perf_counter()
            engine.recommend(user, 10, time.time(), model)
            waited.append(time.perf_counter() - at)
        cpu = (time.process_time() - started) / len(waited) * 1e6
        p50, p99, p999 = np.percentile(np.array(waited) * 1e3, [50, 99, 99.9])
        print(f"{model}: {cpu:,.0f} us of CPU per request; wall ms p50 {p50:.2f}, "
              f"p99 {p99:.2f}, p99.9 {p999:.2f}, max {max(waited) * 1e3:.2f}"
              f"{' (reads kept)' if arguments.keep_reads else ''}")


if __name__ == "__main__":
    main()
