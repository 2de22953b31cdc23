"""Commands that measure: the A/B report, offline evaluation, tuning, bench and soak."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
import orjson

from recommender.base import MODELS
from streamrec.cli.options import app_option, settings_of
from streamrec.measure.targets import FRESHNESS_LOAD, judge
from streamrec.settings import get_settings

# What evaluate and tune read (streamrec.data.datasets.FORMATS, which a test holds equal).
DATA_FORMATS = ("ratings.csv", "u.data", "ratings.dat", "personalize", "csv", "jsonl")


@click.command()
@click.option("--placement", "placements", multiple=True,
              help="Placements to report (default: every configured one).")
@click.option("--control", default=None, help="The control variant (default: most shown).")
@click.option("--policy", default=None, metavar="FILE_OR_NAME",
              help="Estimate how this allocation would have done, off-policy, from the "
                   "logged lists: a JSON file, JSON text, or current, uniform, bandit, "
                   "greedy or a variant's name (docs/evaluation.md).")
@click.option("--since", default=None, metavar="WHEN",
              help="With --policy: lists served since then (30m, 6h, 7d, epoch seconds, "
                   "RFC 3339); default: all the topics retain.")
@app_option
def report(placements: tuple[str, ...], control: str | None, policy: str | None,
           since: str | None, app_name: str) -> None:
    """Print an A/B comparison per placement: rates with 95% intervals, lift, a
    two-proportion test on take-rate and the sample size still needed. With --policy, the
    off-policy estimate of another allocation from the logged lists instead."""
    from recommender.abtest import NOT_ENOUGH_DATA, UnknownControl, placement_report, with_cards
    from recommender.attribution import ROUTE_PLACEMENTS
    from streamrec.wiring import Wiring

    if policy is not None:
        _policy_report(placements, policy, since, app_name)
        return
    if since is not None:
        raise click.ClickException("--since: only with --policy (the A/B report counts "
                                   "every list since the placement was made)")
    wiring = Wiring.connect(settings_of(app_name), "report")
    feedback = wiring.feedback()
    cards = wiring.model_cards().all()
    # The routes' own placements (/popular, /similar) have one variant, no configuration.
    configured = {**{name: {"variants": [{"name": variant, "model": variant}]}
                     for name, variant in ROUTE_PLACEMENTS.items()},
                  **feedback.placements()}
    names = placements or tuple(sorted(feedback.placements()))
    if not names:
        raise click.ClickException("no placement is configured (PUT /admin/placements/NAME)")
    unknown = [name for name in names if name not in configured]
    if unknown:
        raise click.ClickException(f"no placement named {', '.join(map(repr, unknown))} is "
                                   f"configured; configured: {sorted(configured) or 'none'}")
    for name in names:
        models = {variant["name"]: variant.get("model")
                  for variant in configured[name].get("variants", [])}
        try:
            result = placement_report(feedback.variant_counters(name), control, list(models))
        except UnknownControl as error:
            raise click.ClickException(f"placement {name}: {error}") from None
        with_cards(result, models, cards)
        click.echo(f"\nplacement {name} (control: {result['control']})")
        if configured[name].get("target"):
            click.echo(f"  targeted requests only (target {configured[name]['target']}; the "
                       f"rest get {configured[name].get('default_variant')}): --policy "
                       f"current compares both sides")
        click.echo(f"  {'variant':<16}{'model':<16}{'lists':>8}{'clicks':>8}{'CTR':>8}"
                   f"{'take-rate':>11}{'95% CI':>18}{'conv.':>7}   offline")
        for variant, m in result["variants"].items():
            low, high = m["take_rate_interval"]
            click.echo(f"  {variant:<16}{m['model'] or '':<16}{m['impressions']:>8}"
                       f"{m['clicks']:>8}{m['ctr']:>8.2%}{m['take_rate']:>11.2%}"
                       f"{f'[{low:.1%}, {high:.1%}]':>18}{m['conversions']:>7}   "
                       f"{_offline(m['offline'])}")
        for variant, c in result["comparisons"].items():
            if c["verdict"] == NOT_ENOUGH_DATA or c["needed_per_variant"] is None:
                click.echo(f"  {variant} vs {result['control']}: {c['verdict']}")
                continue
            lift = "n/a" if c["lift"] is None else f"{c['lift']:+.1%}"
            click.echo(f"  {variant} vs {result['control']}: lift {lift}, "
                       f"z {c['z']:.2f}, p {c['p_value']:.4f} ({c['verdict']}); "
                       f"{c['still_needed_per_variant']:,} more lists per variant needed "
                       f"to detect this lift at alpha 0.05, power 0.8")
        outcomes = feedback.outcomes(name)
        if outcomes:
            click.echo("  reward events: " + ", ".join(
                f"{reason} {count:,}" for reason, count in sorted(outcomes.items())))
        click.echo(f"  advice: {result['advice']}")
    wiring.close()


def _offline(offline: dict | None) -> str:
    """A card's offline figures in a few words ("-": a model no card describes)."""
    if offline is None:
        return "-"
    figures = ", ".join(f"{name} {offline[name]:.3f}" for name in ("recall@10", "ndcg@10")
                        if isinstance(offline.get(name), int | float))
    run = f"{offline.get('kind') or 'card'} run {offline.get('run')}"
    return f"{figures or 'no offline metrics'} ({run})"


