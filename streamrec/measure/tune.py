"""``streamrec tune``: choose half-life, co-occurrence window and hybrid blend for one's own
event log by prequential replay.

The file's events, in time order, are split at ``fraction`` (the first 70% by default):
every candidate setting is replayed over that prefix, scored the prequential way (each
positive event against the lists the models gave just before they learned it), and the
best few, chosen on the prefix alone, then go on through the rest of the file, whose
Recall@K is the honest figure of what they would do next.

Settings that change what is learned (half-life, window) need a replay each; settings that
only change how the hybrid ranks (its blend) share one: every replay scores all the blends
of :data:`BLENDS` and the single models side by side.

Replays are independent, so ``jobs`` processes replay that many settings at once, in
rounds: a round's settings are proposed together (the search reads the results of the
rounds before it), so for the same ``jobs`` and seed the settings come in the same order
however fast the machine (only how many fit in the budget varies). Each process keeps the
state of the settings it replayed that may go on through the rest of the file, and
carries them on itself.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import random
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path

from recommender.base import MODELS, Interaction
from recommender.engine import HYBRID_PARAMS, Engine
from recommender.evaluation import EngineModels, prequential
from recommender.store import InMemoryStore
from streamrec.measure.evaluate import catalog, load
from streamrec.settings import Settings

# Settings that change what is learned: one replay for each combination tried.
LEARNING: dict[str, tuple[float, ...]] = {
    "decay_half_life_seconds": (3600.0, 86400.0, 7 * 86400.0, 30 * 86400.0,
                                180 * 86400.0, 3650 * 86400.0),
    "cooccurrence_window_seconds": (3600.0, 86400.0, 7 * 86400.0, 30 * 86400.0,
                                    365 * 86400.0),
    "cooccurrence_window": (10, 20, 50),
    "popularity_half_life_seconds": (3600.0, 86400.0, 7 * 86400.0, 365 * 86400.0,
                                     3650 * 86400.0),
}
# Hybrid blends scored side by side in every replay (relative weights; rank constant).
# Four, each costing a fusion per request: the learned weights (recommender.blend) already
# adapt the blend to the stream; these say whether a source is better left out altogether.
BLENDS: dict[str, dict[str, float]] = {
    f"hybrid mf={mf:g} popular={popular:g}": {
        "hybrid_mf": mf, "hybrid_cooccurrence": 1.0, "hybrid_popular": popular}
    for mf, popular in ((0.0, 0.0), (1.0, 0.0), (0.5, 0.25), (2.0, 0.25))
}
SINGLE_MODELS = ("popular", "cooccurrence", "mf")
LEARNING_GRID = len(list(itertools.product(*LEARNING.values())))


@dataclass
class Trial:
    """One learning setting: its Recall@K per list on the prefix, then on the rest."""

    learning: dict[str, float]
    prefix: dict[str, float]
    seconds: float
    rest: dict[str, float] = field(default_factory=dict)

    def best(self) -> tuple[str, float]:
        return max(self.prefix.items(), key=lambda pair: (pair[1], pair[0]))


@dataclass
class Result:
    trials: list[Trial]  # in the order replayed; the first is the current settings
    prefix_events: int
    rest_events: int
    k: int
    seconds: float
    blend: dict[str, float]  # the current settings' hybrid blend (the list "hybrid")


def candidates(current: Mapping[str, float], trials: Sequence[Trial], seed: int = 0
               ) -> Iterator[dict[str, float]]:
    """Learning settings to replay, each once: the current ones; then each setting of
    :data:`LEARNING` in turn through its values, the others held at the best combination
    found so far (``trials`` is read as it grows); then the remaining combinations in a
    random order (seeded).

    >>> current = {"decay_half_life_seconds": 5.0, "cooccurrence_window_seconds": 9.0,
    ...            "cooccurrence_window": 20, "popularity_half_life_seconds": 5.0}
    >>> tried = list(candidates(current, []))
    >>> tried[0] == current, tried[1]["decay_half_life_seconds"], len(tried)
    (True, 3600.0, 469)
    """
    names = list(LEARNING)
    seen: list[dict[str, float]] = []

    def fresh(setting: dict[str, float]) -> bool:
        if setting in seen:
            return False
        seen.append(setting)
        return True

    def best() -> dict[str, float]:
        return max(trials, key=lambda trial: trial.best()[1]).learning if trials else first

    first = {name: current[name] for name in names}
    if fresh(first):
        yield first
    for name in names:
        for value in LEARNING[name]:
            setting = {**best(), name: value}
            if fresh(setting):
                yield setting
    grid = [dict(zip(names, values, strict=True))
            for values in itertools.product(*(LEARNING[name] for name in names))]
    random.Random(seed).shuffle(grid)
    yield from (setting for setting in grid if fresh(setting))


def keep(trials: Sequence[Trial], top: int) -> list[Trial]:
    """The trials whose state is worth keeping: the first (the current settings, always
    reported) and the ``top`` best by their best list's prefix Recall.

    >>> trials = [Trial({"h": h}, {"hybrid": r}, 1.0) for h, r in enumerate([.1, .3, .2, .4])]
    >>> [t.learning["h"] for t in keep(trials, 2)]
    [0, 3, 1]
    """
    ranked = sorted(trials[1:], key=lambda trial: -trial.best()[1])
    return [trials[0], *ranked[:top]] if trials else []


def split(events: Sequence[Interaction], fraction: float
          ) -> tuple[Sequence[Interaction], Sequence[Interaction]]:
    """The first ``fraction`` of the events (in time order) and the rest; events sharing
    the cut's timestamp stay together in the prefix.

    >>> events = [Interaction("u", "i", t, 1.0) for t in (1.0, 2.0, 2.0, 3.0)]
    >>> [len(part) for part in split(events, 0.5)]
    [3, 1]
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction: {fraction!r} must lie between 0 and 1")
    cut = max(1, int(len(events) * fraction))
    while cut < len(events) and events[cut].timestamp == events[cut - 1].timestamp:
        cut += 1
    return events[:cut], events[cut:]


