"""``streamrec``: start the roles (up, worker, api, simulate) and measure them (bench)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path

import click
import orjson

from streamrec.settings import get_settings


@click.group()
@click.option("--log-level", default="info", show_default=True)
def main(log_level: str) -> None:
    """streamrec: real-time recommendations from a Kafka event stream."""
    from streamrec import logs

    logs.install()  # every role's log lines escape what came from outside
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


@main.command()
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error", "critical"]))
@click.option("--version", "state_version", default=None, metavar="NAME",
              help="Keep this model version up to date (built by `streamrec rebuild`) "
                   "instead of the main state.")
def worker(log_level: str, state_version: str | None) -> None:
    """Run a Faust worker that applies events to the recommendation state in Redis."""
    from streamrec.topics import ensure_topics

    if state_version is not None:
        os.environ["STREAMREC_STATE_VERSION"] = state_version
        get_settings.cache_clear()
    settings = get_settings()
    asyncio.run(ensure_topics(settings))
    Path(settings.data_dir, "faust").mkdir(parents=True, exist_ok=True)
    from streams.app import app

    # Faust spells two of the levels its own way.
    faust_level = {"warning": "warn", "critical": "crit"}.get(log_level, log_level)
    # --without-web: the worker serves nothing over HTTP (the API does), and two workers on
    # one machine must not fight over Faust's web port.
    sys.argv = [sys.argv[0], "worker", "--loglevel", faust_level, "--without-web"]
    app.main()


@main.command()
@click.option("--workers", default=1, show_default=True, help="API processes.")
def api(workers: int) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    from api.server import BoundedHttpToolsProtocol
    from streamrec.shutdown import ROLE_STOP_SECONDS

    settings = get_settings()
    # Open streams (/metrics/stream) never end by themselves: cut them short on a stop, so
    # the lifespan's own shutdown runs within the role's bound.
    uvicorn.run("api.main:app", host=settings.api_host, port=settings.api_port,
                workers=workers, log_level="warning", access_log=False,
                timeout_graceful_shutdown=int(ROLE_STOP_SECONDS / 2),
                http=BoundedHttpToolsProtocol, timeout_keep_alive=settings.keep_alive_seconds)


@main.command()
@click.option("--rate", default=100.0, show_default=True,
              help="Events per second (0 = as fast as possible).")
@click.option("--events", "count", default=None, type=int,
              help="Stop after this many (default: run forever).")
@click.option("--users", default=1000, show_default=True)
@click.option("--items", default=5000, show_default=True)
@click.option("--categories", default=20, show_default=True)
@click.option("--seed", default=42, show_default=True)
@click.option("--loop-api", default=None, metavar="URL",
              help="Also close the loop: simulated users request lists from this API and "
                   "click what their hidden tastes like.")
@click.option("--loop-rate", default=20.0, show_default=True, help="Loop requests per second.")
@click.option("--placement", default="home", show_default=True, help="Placement the loop asks.")
@click.option("--to-file", "to_file", default=None, metavar="PATH",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Write --events events of --regime to this JSON Lines file instead of "
                   "Kafka: a dataset for `streamrec evaluate` and `streamrec tune`.")
@click.option("--regime", default="stable", show_default=True,
              type=click.Choice(["stable", "sessions", "trending", "longtail"]),
              help="With --to-file: stable tastes, sessions, trending news or a long-tail "
                   "shop (docs/evaluation.md).")
def simulate(
    rate: float, count: int | None, users: int, items: int, categories: int, seed: int,
    loop_api: str | None, loop_rate: float, placement: str, to_file: Path | None,
    regime: str,
) -> None:
    """Produce a synthetic event stream (and its item catalog) into Kafka, or a dataset
    into a file (--to-file)."""
    import threading

    from streamrec.simulator import Simulation, synthetic

    if to_file is not None:
        if count is None:
            raise click.UsageError("--to-file needs --events")
        with to_file.open("wb") as file:
            for event in synthetic(regime, count, seed):
                file.write(orjson.dumps(event) + b"\n")
        click.echo(f"simulate: wrote {count} {regime} events to {to_file}")
        return

    simulation = Simulation(users=users, items=items, categories=categories, seed=seed)
    if loop_api:
        threading.Thread(target=_close_the_loop, args=(simulation, loop_api, loop_rate,
                                                       placement, seed), daemon=True).start()
    sent = asyncio.run(_produce_simulation(simulation, rate, count))
    click.echo(f"simulate: sent {sent} events")


def _close_the_loop(simulation, api: str, rate: float, placement: str, seed: int) -> None:
    import urllib.parse
    import urllib.request

    from streamrec.loop import run_loop

    key = get_settings().client_api_key
    headers = {} if key is None else {"X-API-Key": key}

    def fetch(user: str, where: str) -> dict:
        query = urllib.parse.urlencode({"user_id": user, "placement": where})
        request = urllib.request.Request(f"{api}/recommendations?{query}", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return orjson.loads(response.read())

    def send(events: list[dict]) -> None:
        request = urllib.request.Request(f"{api}/events", data=orjson.dumps(events),
                                         headers={"Content-Type": "application/json", **headers})
        urllib.request.urlopen(request, timeout=10).close()

    while True:
        try:
            run_loop(simulation, fetch, send, 10**9, placement, rate=rate, seed=seed)
        except OSError as error:  # the API restarting, say: wait and go on
            logging.getLogger(__name__).warning("loop: %s; retrying in 2 s", error)
            time.sleep(2)


async def _produce_simulation(simulation, rate: float, count: int | None) -> int:
    from aiokafka import AIOKafkaProducer

    from streamrec.topics import ensure_topics

    settings = get_settings()
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=5)
    await producer.start()
    sent = 0
    try:
        for item in simulation.catalog.items():
            await producer.send(settings.items_topic, orjson.dumps(item),
                                key=item["item_id"].encode())
        await producer.flush()
        started = time.monotonic()
        for event in simulation.events(count, start=time.time()):
            event["timestamp"] = time.time()  # live stream: the event happens now
            await producer.send(settings.events_topic, orjson.dumps(event),
                                key=event["user_id"].encode())
            sent += 1
            if rate > 0 and sent % max(1, int(rate / 20)) == 0:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


@main.command()
@click.option("--run-dir", default=".streamrec", show_default=True,
              type=click.Path(path_type=Path),
              help="Logs, keys and every service's data (the worker's included) go here.")
@click.option("--rate", default=50.0, show_default=True, help="Simulated events per second.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="The API's port (default: STREAMREC_API_PORT, else 8000, else a free one).")
def up(run_dir: Path, rate: float, port: int | None) -> None:
    """Everything locally: Kafka and Redis (unless configured), worker, API and simulator.
    Whatever fails, or on Ctrl-C or SIGTERM, it stops everything it started."""
    from streamrec.local import up as stack

    try:
        stack.run(run_dir, rate, port, click.echo)
    except stack.UpFailed as error:
        raise click.ClickException(str(error)) from None


@main.command()
@click.option("--placement", "placements", multiple=True,
              help="Placements to report (default: every configured one).")
@click.option("--control", default=None, help="The control variant (default: most shown).")
def report(placements: tuple[str, ...], control: str | None) -> None:
    """Print an A/B comparison per placement: rates with 95% intervals, lift, a
    two-proportion test on take-rate and the sample size still needed."""
    from recommender.abtest import NO_EFFECT, placement_report
    from streamrec.redis_client import connect
    from streamrec.redis_feedback import RedisFeedback

    settings = get_settings()
    feedback = RedisFeedback(connect(settings.redis_url, settings.redis_cluster),
                             settings.redis_prefix)
    names = placements or tuple(sorted(feedback.placements()))
    if not names:
        raise click.ClickException("no placement is configured (PUT /admin/placements/NAME)")
    for name in names:
        result = placement_report(feedback.variant_counters(name), control)
        click.echo(f"\nplacement {name} (control: {result['control']})")
        click.echo(f"  {'variant':<16}{'lists':>8}{'clicks':>8}{'CTR':>8}{'take-rate':>11}"
                   f"{'95% CI':>18}{'conv.':>7}")
        for variant, m in result["variants"].items():
            low, high = m["take_rate_interval"]
            click.echo(f"  {variant:<16}{m['impressions']:>8}{m['clicks']:>8}"
                       f"{m['ctr']:>8.2%}{m['take_rate']:>11.2%}"
                       f"{f'[{low:.1%}, {high:.1%}]':>18}{m['conversions']:>7}")
        for variant, c in result["comparisons"].items():
            if c["needed_per_variant"] >= NO_EFFECT:
                click.echo(f"  {variant} vs {result['control']}: no difference observed yet")
                continue
            verdict = "significant" if c["p_value"] < 0.05 else "not significant yet"
            click.echo(f"  {variant} vs {result['control']}: lift {c['lift']:+.1%}, "
                       f"z {c['z']:.2f}, p {c['p_value']:.4f} ({verdict}); "
                       f"{c['still_needed_per_variant']:,} more lists per variant needed "
                       f"to detect this lift at alpha 0.05, power 0.8")


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "data_format", type=click.Choice(["ratings.csv", "u.data", "jsonl"]),
              default=None, help="Default: from the file name.")
@click.option("--k", default=10, show_default=True)
@click.option("--models", default="popular,cooccurrence,mf,hybrid", show_default=True)
@click.option("--baselines", default="ease-daily,river-funkmf", show_default=True,
              help="Comma-separated; empty for none.")
@click.option("--output-dir", default="evaluation", show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
@click.option("--limit", type=int, default=None, help="Only the first N events (by time).")
@click.option("--batch-seconds", default=1.0, show_default=True,
              help="Event time per replayed batch: the freshness being simulated.")
@click.option("--retrain-every", default=86400.0, show_default=True,
              help="Seconds of event time between refits of the batch baseline.")
@click.option("--cold-start", default=5, show_default=True,
              help="Slice out events among their user's (item's) first N.")
def evaluate(path: Path, data_format: str | None, k: int, models: str, baselines: str,
             output_dir: Path, limit: int | None, batch_seconds: float,
             retrain_every: float, cold_start: int) -> None:
    """Prequential evaluation: each model ranks before it learns each event."""
    from streamrec import evaluate as evaluation
    from streamrec.datasets import DatasetError

    try:
        report = evaluation.run(
            path, data_format, k, _names(models), _names(baselines), output_dir, limit,
            batch_seconds, retrain_every, get_settings(), cold_start)
    except (DatasetError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(evaluation.markdown(report))
    click.echo(f"written: {output_dir / 'evaluation.md'}, evaluation.json, evaluation.png")


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "data_format", type=click.Choice(["ratings.csv", "u.data", "jsonl"]),
              default=None, help="Default: from the file name.")
@click.option("--budget", default=600.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds to spend; the current settings are replayed whatever it is.")
@click.option("--fraction", default=0.7, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Share of the events (the earliest) to choose on; the rest scores the "
                   "choice.")
@click.option("--k", default=10, show_default=True, type=click.IntRange(1, 500))
@click.option("--top", default=3, show_default=True, type=click.IntRange(1),
              help="Settings carried on through the rest of the file.")
@click.option("--seed", default=0, show_default=True, help="Order in which settings are tried.")
@click.option("--limit", type=int, default=None, help="Only the first N events (by time).")
def tune(path: Path, data_format: str | None, budget: float, fraction: float, k: int,
         top: int, seed: int, limit: int | None) -> None:
    """Choose half-life, window and hybrid blend for a file of events by prequential
    replay: chosen on its first --fraction, scored on the rest."""
    from tqdm import tqdm

    from streamrec import tune as tuning
    from streamrec.datasets import DatasetError

    settings = get_settings()
    try:
        events, documents = tuning.read(path, data_format, settings, limit)
    except (DatasetError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    with tqdm(unit="event", desc="tune") as bar:
        def total(n: int) -> None:
            bar.total = max(n, bar.n)
            bar.refresh()

        result = tuning.tune(events, documents, settings, budget, fraction, k, top, seed,
                             progress=bar.update, total=total)
    tried = len(result.trials)
    click.echo(f"{tried} learning settings (of a grid of {tuning.LEARNING_GRID}) replayed over "
               f"the first {result.prefix_events:,} events, {len(tuning.BLENDS) + 4} lists "
               f"each; the best {min(top, tried - 1)} and the current ones over the last "
               f"{result.rest_events:,}; {result.seconds:.0f} s.\n")
    click.echo(tuning.table(result))
    click.echo("\nBest on the first events; to use it:\n")
    for name, value in tuning.best_settings(result).items():
        click.echo(f"{name}={value}")


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


@main.command()
@click.option("--events", default=100_000, show_default=True, help="Backlog for the ingest run.")
@click.option("--users", default=10_000, show_default=True)
@click.option("--items", default=10_000, show_default=True)
@click.option("--categories", default=50, show_default=True)
@click.option("--probes", default=100, show_default=True, help="Freshness measurements.")
@click.option("--freshness-rate", default=5000.0, show_default=True,
              help="Background events/s flowing while freshness is probed (0: none).")
@click.option("--duration", default=15, show_default=True, help="Seconds of HTTP load.")
@click.option("--connections", default=16, show_default=True, help="wrk connections.")
@click.option("--models", default="popular,cooccurrence,mf,hybrid", show_default=True,
              help="Models to serve under load, comma-separated.")
@click.option("--serve-rates", default="100,250,500,1000", show_default=True,
              help="Open-loop request rates per model (empty: skip).")
@click.option("--rate-seconds", default=10.0, show_default=True,
              help="Seconds at each open-loop rate.")
@click.option("--budget-ms", default=10.0, show_default=True,
              help="p99 budget: the report names the highest rate that stays in it.")
@click.option("--scale-out", is_flag=True,
              help="Also ingest with 2 workers and serve with 2 API processes.")
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Also write the figures as JSON here.")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None,
              help="Keep logs and data here (default: a temporary directory, removed).")
@click.option("--cover-catalog", is_flag=True,
              help="Start the backlog with one view of every item (a full MF index).")
@click.option("--redis-cluster", is_flag=True,
              help="Run on a local three-node Redis Cluster (or STREAMREC_REDIS_URL's).")
@click.option("--ingest-only", is_flag=True,
              help="Stop after the ingest stage (and Redis memory): no API, no HTTP load.")
def bench(events: int, users: int, items: int, categories: int, probes: int,
          freshness_rate: float, duration: int, connections: int, models: str,
          serve_rates: str, rate_seconds: float, budget_ms: float, scale_out: bool,
          output: Path | None, run_dir: Path | None, cover_catalog: bool,
          redis_cluster: bool, ingest_only: bool) -> None:
    """Measure ingest events/s, freshness, serving latency, Redis memory and scale-out on
    this machine."""
    import uuid

    from streamrec import bench as measure
    from streamrec.simulator import Simulation

    simulation = Simulation(users=users, items=items, categories=categories, seed=7)
    figures: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                     "redis": "cluster of 3" if redis_cluster else "single"}
    model_names = _names(models)
    with measure.stack(run_dir, cluster=redis_cluster) as current:
        if scale_out:
            click.echo(f"ingest: {events} events, two workers in one group ...")
            result = measure.ingest(current, simulation, events, cover=cover_catalog,
                                    workers=2)
            figures["ingest_2_workers"] = vars(result)
            click.echo(f"  two workers applied {result.apply_per_second:,.0f} events/s")
            current.stop_roles()
            current.run_id = uuid.uuid4().hex[:8]  # fresh topics, group and Redis prefix
        click.echo(f"ingest: producing {events} events, then starting one worker ...")
        result = measure.ingest(current, simulation, events, cover=cover_catalog)
        figures["ingest"] = vars(result)
        click.echo(f"  produced {result.produce_per_second:,.0f} events/s; worker applied "
                   f"{result.apply_per_second:,.0f} events/s (Kafka -> Redis, startup "
                   f"{result.startup_seconds:.1f} s excluded)")
        memory = measure.redis_bytes(current)
        figures["redis_memory"] = memory
        click.echo(f"Redis: {memory['bytes_per_user']:,.0f} bytes per user "
                   f"({memory['bytes_per_user'] * 1e6 / 2**30:.2f} GiB per million users), "
                   f"{memory['bytes_per_item']:,.0f} bytes per item")
        if ingest_only:
            _write_figures(output, figures)
            return
        base = measure.start_api(current)
        anchors = [item for item, _ in current.store().popular(50).scores]
        seconds, background = measure.freshness(current, base, anchors, probes, simulation,
                                                freshness_rate)
        figures["freshness_ms"] = {k: v * 1000 for k, v in measure.summarise(seconds).items()}
        figures["freshness_background_events_per_second"] = background
        click.echo(f"freshness (event produced -> visible in GET /recommendations) with "
                   f"{background:,.0f} events/s flowing, ms: " + _format(figures["freshness_ms"]))
        figures["mf_items_in_index"] = len(current.store().changed_items(None)[1])
        rates = [float(rate) for rate in _names(serve_rates)]

        def serving(base: str, suffix: str, processes: str) -> None:
            """wrk (closed loop), then the open-loop rates, per model."""
            figures["serve" + suffix], figures["open_loop" + suffix] = {}, {}
            for model in model_names:
                served = measure.serve(current, base, users, duration, connections, model)
                figures["serve" + suffix][model] = vars(served)
                click.echo(f"GET /recommendations?model={model}, {processes}: "
                           f"{served.requests_per_second:,.0f} req/s with {connections} "
                           f"connections, latency ms: {_format(served.latency_ms)}, "
                           f"errors: {served.errors}")
            for model in model_names if rates else []:
                results = measure.serve_at_rates(base, simulation, rates, rate_seconds, model)
                figures["open_loop" + suffix][model] = [vars(r) for r in results]
                for r in results:
                    click.echo(f"  open loop {model} at {r.rate:g} req/s: {r.answered} "
                               f"answered, errors {r.errors or 'none'}, latency ms: "
                               f"{_format(r.latency_ms)}")
                within = [r.rate for r in results
                          if not r.errors and r.latency_ms.get("p99", 1e9) <= budget_ms]
                click.echo(f"  {model}, {processes}: highest rate with p99 <= {budget_ms:g} "
                           f"ms: {max(within) if within else 'none of ' + serve_rates} req/s")

        serving(base, "", "one API process")
        if scale_out:
            current.roles.pop("api").terminate()
            serving(measure.start_api(current, processes=2), "_2_api_processes",
                    "two API processes")
    _write_figures(output, figures)


def _write_figures(output: Path | None, figures: dict) -> None:
    if output is not None:
        output.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))


def _format(values: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.1f}" for name, value in values.items())



@main.command()
@click.option("--duration", default=300.0, show_default=True, help="Seconds of load.")
@click.option("--event-rate", default=500.0, show_default=True,
              help="Events per second produced into Kafka.")
@click.option("--request-rate", default=100.0, show_default=True,
              help="GET /recommendations per second (open loop).")
@click.option("--interval", default=10.0, show_default=True, help="Seconds per printed row.")
@click.option("--users", default=10_000, show_default=True)
@click.option("--items", default=5_000, show_default=True)
@click.option("--warmup-events", default=5_000, show_default=True,
              help="Events applied before the load starts.")
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Also write the rows and the summary as JSON here.")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None,
              help="Keep logs and data here (default: a temporary directory, removed).")
def soak(duration: float, event_rate: float, request_rate: float, interval: float,
         users: int, items: int, warmup_events: int, output: Path | None,
         run_dir: Path | None) -> None:
    """Hold a fixed event and request rate on a real local stack; print errors, latency and
    memory every interval, then a verdict (exit 1 on any error or growing memory)."""
    from streamrec import soak as soaking

    config = soaking.SoakConfig(duration=duration, event_rate=event_rate,
                                request_rate=request_rate, interval=interval, users=users,
                                items=items, warmup_events=warmup_events)
    try:
        report = soaking.run(config, click.echo, run_dir)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    for line in soaking.summary(report):
        click.echo(line)
    if output is not None:
        output.write_bytes(soaking.as_json(report))
    if not report.passed:
        raise SystemExit(1)


@main.command(name="import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--kind", type=click.Choice(["items", "users", "events"]), default=None,
              help="What the rows are (default: events; items for movielens-movies).")
@click.option("--format", "data_format", default=None,
              type=click.Choice(["csv", "jsonl", "movielens-movies"]),
              help="Default: from the file name (.csv, .jsonl or .ndjson).")
@click.option("--rejects", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write every rejected row here (JSON Lines: line, reason, row).")
@click.option("--show-rejected", default=10, show_default=True,
              help="How many rejected rows to list.")
@click.option("--batch", default=1000, show_default=True, help="Rows per acknowledged batch.")
def import_rows(path: Path, kind: str | None, data_format: str | None, rejects: Path | None,
                show_rejected: int, batch: int) -> None:
    """Validate every row of a CSV or JSON Lines file and send the valid ones to Kafka
    (items and users to their compacted topics, events to the events topic)."""
    from streamrec import importer
    from streamrec.logs import escape

    kind = kind or ("items" if data_format == "movielens-movies" else "events")
    try:
        report = importer.run(path, kind, data_format, get_settings(), rejects, show_rejected,
                              batch)
    except importer.ImportFailed as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"import: {report.read:,} rows read, {report.sent:,} sent (acknowledged by "
               f"Kafka), {report.rejected:,} rejected, in {report.seconds:.1f} s "
               f"({report.read / max(report.seconds, 1e-9):,.0f} rows/s)")
    for row in report.first_rejected:
        click.echo(f"  {escape(str(row))}")  # the reasons quote the file's names
    if report.rejected > len(report.first_rejected):
        click.echo(f"  ... and {report.rejected - len(report.first_rejected):,} more")
    if report.rejected:
        where = f" (all in {rejects})" if rejects else " (--rejects FILE keeps them all)"
        click.echo(f"error: {report.rejected:,} rows were rejected{where}", err=True)
        raise SystemExit(1)


@main.command()
@click.option("--users", "users_file", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Export for these users (one id per line).")
@click.option("--all-users", is_flag=True, help="Export for every user with a history.")
@click.option("--k", default=10, show_default=True, type=click.IntRange(1, 500))
@click.option("--model", default=None, type=click.Choice(["popular", "cooccurrence", "mf",
                                                          "hybrid"]),
              help="Force a model (default: the placement's variant for each user).")
@click.option("--placement", default="default", show_default=True,
              help="Whose allocation chooses each user's variant, as GET /recommendations.")
@click.option("--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSON Lines: one {user_id, variant, model, items} per user.")
@click.option("--version", "state_version", default=None, metavar="NAME",
              help="The model version to rank with (default: the one serving).")
@click.option("--filter", "filter_name", default=None, metavar="NAME",
              help="A filter registered with PUT /admin/filters/NAME.")
@click.option("--filter-values", default=None, metavar="JSON",
              help="The filter's $PARAMETERS as one JSON object.")
@click.option("--chunk", default=1000, show_default=True, type=click.IntRange(1),
              help="Users read, ranked and written at a time (bounds the memory).")
def export(users_file: Path | None, all_users: bool, k: int, model: str | None,
           placement: str, output: Path, state_version: str | None, filter_name: str | None,
           filter_values: str | None, chunk: int) -> None:
    """Write top-k lists for many users, ranked by the API's engine code, to a file."""
    from streamrec import export as exporting

    if (users_file is None) == (not all_users):
        raise click.UsageError("give either --users FILE or --all-users")
    try:
        version, report = exporting.run(get_settings(), output, users_file, k, model,
                                        placement, state_version, filter_name, filter_values,
                                        chunk)
    except exporting.ExportError as error:
        raise click.ClickException(str(error)) from None
    models = ", ".join(f"{name} {count:,}" for name, count in report.models.most_common())
    click.echo(f"export: {report.users:,} users in {report.seconds:.1f} s "
               f"({report.users / max(report.seconds, 1e-9):,.0f} users/s) to {output}; "
               f"version {version}; ranked by: {models or 'nobody'}")