def _policy_report(placements: tuple[str, ...], policy: str, since: str | None,
                   app_name: str) -> None:
    import asyncio

    from aiokafka.errors import KafkaError

    from recommender.ope import OffPolicyError
    from streamrec.measure.policy_log import parse_since, policy_report
    from streamrec.wiring import Wiring

    if len(placements) != 1:
        raise click.ClickException("--policy: name the one placement to evaluate it on "
                                   "(--placement NAME)")
    try:
        start = parse_since(since)
    except ValueError as error:
        raise click.ClickException(f"--{error}") from None
    document: str | object = policy
    path = Path(policy)
    try:
        if policy.lstrip().startswith("{"):
            document = orjson.loads(policy)
        elif path.suffix == ".json" or path.is_file():
            document = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as error:
        raise click.ClickException(f"--policy: {policy}: {error}") from None
    wiring = Wiring.connect(settings_of(app_name), "report")
    try:
        result = asyncio.run(policy_report(wiring, app_name, placements[0], document, start))
    except (LookupError, OffPolicyError) as error:
        raise click.ClickException(f"--policy: {error}" if isinstance(error, OffPolicyError)
                                   else str(error)) from None
    except (KafkaError, TimeoutError) as error:
        raise click.ClickException(f"Kafka (STREAMREC_KAFKA_BOOTSTRAP) did not answer: "
                                   f"{error!r}") from None
    finally:
        wiring.close()
    click.echo(f"\nplacement {result['placement']}: {result['lists']:,} lists logged")
    for variant, counts in result["variants"].items():
        rate = counts["rewarded"] / counts["lists"] if counts["lists"] else 0.0
        click.echo(f"  {variant:<16}{counts['lists']:>8} lists{counts['rewarded']:>8} rewarded"
                   f"{rate:>9.2%}")

    def line(name: str, estimate: dict) -> str:
        low, high = estimate["interval"]
        return f"  {name:<28}{estimate['value']:>8.2%}   95% CI [{low:.2%}, {high:.2%}]"

    click.echo(f"target: {result['policy']}")
    click.echo(line("logged allocation (measured)", result["logged"]))
    click.echo(line("target, IPS", result["ips"]))
    click.echo(line("target, self-normalised IPS", result["snips"]))
    click.echo(f"  effective sample size {result['effective_sample_size']:,.0f} of "
               f"{result['lists']:,} lists (largest weight {result['largest_weight']:g})")
    click.echo(result["summary"])
    for side, figures in result.get("by_targeting", {}).items():
        low, high = figures["take_rate_interval"]
        click.echo(f"  {side.replace('_', ' ')}: {figures['lists']:,} lists, take-rate "
                   f"{figures['take_rate']:.2%} [{low:.2%}, {high:.2%}]; " + ", ".join(
                       f"{name} {v['take_rate']:.2%} of {v['lists']:,}"
                       for name, v in figures["variants"].items()))


