"""``streamrec evaluate``: run the prequential evaluation on a dataset and write a
Markdown table, JSON and a PNG of recall over time."""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path

from tqdm import tqdm

from recommender.base import BATCH_MODELS, MODELS, Interaction
from recommender.baselines import PeriodicEASE, RiverFunkMF
from recommender.batch_models import FreshBlend, ScheduledRuns
from recommender.engine import Engine
from recommender.evaluation import MAX_BATCH, EngineModels, Report, prequential
from recommender.store import InMemoryStore
from streamrec.data.datasets import read
from streamrec.measure.ahead import learning_ahead
from streamrec.settings import Settings

BASELINES = ("ease-daily", "river-funkmf")


def load(path: Path, format: str | None, settings: Settings, limit: int | None
         ) -> list[Interaction]:
    weights = settings.weights()
    events = []
    for raw in read(path, format, weights):
        events.append(Interaction(raw.user_id, raw.item_id, raw.timestamp,
                                  weights.weight(raw.event_type, raw.value)))
    events.sort(key=lambda event: event.timestamp)  # stable: file order breaks ties
    return events[:limit] if limit else events


def catalog(path: Path) -> list[tuple[str, dict]]:
    """Item documents for a dataset: MovieLens' movies.csv beside its ratings.csv, or
    movies.dat beside the ratings.dat of the 1M and 10M sets (titles and genres), read as
    ``streamrec import`` reads them, so content similarity can work for items nobody rated
    yet. Raises ValueError naming the file and line of a row it cannot read."""
    from schemas.models import Item
    from streamrec.data.importer import ImportFailed, Lines, read_csv, read_movies_dat

    name = {"ratings.csv": "movies.csv", "ratings.dat": "movies.dat"}.get(path.name)
    movies = path.with_name(name) if name else None
    if movies is None or not movies.exists():
        return []
    documents = []
    with movies.open("rb") as file:
        rows = (read_movies_dat(Lines(file, fallback="latin-1")) if movies.suffix == ".dat"
                else read_csv(Lines(file), Item, movielens=True))
        try:
            for line, _, document in rows:
                if isinstance(document, str):
                    raise ValueError(f"{movies}:{line}: {document}")
                documents.append((document["item_id"], document))
        except ImportFailed as error:
            raise ValueError(f"{movies}: {error}") from None
    return documents


def build(models: list[str], baselines: list[str], settings: Settings,
          retrain_every: float, documents: list[tuple[str, dict]] = ()) -> dict:
    # The exact model code the worker runs, on the in-memory store (decayed state keeps
    # its own landmarks, so any dataset's dates work as they are).
    config = settings.engine_config()
    store = InMemoryStore(seed=settings.seed)
    store.put_items(documents)  # the catalog exists before anyone rates it
    engine = Engine(store, config, keep_reads=True)  # it asks, then learns: one read
    # ease and ials are served as the API serves them: runs trained on a schedule (every
    # retrain_every seconds of event time, on everything so far), ranked by the engine
    # from each user's current history, screened and backfilled like the others.
    trained = [name for name in models if name in BATCH_MODELS]
    learners = []
    if trained:
        schedule = ScheduledRuns(
            {name: settings.trainer_hyperparameters(name) for name in trained},
            retrain_every, {name: settings.trainer_item_cap(name) for name in trained})
        engine.external_models = fresh_blended(schedule, settings.trained_fresh_weight)
        learners.append(schedule)
    group = EngineModels(engine, models, learners=learners)
    built = {name: group.model(name) for name in models}
    for name in baselines:
        if name == "ease-daily":
            built[name] = PeriodicEASE(retrain_every=retrain_every)
        elif name == "river-funkmf":
            built[name] = RiverFunkMF(seed=settings.seed)
        else:
            raise ValueError(f"baseline {name!r} is not one of {list(BASELINES)}")
    return built


def settle() -> None:
    """Before a replay: what was loaded (the events, the catalog) lives as long as it, so
    the cyclic garbage collector is told not to walk it again on every full collection
    (``gc.freeze``): 6-15% less CPU over ml-latest-small's first 40,000 ratings in three
    pairs of runs (docs/evaluation.md)."""
    gc.collect()
    gc.freeze()


def fresh_blended(schedule: ScheduledRuns, weight: float):
    """The schedule's runs as the API serves them: with STREAMREC_TRAINED_FRESH_WEIGHT > 0,
    each fused with co-occurrence (:class:`FreshBlend`)."""
    if weight <= 0:
        return schedule

    def resolve(model: str) -> FreshBlend | None:
        run = schedule(model)
        return None if run is None else FreshBlend(run, weight)

    return resolve