@main.command()
@click.option("--version", "name", required=True, metavar="NAME", help="The new version.")
@click.option("--set", "overrides", multiple=True, metavar="SETTING=VALUE",
              help="A model setting of this version, e.g. --set mf_dim=64 (repeatable).")
@click.option("--from-snapshot", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Start from a snapshot; replay only the log after it.")
def rebuild(name: str, overrides: tuple[str, ...], from_snapshot: Path | None) -> None:
    """Build a model version by replaying the retained events topic into its own
    namespace while the serving version keeps serving."""
    from tqdm import tqdm

    from streamrec import versions

    try:
        changes = versions.parse_overrides(list(overrides))
        with tqdm(unit="event", desc=f"rebuild {name}") as bar:
            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done)

            report = asyncio.run(versions.rebuild(get_settings(), name, changes,
                                                  from_snapshot, progress))
    except versions.VersionError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"rebuild {name}: {report.events:,} events applied, {report.rejected:,} "
               f"rejected, {report.skipped:,} already applied, in {report.seconds:.1f} s; "
               f"offsets {report.offsets}.\nKeep it live with `streamrec worker --version "
               f"{name}`; serve it with `streamrec promote {name}`.")


@main.command()
@click.argument("name")
@click.option("--author", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
def promote(name: str, author: str) -> None:
    """Serve model version NAME (every API process follows within a second)."""
    from streamrec import versions

    try:
        previous = _versions().promote(name, author)
    except versions.VersionError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"serving {name} (was {previous}); `streamrec rollback` goes back")