@click.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "data_format", type=click.Choice(DATA_FORMATS), default=None,
              help="Default: from the file name (u.data, *.dat, *.jsonl; a *.csv by its header: "
                   "Amazon Personalize interactions, streamrec events (user_id, ...) or "
                   "MovieLens ratings).")
@click.option("--k", default=10, show_default=True)
@click.option("--models", default=",".join(MODELS), show_default=True,
              help="Comma-separated; ease and ials are served as trained runs, refit every "
                   "--retrain-every seconds of event time (docs/trainer.md).")
@click.option("--baselines", default="ease-daily,river-funkmf", show_default=True,
              help="Comma-separated; empty for none.")
@click.option("--output-dir", default="evaluation", show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
@click.option("--limit", type=int, default=None, help="Only the first N events (by time).")
@click.option("--batch-seconds", default=1.0, show_default=True,
              help="Event time per replayed batch: the freshness being simulated.")
@click.option("--retrain-every", default=86400.0, show_default=True,
              help="Seconds of event time between refits of the batch baseline and of the "
                   "served ease and ials.")
@click.option("--cold-start", default=5, show_default=True,
              help="Slice out events among their user's (item's) first N.")
@click.option("--learn-ahead/--no-learn-ahead", default=True, show_default=True,
              help="The streaming models learn in a second process, ahead of the lists "
                   "(same figures, shorter wall time where there is a second core).")
@app_option
def evaluate(path: Path, data_format: str | None, k: int, models: str, baselines: str,
             output_dir: Path, limit: int | None, batch_seconds: float,
             retrain_every: float, cold_start: int, learn_ahead: bool, app_name: str) -> None:
    """Prequential evaluation: each model ranks before it learns each event (with --app's
    settings: half-life, event weights, hyperparameters)."""
    from streamrec.data.datasets import DatasetError
    from streamrec.measure import evaluate as evaluation

    try:
        report = evaluation.run(
            path, data_format, k, _names(models), _names(baselines), output_dir, limit,
            batch_seconds, retrain_every, settings_of(app_name), cold_start, learn_ahead)
    except (DatasetError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(evaluation.markdown(report))
    timing = orjson.loads((output_dir / "evaluation.json").read_bytes())
    ahead = (f", of which {timing['learning_process_cpu_seconds']:,.0f} s in the learning "
             "process" if timing["learning_process_cpu_seconds"] else "")
    click.echo(f"replay: {timing['seconds']:,.0f} s wall "
               f"({report.events / max(timing['seconds'], 1e-9):,.0f} events/s), "
               f"{timing['cpu_seconds']:,.0f} s of CPU{ahead} "
               f"({report.events / max(timing['cpu_seconds'], 1e-9):,.0f} events/s of CPU)")
    click.echo(f"written: {output_dir / 'evaluation.md'}, evaluation.json, evaluation.png")


@click.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "data_format", type=click.Choice(DATA_FORMATS), default=None,
              help="Default: from the file name (u.data, *.dat, *.jsonl; a *.csv by its header: "
                   "Amazon Personalize interactions, streamrec events (user_id, ...) or "
                   "MovieLens ratings).")
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
@click.option("--jobs", type=click.IntRange(1), default=min(4, os.cpu_count() or 1),
              show_default="the cores, at most 4",
              help="Settings replayed at once, each in a process of its own.")
def tune(path: Path, data_format: str | None, budget: float, fraction: float, k: int,
         top: int, seed: int, limit: int | None, jobs: int) -> None:
    """Choose half-lives, window and hybrid blend for a file of events by prequential
    replay: chosen on its first --fraction, scored on the rest."""
    from tqdm import tqdm

    from streamrec.data.datasets import DatasetError
    from streamrec.measure import tune as tuning

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
                             progress=bar.update, total=total, jobs=jobs)
    tried = len(result.trials)
    click.echo(f"{tried} learning settings (of a grid of {tuning.LEARNING_GRID}) replayed over "
               f"the first {result.prefix_events:,} events, {len(tuning.BLENDS) + 4} lists "
               f"each; the best {min(top, tried - 1)} and the current ones over the last "
               f"{result.rest_events:,}; {result.seconds:.0f} s, {jobs} at once.\n")
    click.echo(tuning.table(result))
    click.echo("\nBest on the first events; to use it:\n")
    for name, value in tuning.best_settings(result).items():
        click.echo(f"{name}={value}")


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


