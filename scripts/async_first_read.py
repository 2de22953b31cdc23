"""What a request's first read costs the API process, by how it waits for Redis. Not a test.

``GET /recommendations`` reads the user's history, factors, the withdrawals' version and
the popular prefix in one pipeline (``RedisStore.first_read``), made in a thread of
``STREAMREC_SERVING_THREADS`` so that a Redis that hangs stalls no route. This makes the
same read ``--reads`` times for random users of a ``scripts/serving_reads.py fill`` state,
``--concurrency`` at a time, three ways, and prints reads/s and the process's CPU per read:

- ``thread``: redis-py's pipeline in a thread pool of two (``run_in_executor``), as served;
- ``async``: redis-py's asyncio client (``redis.asyncio``) on the event loop, which the
  design of 2026-12-05 (docs/benchmarks.md) would read with;
- ``direct``: redis-py's pipeline on the loop itself, blocking (not shippable: the floor).

    .venv/bin/python scripts/async_first_read.py redis://127.0.0.1:46379/0
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from concurrent.futures import ThreadPoolExecutor

import redis.asyncio

from streamrec.settings import Settings
from streamrec.storage import keys
from streamrec.wiring import Wiring

HISTORY, POPULAR = 200, 220  # rows: history_length, and the hybrid's popular prefix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--prefix", default="reads")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--reads", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=2)
    arguments = parser.parse_args()
    asyncio.run(measure(arguments))


async def measure(arguments: argparse.Namespace) -> None:
    store = Wiring.connect(Settings(redis_url=arguments.url,
                                    redis_prefix=arguments.prefix)).engine().store
    client = redis.asyncio.Redis.from_url(arguments.url, protocol=2)  # the app's RESP2
    pool = ThreadPoolExecutor(2)
    withdrawn = store._withdrawn_keys[1]
    landmarks, field = store._landmarks_key(), keys.landmark_field(keys.POPULAR)

    def blocking(user: str) -> list:
        pipe = store._user_reads(user, HISTORY, True)
        pipe.get(withdrawn)
        store._popular_reads(pipe, POPULAR, None)
        return pipe.execute()

    async def waiting(user: str) -> list:
        pipe = client.pipeline(transaction=False)
        pipe.zrange(store.key(keys.HISTORY, user), 0, HISTORY, desc=True, withscores=True)
        pipe.get(store.key(keys.MF_USER, user))
        pipe.get(withdrawn)
        pipe.zrange(store.key(keys.POPULAR), 0, POPULAR - 1, desc=True, withscores=True)
        pipe.hget(landmarks, field)
        return await pipe.execute()

    loop = asyncio.get_running_loop()
    ways = {"thread": lambda user: loop.run_in_executor(pool, blocking, user),
            "async": waiting}
    users = [f"user-{random.randrange(arguments.users)}" for _ in range(arguments.reads)]
    if await waiting(users[0]) != blocking(users[0]):
        raise SystemExit("the two clients read different replies")
    for _ in range(arguments.rounds):
        for concurrency in arguments.concurrency:
            for name, read in ways.items():
                async def reader(mine: list[str], read=read) -> None:
                    for user in mine:
                        await read(user)
                started, cpu = time.perf_counter(), time.process_time()
                await asyncio.gather(*(reader(users[n::concurrency])
                                       for n in range(concurrency)))
                report(name, concurrency, len(users), started, cpu)
        started, cpu = time.perf_counter(), time.process_time()
        for user in users:
            blocking(user)
        report("direct", 1, len(users), started, cpu)
    await client.aclose()


def report(name: str, concurrency: int, reads: int, started: float, cpu: float) -> None:
    seconds, used = time.perf_counter() - started, time.process_time() - cpu
    print(f"{name:6} concurrency {concurrency}: {reads / seconds:6.0f} reads/s, "
          f"{used / reads * 1e6:5.0f} us of CPU a read", flush=True)


if __name__ == "__main__":
    main()