@main.command()
@click.option("--author", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
def rollback(author: str) -> None:
    """Serve again the version that served before the last promote."""
    from streamrec import versions

    try:
        restored = _versions().rollback(author)
    except versions.VersionError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"serving {restored} again")


@main.group(name="versions", invoke_without_command=True)
@click.pass_context
def versions_group(context: click.Context) -> None:
    """List model versions (the serving one marked *); subcommands delete, log."""
    if context.invoked_subcommand is not None:
        return
    import redis

    from streamrec import keys
    from streamrec.redis_store import RedisStore

    registry = _versions()
    serving = registry.serving()
    for name, version in registry.all().items():
        store = RedisStore(registry.client, registry.prefix(name))
        applied = store.events_applied()
        try:
            factors = registry.client.zcard(store.key(keys.MF_CHANGED))
        except redis.RedisError:
            factors = 0
        click.echo(f"{'*' if name == serving else ' '} {name:<20} {version.status:<9} "
                   f"events {applied:>12,}  items with factors {factors:>9,}  "
                   f"settings {orjson.dumps(version.settings).decode()}")


@versions_group.command(name="delete")
@click.argument("name")
def versions_delete(name: str) -> None:
    """Delete model version NAME and its state (not the serving one)."""
    from streamrec import versions

    try:
        removed = _versions().delete(name)
    except versions.VersionError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"deleted version {name}: {removed:,} keys")