@click.command()
@click.option("--events", default=100_000, show_default=True, help="Backlog for the ingest run.")
@click.option("--users", default=10_000, show_default=True)
@click.option("--items", default=10_000, show_default=True)
@click.option("--categories", default=50, show_default=True)
@click.option("--probes", default=100, show_default=True, help="Freshness measurements.")
@click.option("--probe-interval", type=click.FloatRange(min=0.01), default=0.25,
              show_default=True,
              help="Seconds between two freshness probes' starts (a fixed schedule).")
@click.option("--freshness-rate", type=float, default=None,
              help="Background events/s flowing while freshness is probed (0: none; "
                   "default: 80% of the ingest rate just measured, the target's load).")
@click.option("--duration", default=15, show_default=True, help="Seconds of HTTP load.")
@click.option("--connections", default=16, show_default=True, help="wrk connections.")
@click.option("--models", default=",".join(MODELS), show_default=True,
              help="Models to serve under load, comma-separated.")
@click.option("--serve-rates", default="100,250,500,1000", show_default=True,
              help="Open-loop request rates per model (empty: skip).")
@click.option("--rate-seconds", default=10.0, show_default=True,
              help="Seconds at each open-loop rate.")
@click.option("--budget-ms", default=10.0, show_default=True,
              help="p99 budget: the report names the highest rate that stays in it.")
@click.option("--target-rate", default=1000.0, show_default=True,
              help="The open-loop rate whose p99 is judged against --budget-ms.")
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
@click.option("--warm-up", type=click.IntRange(min=0), default=0, show_default=True,
              help="Events the worker applies before the ingest clock starts: an event "
                   "costs more as the state ages, so --events alone times a young state.")