def run(path: Path, format: str | None, k: int, models: list[str], baselines: list[str],
        output: Path, limit: int | None, batch_seconds: float, retrain_every: float,
        settings: Settings | None = None, cold_start: int = 5, learn_ahead: bool = True
        ) -> Report:
    settings = settings or Settings()
    unknown = set(models) - set(MODELS + BATCH_MODELS)
    if unknown:
        raise ValueError(f"models: {sorted(unknown)} are not among {list(MODELS + BATCH_MODELS)}")
    events = load(path, format, settings, limit)
    if not events:
        raise ValueError(f"{path}: no events")
    built = build(models, baselines, settings, retrain_every, catalog(path))
    settle()
    started, cpu_started = time.perf_counter(), time.process_time()
    # Learning ahead forks before the progress bar starts its thread.
    with learning_ahead(built, events, batch_seconds, MAX_BATCH, learn_ahead) as ahead, \
            tqdm(total=len(events), unit="event", desc="prequential") as bar:
        report = prequential(events, built, k=k, batch_seconds=batch_seconds,
                             max_batch=MAX_BATCH, progress=bar.update, cold_start=cold_start)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    write(report, output, path, elapsed, batch_seconds, retrain_every,
          cpu + ahead.cpu_seconds, ahead.cpu_seconds)
    return report


def markdown(report: Report) -> str:
    k, n = report.k, report.cold_start
    lines = [f"| model | Recall@{k} | NDCG@{k} | MRR@{k} | Recall@{k} (known users) "
             f"| Recall@{k} users' first {n} | Recall@{k} items' first {n} "
             "| coverage | s recommending | s learning |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, t in sorted(report.totals.items(), key=lambda pair: -pair[1]["recall"]):
        lines.append(f"| {name} | {t['recall']:.4f} | {t['ndcg']:.4f} | {t['mrr']:.4f} "
                     f"| {t['recall_known_users']:.4f} | {t['recall_cold_users']:.4f} "
                     f"| {t['recall_cold_items']:.4f} | {t['coverage']:.3f} "
                     f"| {_seconds(t, 'seconds_recommending')} "
                     f"| {_seconds(t, 'seconds_learning')} |")
    if any(t.get("time_shared_by", 1) > 1 for t in report.totals.values()):
        lines.append("\nSeconds marked \"of N\" are one engine's, ranking one request's lists "
                     "and learning each batch for N models at once: together, not each.")
    if report.totals:
        first = next(iter(report.totals.values()))
        lines.append(f"\nCold-start slices: {first['events_cold_users']:,} scored events "
                     f"were among their user's first {n}, {first['events_cold_items']:,} "
                     f"among their item's first {n}.")
    return "\n".join(lines)


def _seconds(totals: dict[str, float], key: str) -> str:
    shared = int(totals.get("time_shared_by", 1))
    return f"{totals[key]:.1f}" + (f" of {shared}" if shared > 1 else "")


def write(report: Report, output: Path, source: Path, elapsed: float, batch_seconds: float,
          retrain_every: float, cpu: float, learning_cpu: float = 0.0) -> None:
    """The table, the JSON and the plot. CPU time (every thread of this process, and the
    learning process's, ``learning_cpu``, when learning ran ahead) is the fairer speed on a
    shared machine, where the wall clock also counts other jobs."""
    output.mkdir(parents=True, exist_ok=True)
    ahead = (f", {learning_cpu:.0f} s of it learning ahead in a second process"
             if learning_cpu else "")
    header = (f"Prequential evaluation of `{source.name}`: {report.events} events, "
              f"{report.positives} positives scored, {report.batches} batches of "
              f"{batch_seconds:g} s event time; EASE (and served ease, ials) refit every "
              f"{retrain_every:g} s; "
              f"{elapsed:.0f} s wall time ({report.events / max(elapsed, 1e-9):,.0f} "
              f"events/s), {cpu:.0f} s of CPU{ahead} "
              f"({report.events / max(cpu, 1e-9):,.0f} events/s of CPU).\n\n")
    (output / "evaluation.md").write_text(header + markdown(report) + "\n")
    (output / "evaluation.json").write_text(json.dumps({
        "k": report.k, "cold_start": report.cold_start, "events": report.events,
        "positives": report.positives,
        "batches": report.batches, "seconds": elapsed, "cpu_seconds": cpu,
        "learning_process_cpu_seconds": learning_cpu, "totals": report.totals,
        "over_time": report.over_time}, indent=2))
    plot(report.over_time, list(report.totals), report.k, source.name,
         output / "evaluation.png")


def plot(over_time: list[dict], names: list[str], k: int, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 4.5))
    for name in names:
        axis.plot([row["events"] for row in over_time], [row[name] for row in over_time],
                  label=name, marker=".")
    axis.set_xlabel("events replayed")
    axis.set_ylabel(f"Recall@{k} in the interval")
    axis.set_title(f"Prequential Recall@{k}: {title}")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
