"""How long a call takes to reach a child process from a busy event loop. Not a test.

The worker's event loop runs Faust's per-record path while its learning process learns
the last batch. This sends a batch-sized payload (``--records`` Kafka-record-like tuples)
to a spawned child ``--calls`` times and prints the milliseconds from the send to the
child's first line of work, with ``--busy`` tasks keeping the loop at full CPU (0: idle):

- ``ProcessPoolExecutor`` (``run_in_executor``), which the worker used until 2026-12-04:
  a manager thread and a queue's feeder thread carry each call, and each must get the GIL
  from the busy loop;
- a socket driven from the loop itself (what ``streams.learner`` does now).

    .venv/bin/python scripts/loop_handoff.py --busy 0 1 4
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import pickle
import socket
import statistics
import struct
import time
from concurrent.futures import ProcessPoolExecutor

LENGTH = struct.Struct("!Q")


def stamp(payload: object) -> float:
    return time.perf_counter()


def serve(channel: socket.socket) -> None:
    def receive(size: int) -> bytes:
        data = b""
        while len(data) < size:
            got = channel.recv(size - len(data))
            if not got:
                raise EOFError
            data += got
        return data

    while True:
        try:
            (length,) = LENGTH.unpack(receive(LENGTH.size))
            payload = pickle.loads(receive(length))
        except EOFError:
            return
        answer = pickle.dumps(stamp(payload))
        channel.sendall(LENGTH.pack(len(answer)) + answer)


async def busy(stop: asyncio.Event) -> None:
    """CPU in small steps, as Faust's per-record path keeps the loop."""
    while not stop.is_set():
        sum(range(3000))
        await asyncio.sleep(0)


async def measure(send, busy_tasks: int, records: int, calls: int) -> list[float]:
    payload = [("events", 0, n, b"user-0001", b"v" * 120, 1.7e9, 0, ()) for n in range(records)]
    await send(None)
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(busy(stop)) for _ in range(busy_tasks)]
    waits = []
    for _ in range(calls):
        sent = time.perf_counter()
        started = await send(payload)
        waits.append((started - sent) * 1000)
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.gather(*tasks)
    return waits


async def with_pool(busy_tasks: int, records: int, calls: int) -> list[float]:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        loop = asyncio.get_running_loop()
        return await measure(lambda payload: loop.run_in_executor(pool, stamp, payload),
                             busy_tasks, records, calls)


async def with_socket(busy_tasks: int, records: int, calls: int) -> list[float]:
    ours, theirs = socket.socketpair()
    child = multiprocessing.get_context("spawn").Process(target=serve, args=(theirs,),
                                                         daemon=True)
    child.start()
    theirs.close()
    reader, writer = await asyncio.open_connection(sock=ours)

    async def send(payload: object) -> float:
        request = pickle.dumps(payload)
        writer.write(LENGTH.pack(len(request)) + request)
        await writer.drain()
        (length,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
        return pickle.loads(await reader.readexactly(length))

    try:
        return await measure(send, busy_tasks, records, calls)
    finally:
        writer.close()
        child.join(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--records", type=int, default=1700)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    for busy_tasks in args.busy:
        for name, way in (("ProcessPoolExecutor", with_pool),
                          ("socket from the loop", with_socket)):
            waits = asyncio.run(way(busy_tasks, args.records, args.calls))
            print(f"busy tasks {busy_tasks}, {name}: send -> child ms median "
                  f"{statistics.median(waits):.1f}, max {max(waits):.1f}")


if __name__ == "__main__":
    main()