def bench(events: int, users: int, items: int, categories: int, probes: int,
          probe_interval: float, freshness_rate: float | None, duration: int,
          connections: int, models: str,
          serve_rates: str, rate_seconds: float, budget_ms: float, target_rate: float,
          scale_out: bool, output: Path | None, run_dir: Path | None, cover_catalog: bool,
          redis_cluster: bool, ingest_only: bool, warm_up: int) -> None:
    """Measure ingest events/s, freshness, serving latency, Redis memory and scale-out on
    this machine, with the ceilings they are judged against (a do-nothing Faust agent,
    ``/healthz``), and print each target with PASS or MISS."""
    import uuid

    from streamrec.measure import bench as measure
    from streamrec.percentiles import summarise
    from streamrec.sim.simulator import Simulation

    simulation = Simulation(users=users, items=items, categories=categories, seed=7)
    figures: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                     "redis": "cluster of 3" if redis_cluster else "single"}
    model_names = _names(models)
    default_model = get_settings().default_model  # judged against /healthz, served always
    from streamrec.local.supervisor import code_identity

    figures["code"] = code_identity()
    click.echo(f"code: {figures['code']} (every role runs it)")
    with measure.stack(run_dir, cluster=redis_cluster) as current:
        if scale_out:
            click.echo(f"ingest: {events} events, two workers in one group ...")
            result = measure.ingest(current, simulation, events, cover=cover_catalog,
                                    workers=2, warm_up=warm_up)
            figures["ingest_2_workers"] = vars(result)
            click.echo(f"  two workers applied {result.apply_per_second:,.0f} events/s")
            current.stop_roles()
            current.run_id = uuid.uuid4().hex[:8]  # fresh topics, group and Redis prefix
        warming = f" after {warm_up} untimed ones" if warm_up else ""
        click.echo(f"ingest: producing {events} events{warming}, then starting one worker ...")
        result = measure.ingest(current, simulation, events, cover=cover_catalog,
                                warm_up=warm_up)
        figures["ingest"] = vars(result)
        skipped = "warm-up" if warm_up else "startup"
        click.echo(f"  produced {result.produce_per_second:,.0f} events/s; worker applied "
                   f"{result.apply_per_second:,.0f} events/s (Kafka -> Redis, {skipped} "
                   f"{result.startup_seconds:.1f} s excluded)")
        agent = measure.ingest_ceiling(current, events, warm_up)
        ceiling = figures["ingest_ceiling"] = agent["events_per_second"]
        figures["ingest_ceiling_cpu_us_per_event"] = agent.get("cpu_us_per_event")
        taken = (f"the same backlog after the catalog and {warm_up} untimed events" if warm_up
                 else "the same backlog and catalog")
        click.echo(f"  a do-nothing Faust agent took {taken} at "
                   f"{ceiling:,.0f} events/s "
                   f"(the worker: {result.apply_per_second / ceiling:.0%} of it)")
        for line in _cpu_lines(result.cpu, agent.get("cpu_us_per_event")):
            click.echo(line)
        memory = measure.redis_bytes(current)
        figures["redis_memory"] = memory
        click.echo(f"Redis: {memory['bytes_per_user']:,.0f} bytes per user "
                   f"({memory['bytes_per_user'] * 1e6 / 2**30:.2f} GiB per million users), "
                   f"{memory['bytes_per_item']:,.0f} bytes per item")
        if ingest_only:
            _finish(output, figures, budget_ms, target_rate)
            return
        base = measure.start_api(current)
        anchors = [item for item, _ in current.store().popular(50).scores]
        if freshness_rate is None:
            freshness_rate = FRESHNESS_LOAD * result.apply_per_second
        applied = current.store().events_applied()
        fresh = measure.freshness(current, base, anchors, probes, simulation, freshness_rate,
                                  probe_interval)
        figures["freshness_ms"] = {k: v * 1000 for k, v in summarise(fresh.seconds).items()}
        figures["freshness_background_events_per_second"] = fresh.background_rate
        figures["freshness_polls_shed"] = fresh.shed
        figures["freshness_polls"] = fresh.polls
        figures["freshness_not_visible"] = fresh.unseen
        figures["freshness_probes"] = fresh.started
        figures["freshness_started_at"] = fresh.began_at
        figures["freshness_timeline"] = [[round(at, 3), round(took * 1000, 1)]
                                         for at, took in fresh.timeline]
        click.echo(f"freshness (event produced -> visible in GET /recommendations) with "
                   f"{fresh.background_rate:,.0f} events/s flowing, ms: "
                   + _format(figures["freshness_ms"])
                   + f" (a probe every {probe_interval:g} s, "
                   + f"{fresh.polls / max(1, len(fresh.seconds)):.1f} GETs per probe"
                   + (f", {fresh.shed} shed with 503 on the way)" if fresh.shed else ")"))
        slowest = sorted(fresh.timeline, key=lambda row: -row[1])[:3]
        if slowest:
            click.echo("  slowest probes, started s into the stage: ms: " + "; ".join(
                f"{at:.1f}: {took * 1000:,.0f}" for at, took in slowest))
        if fresh.unseen:
            click.echo(f"  {fresh.unseen} of {fresh.started} probes not visible within "
                       f"{measure.GIVE_UP_SECONDS:g} s, counted as that (a lower bound): the "
                       f"worker fell behind the background rate, so no more were started "
                       f"({probes} asked)")
        waited, drained = measure.drain(current, applied + fresh.produced)
        figures["drain_seconds"] = waited
        click.echo(f"  the worker applied the freshness run's {fresh.produced:,} events "
                   f"{waited:.1f} s after it ended (serving is measured from then on)"
                   if drained else f"  the worker had not applied the freshness run's "
                   f"{fresh.produced:,} events {waited:.0f} s after it ended: serving is "
                   "measured beside its backlog")
        figures["mf_items_in_index"] = len(current.store().changed_items(None)[1])
        rates = [float(rate) for rate in _names(serve_rates)]

        def serving(base: str, suffix: str, processes: str) -> None:
            """wrk (closed loop), then the open-loop rates, per model."""
            figures["serve" + suffix], figures["open_loop" + suffix] = {}, {}
            healthz = measure.serve_healthz(current, base, duration, connections)
            figures["healthz" + suffix] = vars(healthz)
            click.echo(f"GET /healthz, {processes}: {healthz.requests_per_second:,.0f} req/s "
                       f"with {connections} connections (the ceiling), latency ms: "
                       f"{_format(healthz.latency_ms)}")
            for model in [*model_names, *([] if default_model in model_names
                                          else [default_model])]:
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
                               f"{_format(r.latency_ms)}" + (
                                   f"; the 503s took ms: {_format(r.refused_ms)}"
                                   if r.refused_ms else ""))
                within = [r.rate for r in results
                          if not r.errors and r.latency_ms.get("p99", 1e9) <= budget_ms]
                click.echo(f"  {model}, {processes}: highest rate with p99 <= {budget_ms:g} "
                           f"ms: {max(within) if within else 'none of ' + serve_rates} req/s")

        serving(base, "", "one API process")
        if scale_out:
            current.roles.pop("api").terminate()
            serving(measure.start_api(current, processes=2), "_2_api_processes",
                    "two API processes")
    _finish(output, figures, budget_ms, target_rate)


