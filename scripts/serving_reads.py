"""Redis round trips, commands and CPU per request of ``Engine.recommend``, per model: what
one request costs the API process apart from HTTP. Not a test; run ``fill`` once, then
``measure`` from each checkout being compared (alternating, on the same state).

    .venv/bin/python scripts/serving_reads.py fill redis://127.0.0.1:46379/0
    .venv/bin/python scripts/serving_reads.py measure redis://127.0.0.1:46379/0 after
    # the code before, from a copy of its commit (its modules ahead of this worktree's
    # editable install, e.g. with a sitecustomize that drops the editable finder):
    PYTHONPATH=/tmp/base:/tmp/drop-editable .venv/bin/python scripts/serving_reads.py ...

``fill`` learns a simulated stream (``--events``, 20,000 by default, over 20,000 items,
5,000 users, one view of every item first) and withdraws 300 items, 100 of them among
the 400 most popular.
Round trips are counted as redis-py's writes (one per command or pipeline);
``popular_reads`` counts the popular-list reads of their own (``store.popular``) per request,
``requests_reading_popular`` the share of requests making at least one.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import redis
import redis.connection

# First: streamrec sets one BLAS thread before numpy loads, as every streamrec process
# does (numpy's default pool would spin on the second core and count in the CPU figures).
import streamrec  # noqa: F401
from recommender.base import Interaction
from streamrec.settings import Settings
from streamrec.sim.simulator import Simulation
from streamrec.wiring import Wiring

MODELS = ["popular", "cooccurrence", "mf", "hybrid"]
WRITES = [0]
_send = redis.connection.AbstractConnection.send_packed_command


def _counted(self, *args, **kwargs):
    WRITES[0] += 1
    return _send(self, *args, **kwargs)


def fill(url: str, prefix: str, events: int = 20000, items: int = 20000, users: int = 5000) -> None:
    engine = Wiring.connect(Settings(redis_url=url, redis_prefix=prefix)).engine()
    simulation = Simulation(users=users, items=items, categories=50, seed=7)
    start = time.time() - events
    cover = [Interaction("cover", item, start - 1, 1.0) for item in simulation.catalog.item_ids]
    events = [Interaction(e["user_id"], e["item_id"], start + n, 1.0)
              for n, e in enumerate(simulation.events(events, start))]
    store = engine.store
    store.put_items((document["item_id"], document) for document in simulation.catalog.items())
    for batch in (cover, events):
        for chunk in range(0, len(batch), 500):
            engine.learn_many(batch[chunk:chunk + 500])
    rng = random.Random(3)
    items = simulation.catalog.item_ids
    gone = rng.sample([item for item, _ in store.popular(400).scores], 100)
    gone += rng.sample(items, 100)
    later = rng.sample(items, 100)
    store.put_items([(i, {"item_id": i, "available": False}) for i in gone]
                    + [(i, {"item_id": i, "expires_at": time.time() + 86400}) for i in later])


def measure(url: str, prefix: str, label: str, calls: int, users: int = 5000,
            models: list[str] = MODELS) -> None:
    redis.connection.AbstractConnection.send_packed_command = _counted
    engine = Wiring.connect(Settings(redis_url=url, redis_prefix=prefix)).engine()
    engine.refresh()
    store, popular_reads = engine.store, [0]
    read_popular = store.popular

    def counted_popular(*args, **kwargs):
        popular_reads[0] += 1
        return read_popular(*args, **kwargs)

    store.popular = counted_popular
    client = redis.Redis.from_url(url)
    rng = random.Random(5)
    for model in models:
        asked = [f"user-{rng.randrange(users)}" for _ in range(calls)]
        for user in asked[:50]:  # warm: the copy, the factor index
            engine.recommend(user, 10, time.time(), model)
        client.config_resetstat()
        WRITES[0] = popular_reads[0] = 0
        cpu, wall = time.process_time(), time.perf_counter()
        reading = 0  # requests that read popularity on their own at least once
        for user in asked:
            before = popular_reads[0]
            engine.recommend(user, 10, time.time(), model)
            reading += popular_reads[0] > before
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        writes = WRITES[0]
        stats = {name.removeprefix("cmdstat_"): row["calls"]
                 for name, row in client.info("commandstats").items()}
        print(json.dumps({
            "code": label, "model": model, "cpu_ms": round(1000 * cpu / calls, 3),
            "wall_ms": round(1000 * wall / calls, 3), "round_trips": round(writes / calls, 3),
            "popular_reads": round(popular_reads[0] / calls, 3),
            "requests_reading_popular": round(reading / calls, 3),
            "commands": {name: round(count / calls, 3) for name, count in sorted(stats.items())
                         if not name.startswith(("config", "info"))}}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["fill", "measure"])
    parser.add_argument("url")
    parser.add_argument("label", nargs="?", default="this checkout")
    parser.add_argument("--prefix", default="reads")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--events", type=int, default=20000,
                        help="fill: how many simulated events to learn (default 20,000)")
    parser.add_argument("--items", type=int, default=20000,
                        help="fill: the catalogue's size (default 20,000; the bench's is 100,000)")
    parser.add_argument("--users", type=int, default=5000,
                        help="fill and measure: how many simulated users (default 5,000)")
    parser.add_argument("--models", default=",".join(MODELS),
                        help="measure: which models, comma-separated (default all four)")
    arguments = parser.parse_args()
    if arguments.action == "fill":
        fill(arguments.url, arguments.prefix, arguments.events, arguments.items, arguments.users)
    else:
        measure(arguments.url, arguments.prefix, arguments.label, arguments.calls,
                arguments.users, arguments.models.split(","))


if __name__ == "__main__":
    main()
