"""CPU time of ``Engine.learn_many`` per event, by batch size, on the in-memory store.

The worker's learn path without Kafka and Redis: simulated events (the bench's catalog
shape) are learned in batches of ``--warm`` events first, so the state holds histories,
neighbours and factors; then the next ``--events`` events are learned in batches of each
size asked for, each from the same warmed state (a fresh engine replays the warm-up), and
the CPU time per event is printed with a digest of the state each leaves: two checkouts
that learn alike print the same digests. To compare a change with ``main`` under the same
load, alternate the two::

    .venv/bin/python scripts/learn_speed.py --sizes 1 10 500

CPU time is the fair figure on a shared machine: the wall clock stretches with the load.
"""

from __future__ import annotations

import argparse
import hashlib
import time

# First: streamrec sets one BLAS thread before numpy loads, as every streamrec process
# does (numpy's default pool would spin on the second core and count in the CPU figures).
import streamrec  # noqa: F401
from recommender.base import Interaction
from recommender.engine import Engine
from recommender.store import InMemoryStore
from streamrec.settings import Settings
from streamrec.sim.simulator import Simulation


def interactions(simulation: Simulation, count: int, weights: dict[str, float]
                 ) -> list[Interaction]:
    return [Interaction(event["user_id"], event["item_id"], event["timestamp"],
                        weights[event["event_type"]], event["event_type"])
            for event in simulation.events(count, start=1_800_000_000.0)]


def digest(store: InMemoryStore) -> str:
    """A digest of what was learned: every user's history and vector, every neighbour
    list, the popularity and the blend's tally."""
    users = sorted(store.user_ids())
    parts = [repr(store.histories(users, 1000)), repr(store.blend_tally()),
             repr(store.popular(10_000)), store.events_applied()]
    vectors = store.user_factors(users)
    parts += [vectors[user].tobytes() for user in users if user in vectors]
    items = [item for item, _ in store.popular(10_000).scores]
    parts.append(repr(store.neighbours(items, 200)))
    item_vectors = store.item_factors(items)
    parts += [item_vectors[item].tobytes() for item in items if item in item_vectors]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 500])
    parser.add_argument("--warm", type=int, default=20_000, help="events learned first")
    parser.add_argument("--events", type=int, default=2_000, help="events measured")
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--categories", type=int, default=50)
    args = parser.parse_args()
    settings = Settings()
    weights = dict(settings.event_weights)
    simulation = Simulation(args.users, args.items, args.categories, seed=7)
    documents = list(simulation.catalog.items())
    events = interactions(simulation, args.warm + args.events, weights)
    warm, measured = events[: args.warm], events[args.warm:]
    for size in args.sizes:
        store = InMemoryStore(seed=settings.seed)
        store.put_items([(document["item_id"], document) for document in documents])
        engine = Engine(store, settings.engine_config())
        for start in range(0, len(warm), 500):
            engine.learn_many(warm[start:start + 500])
        cpu = time.process_time()
        for start in range(0, len(measured), size):
            engine.learn_many(measured[start:start + size])
        cpu = time.process_time() - cpu
        print(f"batch {size:>4}: {1e6 * cpu / len(measured):7.1f} µs CPU per event "
              f"({len(measured) / cpu:,.0f} events/s), state digest {digest(store)}")


if __name__ == "__main__":
    main()
