"""Where the worker's APPLY script spends its time inside Redis, phase by phase. Not a test.

Learns a simulated stream into Redis in batches, as the worker's learning process does
(``Engine.learn_many``, the shipped settings, one store), then learns ``--timed`` more
events with a copy of the APPLY script that reads Redis's clock (``TIME``) between its
phases and pushes the marks to a list. Prints, per APPLY call of the timed batches: the
wall time the learning process waited for the call, each phase's milliseconds inside
Redis, the commands the call made with their time (``INFO COMMANDSTATS``, reset before the
timed batches), and the learning process's own CPU per event. The phases:

- ``decode``: ``cjson.decode`` of the batch's document;
- ``claims, offsets``: the event ids and the applied offsets checked;
- ``decayed keys``: the list of decayed keys (popularity, counts, neighbour lists) built;
- ``read and add``: landmarks read, each key's stored scores read (``ZMSCORE``) and the new
  ones computed and checked;
- ``write decayed``: rescales, the skiplist moves, ``ZADD`` and trims of those keys;
- ``histories``: the users' histories and event types;
- ``factors``: the MF vectors and the changed-items list;
- ``rest``: claims kept, feedback waiting, offsets and counters.

The instrumented copy exists only in this process; the state it writes is the shipped
script's. A fresh prefix (or ``FLUSHDB``) each run: the stream is learned from empty::

    redis-server --port 46379 --save '' --zset-max-listpack-entries 256 \\
        --hash-max-listpack-entries 256 --daemonize yes
    .venv/bin/python scripts/apply_phases.py redis://127.0.0.1:46379/0 --prefix p1
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import redis

# First: streamrec sets one BLAS thread before numpy loads, as every streamrec process does.
import streamrec  # noqa: F401
from recommender.base import Interaction
from streamrec.settings import Settings
from streamrec.sim.simulator import Simulation
from streamrec.storage import scripts
from streamrec.wiring import Wiring

PROBES = "apply-phases"  # the list the marks go to (under no prefix; removed at the start)

# (text of the shipped script the mark goes before, the phase that ends there)
MARKS = [
    ("local k = p.k", "decode"),
    ("local decayed = {}\n", "claims, offsets"),
    ("local moved = {}  --", "decayed keys"),
    ("-- A neighbour list that will hold", "read and add"),
    ("for start = 1, #moved, 2 * CHUNK do", "write decayed"),
    ("-- Factor vectors:", "histories"),
    ("-- The claims are kept", "factors"),
]


def instrumented(source: str) -> str:
    """The APPLY script with a TIME mark at each phase's end (see the docstring)."""
    clock = ("local marks = {} local function mark(name) local t = redis.call('TIME') "
             "marks[#marks + 1] = name marks[#marks + 1] = t[1] * 1000000 + t[2] end\n"
             "mark('start')\n")
    source = clock + source
    for before, phase in MARKS:
        at = source.index(before)
        source = source[:at] + f"mark({phase!r})\n" + source[at:]
    end = source.rindex("return 1\n")
    return (source[:end] + f"mark('rest') redis.call('RPUSH', {PROBES!r}, cjson.encode(marks))\n"
            + source[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url")
    parser.add_argument("--prefix", default="phases")
    parser.add_argument("--warm-up", type=int, default=120000,
                        help="events learned first, untimed (the bench's --warm-up)")
    parser.add_argument("--timed", type=int, default=18000)
    parser.add_argument("--batch", type=int, default=900,
                        help="events per batch (the worker's, at its rate: about 900)")
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--items", type=int, default=20000)
    arguments = parser.parse_args()

    client = redis.Redis.from_url(arguments.url, protocol=2)
    client.delete(PROBES)
    engine = Wiring.connect(Settings(redis_url=arguments.url,
                                     redis_prefix=arguments.prefix)).engine()
    store = engine.store
    simulation = Simulation(users=arguments.users, items=arguments.items, categories=50,
                            seed=7)
    total = arguments.warm_up + arguments.timed
    start = time.time() - total
    store.put_items((document["item_id"], document) for document in simulation.catalog.items())
    events = [Interaction(e["user_id"], e["item_id"], start + n * 0.5, 1.0)
              for n, e in enumerate(simulation.events(total, start))]
    size = arguments.batch
    for first in range(0, arguments.warm_up, size):
        engine.learn_many(events[first:min(first + size, arguments.warm_up)])

    shipped, waited = store._apply, []
    probed = client.register_script(instrumented(scripts.APPLY))

    def timed_apply(keys, args):
        began = time.perf_counter()
        reply = probed(keys=keys, args=args)
        waited.append(time.perf_counter() - began)
        return reply

    store._apply = timed_apply
    client.config_resetstat()
    cpu = time.process_time()
    for first in range(arguments.warm_up, total, size):
        engine.learn_many(events[first:min(first + size, total)])
    cpu = time.process_time() - cpu
    store._apply = shipped

    calls = len(waited)
    phases: dict[str, float] = defaultdict(float)
    for raw in client.lrange(PROBES, 0, -1):
        marks = json.loads(raw)
        for n in range(2, len(marks), 2):
            phases[marks[n]] += (marks[n + 1] - marks[n - 1]) / 1000
    stats = {name.removeprefix("cmdstat_"): row for name, row in
             client.info("commandstats").items() if name != "cmdstat_evalsha"}
    client.delete(PROBES)
    print(f"{arguments.timed:,} events in {calls} APPLY calls of {size}: the learning "
          f"process waited {1000 * sum(waited) / calls:.1f} ms per call "
          f"({1e6 * sum(waited) / arguments.timed:.0f} µs per event); its own CPU "
          f"{1e6 * cpu / arguments.timed:.0f} µs per event")
    print("inside Redis, ms per call:")
    for phase, ms in phases.items():
        print(f"  {phase:16s} {ms / calls:8.2f}")
    print(f"  {'all':16s} {sum(phases.values()) / calls:8.2f}")
    print("commands (inside the calls and around them), per APPLY call:")
    for name, row in sorted(stats.items(), key=lambda pair: -pair[1]["usec"])[:10]:
        print(f"  {name:18s} {row['calls'] / calls:9.1f} calls {row['usec'] / calls / 1000:8.2f}"
              f" ms ({row['usec_per_call']:.1f} µs each)")


if __name__ == "__main__":
    main()