def _models(settings: Settings, learning: Mapping[str, float],
            documents: list[tuple[str, dict]]) -> EngineModels:
    config = settings.model_copy(update=dict(learning)).engine_config()
    store = InMemoryStore(seed=settings.seed)
    store.put_items(documents)
    return EngineModels(Engine(store, config, keep_reads=True), [*SINGLE_MODELS, "hybrid"],
                        BLENDS)


def _recall(models: EngineModels, events: Sequence[Interaction], k: int,
            progress: Callable[[int], None] | None) -> dict[str, float]:
    built = {name: models.model(name) for name in models.names}
    report = prequential(events, built, k=k, progress=progress)
    return {name: totals["recall"] for name, totals in report.totals.items()}


def read(path: Path, format: str | None, settings: Settings, limit: int | None = None
         ) -> tuple[list[Interaction], list[tuple[str, dict]]]:
    """The file's events in time order (a bad line is refused, named) and the catalog
    beside it, if any."""
    events = load(path, format, settings, limit)
    if len(events) < 2:
        raise ValueError(f"{path}: {len(events)} events; tuning needs at least two")
    return events, catalog(path)


def tune(events: Sequence[Interaction], documents: list[tuple[str, dict]],
         settings: Settings, budget: float, fraction: float = 0.7, k: int = 10, top: int = 3,
         seed: int = 0, progress: Callable[[int], None] | None = None,
         total: Callable[[int], None] | None = None, jobs: int = 1) -> Result:
    """Replay as many learning settings over the prefix as ``budget`` seconds allow
    (the current settings always), ``jobs`` at once, then the ``top`` best and the current
    ones over the rest. ``progress(n)`` is told of each batch of ``n`` events replayed;
    ``total(n)`` of the events the whole run is expected to replay."""
    if jobs < 1:
        raise ValueError(f"jobs: {jobs!r} must be at least 1")
    started = time.perf_counter()
    prefix, rest = split(events, fraction)
    current = {name: getattr(settings, name) for name in LEARNING}
    trials: list[Trial] = []
    search = candidates(current, trials, seed)
    replays = _Replays(settings, documents, prefix, rest, k, progress, jobs)
    try:
        while True:
            elapsed = time.perf_counter() - started
            if trials:
                replay = sum(trial.seconds for trial in trials) / len(trials)
                # What the rest of the file costs for the trials kept, in prefix replays.
                finish = replay * len(rest) / len(prefix) * replays.rounds(
                    [trials.index(trial) for trial in keep(trials, top)], top, len(trials))
                if elapsed + replay + finish > budget:
                    break
                if total is not None:
                    planned = min(len(trials) + jobs * int((budget - elapsed - finish) / replay),
                                  LEARNING_GRID)
                    total(len(prefix) * planned + len(rest) * (min(top, planned - 1) + 1))
            # A round's settings are proposed before any of its results is known.
            proposed = list(itertools.islice(search, jobs))
            if not proposed:
                break
            scored = replays.prefix(list(enumerate(proposed, start=len(trials))))
            trials.extend(Trial(dict(learning), recall, seconds)
                          for learning, (recall, seconds) in zip(proposed, scored, strict=True))
            kept = keep(trials, top)
            for number, trial in enumerate(trials):  # the state of one out of the running
                if trial not in kept:                # is let go
                    replays.drop(number)
        kept = keep(trials, top)
        numbers = [trials.index(trial) for trial in kept]
        rests = replays.rest(numbers) if rest else {}
        for number, trial in zip(numbers, kept, strict=True):
            trial.rest = rests.get(number, {})
    finally:
        replays.close()
    blend = {name: getattr(settings, name) for name in HYBRID_PARAMS}
    return Result(trials, len(prefix), len(rest), k, time.perf_counter() - started, blend)


