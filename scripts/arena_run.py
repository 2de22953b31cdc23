"""The arena run: a streaming variant against a batch one (an imported list set) under a
bandit placement, through the real stack, printing the traffic shares and the rewards as
the bandit learns (``docs/lists.md`` shows a run).

It starts a local Kafka and redis-server (``streamrec.local.services``, or uses the ones
``STREAMREC_KAFKA_BOOTSTRAP``/``STREAMREC_REDIS_URL`` name), a worker and ``streamrec
api`` as deployed, trains the streaming models on simulated history, imports the "batch
job"'s lists (the simulator's ground truth, written as Personalize batch-inference output)
with ``streamrec lists import truth``, creates the placement ``arena`` (bandit: ``popular``
against ``lists:truth``) and lets the simulated users ask for lists and click what they
like.

    .venv/bin/python scripts/arena_run.py --rounds 10 --per-round 200
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamrec.measure.arena import (  # noqa: E402
    arena_placement,
    describe,
    run_arena,
    truth_lists,
)
from streamrec.measure.bench import stack, start_api  # noqa: E402
from streamrec.sim.simulator import Simulation  # noqa: E402


def call(method: str, url: str, body: object = None) -> dict:
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    for _ in range(50):  # a loaded API sheds with 503: ask again
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return orjson.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            if error.code != 503:
                raise
            time.sleep(0.1)
    raise RuntimeError(f"{method} {url}: 503 fifty times")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--history", type=int, default=5000,
                        help="Simulated events the streaming models learn first.")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument("--streaming", default="popular",
                        help="The streaming variant's model.")
    parser.add_argument("--seed", type=int, default=11)
    options = parser.parse_args()

    simulation = Simulation(users=options.users, items=options.items, categories=20,
                            seed=options.seed)
    with stack() as current:
        current.spawn("worker", ["worker"])
        base = start_api(current)
        print(f"stack: Kafka {current.bootstrap}, Redis {current.redis_url}, API {base}")
        events = list(simulation.events(options.history))
        for start in range(0, len(events), 500):
            call("POST", f"{base}/events", events[start:start + 500])
        path = current.run_dir / "truth.json.out"
        path.write_bytes(b"\n".join(orjson.dumps(row) for row in truth_lists(simulation)))
        imported = subprocess.run(
            [sys.executable, "-m", "streamrec.cli", "lists", "import", "truth", str(path)],
            env=current.env(), capture_output=True, text=True, check=True)
        print(imported.stdout.strip())
        call("PUT", f"{base}/admin/placements/arena", arena_placement("truth", options.streaming))
        time.sleep(2)  # the API's copies of the placement and the set's pointer

        def fetch(user: str, placement: str) -> dict:
            query = urllib.parse.urlencode({"user_id": user, "placement": placement})
            return call("GET", f"{base}/recommendations?{query}")

        def send(reactions: list[dict]) -> None:
            call("POST", f"{base}/events", reactions)

        print(f"arena: bandit, streaming = {options.streaming}, batch = lists:truth; "
              f"{options.rounds} rounds of {options.per_round} requests")
        started = time.monotonic()
        run_arena(simulation, fetch, send, "arena", options.rounds, options.per_round,
                  seed=options.seed, report=lambda done: print(describe(done), flush=True))
        print(f"{options.rounds * options.per_round:,} requests in "
              f"{time.monotonic() - started:.0f} s")
        report = call("GET", f"{base}/admin/placements/arena/report")
        for name, variant in sorted(report.get("variants", {}).items()):
            print(f"report: {name}: {variant.get('impressions', 0):,} lists, take-rate "
                  f"{variant.get('take_rate', 0.0):.3f}")


if __name__ == "__main__":
    main()
