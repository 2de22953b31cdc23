"""Redis memory per remembered event id (idempotent ingest, recommender.once).

Starts its own redis-server, applies ``--ids`` claims (32-hex event ids, each with the
``partition:offset`` of its record) through ``RedisStore.apply`` in batches, as the worker
does, and prints the bytes per id and the claims applied per second::

    .venv/bin/python scripts/dedup_memory.py --ids 1000000
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import redis

# First: streamrec sets one BLAS thread before numpy loads, as every streamrec process
# does (numpy's default pool would spin on the second core and count in the CPU figures).
import streamrec  # noqa: F401
from recommender.once import Claim
from recommender.store import StateUpdate
from streamrec.local.services import LocalRedis
from streamrec.storage.state_store import RedisStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as base:
        server = LocalRedis(Path(base) / "redis").start()
        try:
            client = redis.Redis.from_url(server.url)
            store = RedisStore(client, "m")
            before = client.info("memory")["used_memory"]
            started = time.perf_counter()
            for number in range(args.ids // args.batch):
                # Half a second of reception time per batch: the ids span a few days' buckets.
                claims = [Claim(uuid.uuid4().hex, f"{number % 16}:{number * args.batch + n}",
                                1.75e9 + number * 0.5) for n in range(args.batch)]
                store.apply(StateUpdate(history_length=200, max_neighbours=200, reference=0.0,
                                        half_life=1.0, events=args.batch, claims=claims))
            elapsed = time.perf_counter() - started
            used = client.info("memory")["used_memory"] - before
            ids = args.ids // args.batch * args.batch
            print(f"{ids:,} event ids remembered: {used / ids:.1f} bytes per id "
                  f"({used / ids * 1e6 / 2**20:.0f} MiB per million); {ids / elapsed:,.0f} "
                  f"claims/s applied in batches of {args.batch:,}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