class _Replays:
    """Where the replays run: in this process (``jobs`` 1), or in ``jobs`` processes of
    their own, each keeping the states of the settings it replayed by their number."""

    def __init__(self, settings: Settings, documents: list[tuple[str, dict]],
                 prefix: Sequence[Interaction], rest: Sequence[Interaction], k: int,
                 progress: Callable[[int], None] | None, jobs: int) -> None:
        self.progress = progress
        self.local = _Replayer(settings, documents, prefix, rest, k) if jobs == 1 else None
        self.links: list[Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.home: dict[int, int] = {}  # setting's number -> the process keeping its state
        if self.local is None:
            # Forked: the events and catalog are the parent's pages, not copies sent over.
            context = multiprocessing.get_context("fork")
            for _ in range(jobs):
                ours, theirs = context.Pipe()
                process = context.Process(target=_serve, daemon=True, args=(
                    theirs, _Replayer(settings, documents, prefix, rest, k)))
                process.start()
                theirs.close()
                self.links.append(ours)
                self.processes.append(process)

    def prefix(self, proposed: list[tuple[int, dict[str, float]]]
               ) -> list[tuple[dict[str, float], float]]:
        """Each numbered setting's Recall per list over the prefix, and its seconds."""
        if self.local is not None:
            return [self.local.prefix(number, learning, self.progress)
                    for number, learning in proposed]
        for link, (number, learning) in zip(self.links, proposed, strict=False):
            link.send(("prefix", number, learning))
            self.home[number] = self.links.index(link)
        found = self._collect(len(proposed))
        return [found[number] for number, _ in proposed]

    def rest(self, numbers: list[int]) -> dict[int, dict[str, float]]:
        """The kept settings' Recall per list over the rest (each carried on where its
        state is: a process's several in turn)."""
        if self.local is not None:
            return {number: self.local.rest(number, self.progress) for number in numbers}
        for number in numbers:
            self.links[self.home[number]].send(("rest", number))
        return self._collect(len(numbers))

    def drop(self, number: int) -> None:
        if self.local is not None:
            self.local.states.pop(number, None)
        elif number in self.home:
            self.links[self.home.pop(number)].send(("drop", number))

    def rounds(self, kept: list[int], top: int, tried: int) -> int:
        """How many replays of the rest finishing takes one after another: every kept
        setting's in this process (counting one more, which the next trial may be); the
        busiest process's, at least an even share, in processes."""
        if self.local is not None:
            return min(top, tried) + 1
        busiest = max(Counter(self.home[number] for number in kept).values(), default=0)
        return max(busiest, math.ceil((min(top, tried) + 1) / len(self.links)))

    def _collect(self, expected: int) -> dict[int, object]:
        found: dict[int, object] = {}
        while len(found) < expected:
            for link in wait(self.links):
                try:
                    kind, *body = link.recv()
                except EOFError:
                    process = self.processes[self.links.index(link)]
                    process.join(timeout=5)
                    raise RuntimeError(f"a tune process ended (exit code {process.exitcode}); "
                                       "out of memory? fewer --jobs hold fewer states") from None
                if kind == "progress":
                    if self.progress is not None:
                        self.progress(body[0])
                elif kind == "error":
                    raise RuntimeError(f"a tune process failed:\n{body[0]}")
                else:
                    found[body[0]] = body[1]
        return found

    def close(self) -> None:
        for link in self.links:
            try:
                link.send(("stop",))
            except OSError:  # already gone (it failed, or the run was interrupted)
                pass
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
        self.local = None


@dataclass
class _Replayer:
    """Replays settings over the prefix, then the kept ones over the rest, keeping the
    state of each setting it replayed until it is dropped or carried on."""

    settings: Settings
    documents: list[tuple[str, dict]]
    prefix_events: Sequence[Interaction]
    rest_events: Sequence[Interaction]
    k: int
    states: dict[int, EngineModels] = field(default_factory=dict)

    def prefix(self, number: int, learning: Mapping[str, float],
               progress: Callable[[int], None] | None) -> tuple[dict[str, float], float]:
        began = time.perf_counter()
        models = _models(self.settings, learning, self.documents)
        recall = _recall(models, self.prefix_events, self.k, progress)
        self.states[number] = models
        return recall, time.perf_counter() - began

    def rest(self, number: int, progress: Callable[[int], None] | None) -> dict[str, float]:
        return _recall(self.states.pop(number), self.rest_events, self.k, progress)


def _serve(link: Connection, replayer: _Replayer) -> None:
    """A tune process: replays what it is sent, telling how far it got about every tenth
    of a second."""
    pending = [0, time.monotonic()]

    def progress(n: int) -> None:
        pending[0] += n
        if time.monotonic() - pending[1] >= 0.1:
            link.send(("progress", pending[0]))
            pending[:] = [0, time.monotonic()]

    def flush() -> None:
        if pending[0]:
            link.send(("progress", pending[0]))
            pending[:] = [0, time.monotonic()]

    try:
        while True:
            kind, *body = link.recv()
            if kind == "stop":
                return
            if kind == "drop":
                replayer.states.pop(body[0], None)
            elif kind == "prefix":
                found = replayer.prefix(body[0], body[1], progress)
                flush()
                link.send(("prefix", body[0], found))
            elif kind == "rest":
                found = replayer.rest(body[0], progress)
                flush()
                link.send(("rest", body[0], found))
    except (EOFError, KeyboardInterrupt):  # the parent went away, or was interrupted
        return
    except Exception:
        link.send(("error", traceback.format_exc()))


def _duration(seconds: float) -> str:
    """
    >>> _duration(3600.0), _duration(7 * 86400.0), _duration(90.0)
    ('1 h', '7 d', '90 s')
    """
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def table(result: Result, rows: int = 10) -> str:
    """The best (learning setting, list) pairs by prefix Recall, with their Recall on the
    rest, and the current settings' hybrid for comparison."""
    k = result.k
    lines = [f"| # | half-life | window | window span | popularity half-life | list "
             f"| Recall@{k} first {result.prefix_events:,} events "
             f"| Recall@{k} last {result.rest_events:,} |",
             "|---:|---|---:|---|---|---|---:|---:|"]
    scored = _ranked_lists(result, kept_only=True)
    current = result.trials[0]
    shown: list[tuple[Trial, str, float]] = []
    for trial, name, recall in scored:  # lists that tie on both figures: the first
        if not any(other is trial and recall == other.prefix[shown_name]
                   and trial.rest.get(name) == other.rest.get(shown_name)
                   for other, shown_name, _ in shown):
            shown.append((trial, name, recall))
    shown = shown[:rows]
    # For comparison: the current settings' hybrid, and the best trial's best single model.
    best = shown[0][0] if shown else current
    single = max(SINGLE_MODELS, key=lambda name: best.prefix[name])
    for trial, name in ((current, "hybrid"), (best, single)):
        if not any(shown_trial is trial and shown_name == name
                   for shown_trial, shown_name, _ in shown):
            shown.append((trial, name, trial.prefix[name]))
    for place, (trial, name, recall) in enumerate(shown, start=1):
        learning = trial.learning
        mark = " (current)" if trial is current and name == "hybrid" else ""
        lines.append(
            f"| {place} | {_duration(learning['decay_half_life_seconds'])} "
            f"| {learning['cooccurrence_window']:g} "
            f"| {_duration(learning['cooccurrence_window_seconds'])} "
            f"| {_duration(learning['popularity_half_life_seconds'])} | {name}{mark} "
            f"| {recall:.4f} | {trial.rest.get(name, float('nan')):.4f} |")
    return "\n".join(lines)


def _ranked_lists(result: Result, kept_only: bool = False) -> list[tuple[Trial, str, float]]:
    """Every (trial, list, prefix Recall), best first; on a tie the hybrid (the default
    model, which can follow a deployment's drift) before a single model, the current
    blend before the others."""
    def preference(name: str) -> int:
        return 0 if name == "hybrid" else 1 if name in BLENDS else 2

    rows = [(trial, name, recall) for trial in result.trials
            if trial.rest or not kept_only for name, recall in trial.prefix.items()]
    return sorted(rows, key=lambda row: (-row[2], preference(row[1])))


def best_settings(result: Result) -> dict[str, str]:
    """``STREAMREC_*`` variables for the best list on the prefix."""
    trial, name, _ = _ranked_lists(result)[0]
    chosen: dict[str, float | str] = dict(trial.learning)
    if name in BLENDS or name == "hybrid":
        chosen.update(BLENDS.get(name, result.blend))
        chosen["default_model"] = "hybrid"
    elif name in MODELS:
        chosen["default_model"] = name
    return {f"STREAMREC_{key.upper()}": _value(value) for key, value in chosen.items()}


def _value(value: float | str) -> str:
    """
    >>> _value(315360000.0), _value(0.25), _value("hybrid")
    ('315360000', '0.25', 'hybrid')
    """
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else repr(float(value))
