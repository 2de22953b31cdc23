"""``python -m streamrec.measure.filter_bench``: request latency with and without a filter that
removes 90% of the candidates, on a real stack (``streamrec bench``'s: Kafka, Redis, one
worker, one API process), one request at a time so each figure is a request's own time.

The catalog is the simulator's (prices 5 to 204 spread evenly, ``--categories``
categories), every item viewed once first so every model knows the whole catalog. Filters:

- ``cheap``: ``Items.price < $MAX_PRICE`` with 25: keeps 10% of the catalog, spread over
  every ranking, so each list screens about ten candidates per item it returns;
- ``category``: ``Items.categories IN ($CATEGORY)`` with one of ten categories: also 10%,
  and ``/popular`` reads that category's popularity instead of screening;
- ``nothing``: ``Items.price < 0``: keeps nothing, the worst case (screens up to
  ``STREAMREC_MAX_SCREENED_CANDIDATES`` per list and answers an empty list).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import click
import httpx
import orjson

from streamrec.measure import bench
from streamrec.percentiles import summarise
from streamrec.sim.simulator import Simulation

FILTERS = {
    "cheap": ("INCLUDE ItemID WHERE Items.price < $MAX_PRICE", {"MAX_PRICE": 25}),
    "category": ("INCLUDE ItemID WHERE Items.categories IN ($CATEGORY)",
                 {"CATEGORY": ["category-0"]}),
    "nothing": ("INCLUDE ItemID WHERE Items.price < 0", {}),
}
LISTS = ("recommendations?model=popular", "recommendations?model=cooccurrence",
         "recommendations?model=mf", "recommendations?model=hybrid", "popular", "similar")


@dataclass
class Row:
    route: str
    filter: str
    p50_ms: float
    p99_ms: float
    mean_ms: float
    mean_items: float


def kept_share(simulation: Simulation, name: str) -> float:
    """The share of the catalog the named filter keeps."""
    items = list(simulation.catalog.items())
    if name == "cheap":
        kept = [item for item in items if item["price"] < FILTERS["cheap"][1]["MAX_PRICE"]]
    elif name == "category":
        kept = [item for item in items if "category-0" in item["categories"]]
    else:
        kept = []
    return len(kept) / len(items)


def _request(route: str, name: str | None, k: int, simulation: Simulation,
             rng: random.Random) -> tuple[str, dict]:
    params: dict[str, str | int] = {"k": k}
    if name is not None:
        params["filter"] = name
        params["filter_values"] = orjson.dumps(FILTERS[name][1]).decode()
    path, _, model = route.partition("?model=")
    if path == "recommendations":
        params |= {"user_id": simulation.user_id(rng.randrange(simulation.users)),
                   "model": model}
        return "/recommendations", params
    if path == "similar":
        return f"/items/{rng.choice(simulation.catalog.item_ids[:2000])}/similar", params
    return "/popular", params


def measure(client: httpx.Client, simulation: Simulation, route: str, requests: int, k: int,
            rng: random.Random) -> list[Row]:
    """``requests`` rounds of one request per filter (and one without), interleaved so that
    whatever else the machine does weighs on each alike."""
    names = (None, *FILTERS)
    seconds: dict[str | None, list[float]] = {name: [] for name in names}
    sizes: dict[str | None, list[int]] = {name: [] for name in names}
    for _ in range(requests):
        for name in names:
            url, params = _request(route, name, k, simulation, rng)
            started = time.perf_counter()
            response = client.get(url, params=params)
            seconds[name].append(time.perf_counter() - started)
            response.raise_for_status()
            sizes[name].append(len(response.json()["items"]))
    rows = []
    for name in names:
        summary = summarise(seconds[name])
        rows.append(Row(route, name or "none", 1000 * summary["p50"], 1000 * summary["p99"],
                        1000 * summary["mean"], sum(sizes[name]) / len(sizes[name])))
    return rows


@click.command()
@click.option("--items", default=20_000, show_default=True)
@click.option("--users", default=5_000, show_default=True)
@click.option("--events", default=60_000, show_default=True,
              help="Events in all, the first --items of them one view of every item.")
@click.option("--categories", default=10, show_default=True)
@click.option("--requests", default=300, show_default=True, help="Per route and filter.")
@click.option("-k", "k", default=10, show_default=True)
@click.option("--seed", default=7, show_default=True)
def main(items: int, users: int, events: int, categories: int, requests: int, k: int,
         seed: int) -> None:
    simulation = Simulation(users=users, items=items, categories=categories, seed=seed)
    with bench.stack() as current:
        click.echo(f"ingesting {events} events over {items} items ...")
        result = bench.ingest(current, simulation, events, cover=True)
        click.echo(f"  applied {result.apply_per_second:,.0f} events/s")
        base = bench.start_api(current)
        rng = random.Random(seed)
        rows = []
        with httpx.Client(base_url=base, timeout=30) as client:
            for name, (expression, _) in FILTERS.items():
                client.put(f"/admin/filters/{name}",
                           json={"expression": expression}).raise_for_status()
            for route in LISTS:  # warm each route once: the MF index loads on first use
                measure(client, simulation, route, 5, k, rng)
            for route in LISTS:
                rows += measure(client, simulation, route, requests, k, rng)
        click.echo("")
        click.echo("| Route | Filter (share of the catalog kept) | p50 ms | p99 ms | mean ms "
                   "| items returned (mean) |")
        click.echo("|---|---|---|---|---|---|")
        for row in rows:
            kept = "" if row.filter == "none" else \
                f" ({100 * kept_share(simulation, row.filter):.0f}%)"
            click.echo(f"| `{row.route}` | {row.filter}{kept} | {row.p50_ms:.1f} | "
                       f"{row.p99_ms:.1f} | {row.mean_ms:.1f} | {row.mean_items:.1f} |")


if __name__ == "__main__":
    main()