def _finish(output: Path | None, figures: dict, budget_ms: float, target_rate: float) -> None:
    """Print every target the run can judge, with PASS or MISS, and write the figures."""
    targets = judge(figures, get_settings().default_model, budget_ms, target_rate)
    figures["targets"] = [target.as_dict() for target in targets]
    click.echo("\ntargets (issue 17: ratios to ceilings measured in this run):")
    for target in targets:
        click.echo(f"  {target.line()}")
    if output is not None:
        output.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))


def _format(values: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.1f}" for name, value in values.items())



def _cpu_lines(used: dict[str, dict[str, float]], agent_us: float | None,
               machine: int | None = None) -> list[str]:
    """The ingest stage's CPU per timed event, process by process, and the do-nothing
    agent's: where the events spend the ``machine``'s cores (default: this one's).

    >>> print("\\n".join(_cpu_lines({"redis-server": {"us_per_event": 85.0, "cores": 0.7},
    ...                               "kafka": {"us_per_event": 6.5, "cores": 0.05}}, 64.0,
    ...                              machine=2)))
      CPU per timed event: redis-server 85.0 us (0.70 of a core), kafka 6.5 us (0.05); \
all 91.5 us (0.75 cores, 2 cores: at most 21,858 events/s)
      the do-nothing agent's process: 64.0 us per event
    """
    if not used:
        return []
    total = sum(row["us_per_event"] for row in used.values())
    cores = sum(row["cores"] for row in used.values())
    parts = [f"{role} {row['us_per_event']:.1f} us ({row['cores']:.2f}"
             + (" of a core)" if n == 0 else ")")
             for n, (role, row) in enumerate(sorted(used.items(),
                                                     key=lambda kv: -kv[1]["us_per_event"]))]
    machine = machine or os.cpu_count() or 1
    lines = [f"  CPU per timed event: {', '.join(parts)}; all {total:.1f} us ({cores:.2f} "
             f"cores, {machine} cores: at most {machine * 1e6 / max(total, 1e-9):,.0f} "
             f"events/s)"]
    if agent_us is not None:
        lines.append(f"  the do-nothing agent's process: {agent_us:.1f} us per event")
    return lines


@click.command("ingest-ceiling", hidden=True)
@click.option("--events", type=int, required=True, help="Records to take, then stop.")
@click.option("--report", type=click.Path(path_type=Path), required=True,
              help="Where to write the rate (JSON).")
@click.option("--skip", type=click.IntRange(min=0), default=0, show_default=True,
              help="Records taken untimed first (the worker's warm-up).")
def ingest_ceiling(events: int, report: Path, skip: int) -> None:
    """A do-nothing agent on the worker's App over the events topic: the framework's own
    rate, which ``streamrec bench`` compares ingest with."""
    from streams.ceiling import run

    run(get_settings(), events, report, skip)


@click.command()
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
    from streamrec.measure import soak as soaking

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
