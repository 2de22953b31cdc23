"""Plain Thompson sampling against the contextual and clustered strategies, end to end, and
the off-policy estimate of the plain bandit from the contextual run's logs.

Runs on real processes: a local Kafka and redis-server (``streamrec.local.services``, or
the ones ``STREAMREC_KAFKA_BOOTSTRAP``/``STREAMREC_REDIS_URL`` name), ``streamrec worker``
and ``streamrec api`` as deployed. Simulated users are mobile or desktop
(:class:`streamrec.sim.simulator.Segments`: mobile lists earn a click 30% of the time from
the variant ``popular``, desktop ones from ``hybrid``, every other pair 10%), sent as the
context key ``device`` and kept as a user property. Each strategy gets a placement of its
own over ``popular``, ``hybrid`` and ``mf`` (floor 0.05), and the same users (same seed)
ask each for ``--requests`` lists. It prints the cumulative reward at checkpoints, the
margin and from which request it holds, what the lists were worth by their known rates,
each segment's shares at the end; then the plain bandit's converged policy estimated
off-policy from the contextual run's logs (``POST /admin/placements/NAME/report``)
beside what the plain bandit measured; then two equal variants under each strategy.

    .venv/bin/python scripts/bandit_compare.py --requests 3000
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender.ope import Logged, arm_stats, thompson_shares  # noqa: E402
from streamrec.measure.bench import stack, start_api  # noqa: E402
from streamrec.sim.compare import compare  # noqa: E402
from streamrec.sim.simulator import EQUAL_SEGMENTS, Segments, Simulation  # noqa: E402

STRATEGIES = ["bandit", "contextual", "clustered"]
MODELS = {"popular": "popular", "hybrid": "hybrid", "mf": "mf"}


def call(base: str, method: str, path: str, body: object = None) -> dict:
    data = None if body is None else orjson.dumps(body)
    for _ in range(50):
        request = urllib.request.Request(base + path, method=method, data=data,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return orjson.loads(response.read())
        except urllib.error.HTTPError as error:
            if error.code != 503:  # shed on a loaded machine: ask again
                raise RuntimeError(f"{method} {path}: {error.code} {error.read()!r}") from None
            time.sleep(0.1)
    raise RuntimeError(f"{method} {path}: still shed after 50 tries")


def callables(base: str):
    def fetch(user: str, placement: str, context: dict | None = None) -> dict:
        query = {"user_id": user, "placement": placement,
                 **{f"context.{key}": value for key, value in (context or {}).items()}}
        return call(base, "GET", "/recommendations?" + urllib.parse.urlencode(query))

    def send(events: list[dict]) -> None:
        call(base, "POST", "/events", events)

    def configure(placement: str, body: dict) -> None:
        call(base, "PUT", f"/admin/placements/{placement}", body)

    return fetch, send, configure


def prepare(base: str, simulation: Simulation) -> None:
    """Every user's segment as a property, and some events so every list has items."""
    for document in simulation.user_documents():
        call(base, "PUT", f"/users/{document['user_id']}",
             {"properties": document["properties"]})
    events = list(simulation.events(1000))
    for first in range(0, len(events), 500):
        call(base, "POST", "/events", events[first:first + 500])
    last = simulation.user_id(simulation.users - 1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            call(base, "GET", f"/users/{last}")
            return
        except RuntimeError:
            time.sleep(0.2)
    raise RuntimeError("the worker did not apply the users' properties within 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="Requests per strategy.")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--equal-requests", type=int, default=1000,
                        help="Requests per strategy with two equal variants (0: skip).")
    args = parser.parse_args()

    with stack() as current:
        current.spawn("worker", ["worker"])
        base = start_api(current)
        run = current.run_id
        simulation = Simulation(users=args.users, items=300, categories=8, seed=args.seed,
                                prefix=f"{run}-", segments=Segments())
        prepare(base, simulation)
        fetch, send, configure = callables(base)
        started = time.monotonic()
        result = compare(simulation, fetch, send, configure, STRATEGIES, f"cmp-{run}",
                         args.requests, MODELS, seed=args.seed)
        print(f"{args.requests} requests per strategy, {args.users} users "
              f"({time.monotonic() - started:.0f} s)")
        checkpoints = sorted({max(1, args.requests * n // 10) for n in range(1, 11)})
        print("cumulative rewarded lists after request:")
        print(f"  {'request':>8}" + "".join(f"{s:>12}" for s in STRATEGIES))
        curves = {s: result.results[s].cumulative() for s in STRATEGIES}
        for point in checkpoints:
            print(f"  {point:>8}" + "".join(f"{curves[s][point - 1]:>12}" for s in STRATEGIES))
        for strategy in STRATEGIES:
            worth = result.expected_reward(strategy, simulation.segments)
            last = result.expected_reward(strategy, simulation.segments, args.requests // 5)
            line = (f"{strategy:>10}: {result.reward(strategy):.3f} per list measured, "
                    f"worth {worth:.3f} by the known rates ({last:.3f} over the last "
                    f"{args.requests // 5})")
            if strategy != "bandit":
                line += (f"; margin over bandit {result.margin(strategy, 'bandit'):+d} lists, "
                         f"ahead for good from request "
                         f"{result.leads_from(strategy, 'bandit')}")
            print(line)
            print(f"{'':>12}last {args.requests // 5} by segment: "
                  f"{result.segment_shares(strategy, args.requests // 5)}")

        plain = result.results["bandit"]
        stats = arm_stats([Logged(v, 1.0, float(r))
                           for v, r in zip(plain.served, plain.rewards, strict=True)])
        shares = thompson_shares({name: stats.get(name, (0, 0)) for name in MODELS},
                                 floor=0.05)
        placement = f"cmp-{run}-contextual"
        report: dict = {}
        deadline = time.monotonic() + 60
        while report.get("lists", 0) < args.requests and time.monotonic() < deadline:
            asked = time.perf_counter()
            report = call(base, "POST", f"/admin/placements/{placement}/report",
                          {"policy": {"strategy": "split", "shares": shares}})
            took = time.perf_counter() - asked
        low, high = report["snips"]["interval"]
        measured = result.reward("bandit")
        print(f"\nthe plain bandit's converged policy {shares}, estimated off-policy from the "
              f"contextual run's {report['lists']} logged lists ({took:.2f} s to read both "
              f"topics whole and evaluate):")
        print(f"  SNIPS {report['snips']['value']:.3f} [{low:.3f}, {high:.3f}], IPS "
              f"{report['ips']['value']:.3f} {report['ips']['interval']}, ESS "
              f"{report['effective_sample_size']}")
        print(f"  the plain bandit measured {measured:.3f} (worth "
              f"{result.expected_reward('bandit', simulation.segments):.3f}): "
              f"{'within' if low <= measured <= high else 'OUTSIDE'} the 95% interval")
        rule = call(base, "POST", f"/admin/placements/{placement}/report", {"policy": {
            "by": "device", "choose": {"mobile": "popular", "desktop": "hybrid"}}})
        print(f"  the best rule per device (truth 0.300): {rule['snips']}")

        if args.equal_requests:
            equal = Simulation(users=args.users, items=300, categories=8, seed=args.seed + 1,
                               prefix=f"{run}-eq-", segments=EQUAL_SEGMENTS)
            prepare(base, equal)
            balanced = compare(equal, fetch, send, configure, STRATEGIES, f"eq-{run}",
                               args.equal_requests, {"left": "popular", "right": "popular"},
                               floor=0.05, seed=args.seed)
            print(f"\nequal variants (floor 0.05: at least 5% each), "
                  f"{args.equal_requests} requests:")
            for strategy in STRATEGIES:
                shares_now = balanced.results[strategy].shares()
                last = balanced.results[strategy].shares(last=args.equal_requests // 5)
                print(f"  {strategy:>10}: {shares_now}; last {args.equal_requests // 5}: {last}")


if __name__ == "__main__":
    main()
