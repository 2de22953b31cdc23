"""What a learning turn costs by its size, on an older state: the wall time of one
``Engine.learn_many`` call (reads, learning, the APPLY script) for batches of 100 to 2,000
events, after ``--warm-up`` events learned in batches of 2,000. Not a test. A turn costs
about c0 + c * N: the fixed part c0 is what a turn pays however few events it takes.

It flushes the Redis it is given, so give it one of its own::

    redis-server --port 46379 --save '' --appendonly no --zset-max-listpack-entries 256 \\
        --hash-max-listpack-entries 256 --daemonize yes
    .venv/bin/python scripts/turn_sizes.py redis://127.0.0.1:46379/0 --warm-up 1000000
"""

from __future__ import annotations

import argparse
import time

import redis

# First: streamrec sets one BLAS thread before numpy loads, as every streamrec process does.
import streamrec  # noqa: F401
from recommender.base import Interaction
from streamrec.settings import Settings
from streamrec.sim.simulator import Simulation
from streamrec.wiring import Wiring

SIZES = [100, 250, 500, 1000, 2000]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url")
    parser.add_argument("--warm-up", type=int, default=1_000_000)
    parser.add_argument("--per-size", type=int, default=20_000, help="events timed per size")
    parser.add_argument("--rounds", type=int, default=2)
    arguments = parser.parse_args()
    url, warm, per_size = arguments.url, arguments.warm_up, arguments.per_size
    redis.Redis.from_url(url).flushdb()
    engine = Wiring.connect(Settings(redis_url=url, redis_prefix="turns")).engine()
    store = engine.store
    # The bench's default sizes.
    sim = Simulation(users=10000, items=10000, categories=50, seed=7)
    sizes = SIZES
    total = warm + per_size * len(sizes) * arguments.rounds
    start = time.time() - total * 0.01
    store.put_items((d["item_id"], d) for d in sim.catalog.items())
    events = [Interaction(e["user_id"], e["item_id"], start + n * 0.01, 1.0)
              for n, e in enumerate(sim.events(total, start))]
    began = time.perf_counter()
    for first in range(0, warm, 2000):
        engine.learn_many(events[first:first + 2000])
    print(f"warm-up: {warm:,} events in {time.perf_counter() - began:.0f} s", flush=True)
    at = warm
    for _ in range(arguments.rounds):
        for size in sizes:
            walls = []
            for first in range(at, at + per_size, size):
                began = time.perf_counter()
                engine.learn_many(events[first:first + size])
                walls.append(time.perf_counter() - began)
            at += per_size
            walls.sort()
            print(f"batch {size:5d}: median {1000 * walls[len(walls) // 2]:7.1f} ms per call, "
                  f"{1e6 * sum(walls) / per_size:6.1f} µs per event", flush=True)


if __name__ == "__main__":
    main()
