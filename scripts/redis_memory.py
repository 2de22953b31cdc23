"""Redis bytes per user, measured: a breakdown by kind of key and the ground truth it must
agree with. Not a test; run it before and after a change to the per-user key layout.

The real engine learns a simulated stream (the bench's data shape) into one fresh local
redis-server; the per-user share of every update (history, event types, user factors) is
applied to a second, empty one as well, whose ``used_memory`` grows by nothing else. The
second one's keys are then broken down by kind (``MEMORY USAGE``, ``OBJECT ENCODING``, key
name length), and ``FLUSHDB`` there shows what the keys really held. ``redis_bytes`` (the
bench's figure) is computed on the first one.

    .venv/bin/python scripts/redis_memory.py --events 200000 --users 20000 --items 100000
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

import redis

# First: streamrec sets one BLAS thread before numpy loads, as every streamrec process
# does (numpy's default pool would spin on the second core and count in the CPU figures).
import streamrec  # noqa: F401
from recommender.base import Interaction
from recommender.engine import Engine
from recommender.store import StateUpdate
from streamrec.local.services import LocalRedis
from streamrec.measure.bench import redis_bytes
from streamrec.settings import get_settings
from streamrec.sim.simulator import Simulation
from streamrec.storage.state_store import RedisStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--categories", type=int, default=50)
    parser.add_argument("--prefix", default="bench-0123abcd", help="as long as the bench's")
    parser.add_argument("--batch", type=int, default=2000)
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="streamrec-memory-"))
    full, users_only = LocalRedis(base / "full").start(), LocalRedis(base / "users").start()
    try:
        measure(args, RedisStore(redis.Redis.from_url(full.url), args.prefix),
                RedisStore(redis.Redis.from_url(users_only.url), args.prefix))
    finally:
        full.stop()
        users_only.stop()


def measure(args: argparse.Namespace, store: RedisStore, users_store: RedisStore) -> None:
    client = users_store.client
    users_store.apply(StateUpdate(history_length=1, max_neighbours=1))  # load the scripts
    before = client.info("memory")["used_memory"]
    apply = store.apply

    def apply_both(update: StateUpdate) -> None:
        apply(update)
        users_store.apply(StateUpdate(
            history_length=update.history_length, max_neighbours=update.max_neighbours,
            history=update.history, user_factors=update.user_factors,
            event_types=update.event_types))

    store.apply = apply_both  # type: ignore[method-assign]
    settings = get_settings()
    weights = settings.weights()
    engine = Engine(store, settings.engine_config())
    simulation = Simulation(users=args.users, items=args.items, categories=args.categories,
                            seed=7)
    store.put_items((document["item_id"], document) for document in simulation.catalog.items())
    started = time.perf_counter()
    batch: list[Interaction] = []
    for event in simulation.events(args.events, start=1_700_000_000.0):
        batch.append(Interaction(event["user_id"], event["item_id"], event["timestamp"],
                                 weights.weight(event["event_type"], None),
                                 event["event_type"]))
        if len(batch) >= args.batch:
            engine.learn_many(batch)
            batch = []
    if batch:
        engine.learn_many(batch)
    held = client.info("memory")["used_memory"]
    users = sum(1 for _ in users_store.user_ids())
    stored = client.dbsize()
    print(f"learned {args.events:,} events in {time.perf_counter() - started:.0f} s; "
          f"{users:,} users with state, {stored:,} keys")

    names = list(client.scan_iter(count=5000))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.memory_usage(name, samples=0)
        pipe.object("encoding", name)
    replies = pipe.execute()
    kinds: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    encodings: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for name, usage, encoding in zip(names, replies[::2], replies[1::2], strict=True):
        text = name.decode(errors="replace")
        kind = text.split("}:", 1)[1] if "}:" in text else text.split(":", 1)[1]
        kind = kind.split(":", 1)[0]
        kinds[kind].update(keys=1, usage=usage, name=len(name))
        encodings[kind][encoding.decode()] += 1
    total = 0
    for kind, counts in sorted(kinds.items()):
        total += counts["usage"]
        print(f"  {kind:8} {counts['keys']:7,} keys  MEMORY USAGE {counts['usage'] / users:6.1f}"
              f" B/user  key name {counts['name'] / counts['keys']:4.1f} B  "
              f"{dict(encodings[kind])}")
    buckets = 8 * (1 << (stored - 1).bit_length()) / users  # the main dict's bucket array
    print(f"  MEMORY USAGE {total / users:.1f} + buckets {buckets:.1f} = "
          f"{(total) / users + buckets:.1f} B/user")
    client.flushdb()
    freed = held - client.info("memory")["used_memory"]
    print(f"  FLUSHDB freed {freed / users:.1f} B/user; used_memory grew "
          f"{(held - before) / users:.1f} B/user (client buffers included)")

    class Current:
        cluster = False

        def store(self) -> RedisStore:
            return store

    figure = redis_bytes(Current())  # type: ignore[arg-type]
    print(f"bench redis_bytes: {figure['bytes_per_user']:.1f} B/user, "
          f"{figure['bytes_per_item']:,.0f} B/item")


if __name__ == "__main__":
    main()