@versions_group.command(name="log")
def versions_log() -> None:
    """Every promote and rollback, newest first."""
    for entry in _versions().log():
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry["at"]))
        click.echo(f"{when}Z {entry['action']:<8} {entry['version']} (was "
                   f"{entry['previous']}) by {entry['author']}")


@main.group()
def snapshot() -> None:
    """Write a version's state, with the offsets it reflects, to a file; load one back."""


@snapshot.command(name="save")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--version", "name", default="main", show_default=True)
def snapshot_save(path: Path, name: str) -> None:
    from tqdm import tqdm

    from streamrec import versions

    registry = _versions()
    version = registry.get(name)
    if version is None:
        raise click.ClickException(f"version {name!r} does not exist")
    with tqdm(unit="key", desc=f"snapshot {name}") as bar:
        header = versions.save_snapshot(registry.client, registry.prefix(name), path,
                                        bar.update, settings=version.settings)
    click.echo(f"snapshot of {name}: {header['keys']:,} keys, offsets {header['offsets']}"
               f" -> {path}")


@snapshot.command(name="restore")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--version", "name", required=True, help="A new version to restore into.")
def snapshot_restore(path: Path, name: str) -> None:
    from tqdm import tqdm

    from streamrec import versions

    registry = _versions()
    try:
        if name == versions.MAIN or registry.get(name) is not None:
            raise versions.VersionError(f"version {name!r} exists: restore into a new name")
        with tqdm(unit="key", desc=f"restore {name}") as bar:
            header = versions.restore_snapshot(registry.client, path, registry.prefix(name),
                                               bar.update)
        registry.register(versions.Version(name, header.get("settings", {})))
    except versions.VersionError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"restored {path} into version {name} (offsets {header['offsets']}); "
               f"`streamrec worker --version {name}` continues from them")


def _versions():
    from streamrec.redis_client import connect
    from streamrec.versions import Versions

    settings = get_settings()
    return Versions(connect(settings.redis_url, settings.redis_cluster),
                    settings.redis_prefix)


if __name__ == "__main__":
    main()
