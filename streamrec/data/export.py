"""``streamrec export``: top-k lists for many users as JSON Lines, in bounded memory.

Users are taken in chunks, from a file (one id per line) or from the store
(:meth:`~recommender.store.StateStore.user_ids`, a SCAN over the history keys). For each
chunk, what :meth:`Engine.recommend <recommender.engine.Engine.recommend>` will read is
fetched in a few round trips into a :class:`ChunkView`; the engine then runs unchanged
over that view, and each list is written out before the next chunk is read. Memory holds
one chunk of users and the items they touch, never all users or all lists.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from recommender.allocation import read_audience
from recommender.attribution import Impression
from recommender.base import Category, ItemId, Scored, UserId
from recommender.cooccurrence import CodedNeighbours
from recommender.decay import Decayed, ForwardDecay
from recommender.engine import Engine, EngineConfig
from recommender.filters import (
    BoundFilter,
    Filter,
    FilterError,
    RequestFilterError,
    bind_named,
    parse,
)
from recommender.store import FirstRead, ServingReads, read_coded

CHUNK = 1000


class ChunkView:
    """A read-through view of a store for one chunk of users at a time.

    :meth:`prefetch` reads the chunk's histories, the neighbours and normalisers of their
    recent items and their factor vectors in four round trips; whatever the engine asks
    beyond that (a popular list, withdrawal times and documents of candidates, an item
    nobody prefetched) is read from the store once and kept until the next chunk; a
    filter's Interactions conditions read each user's event types from the store. Answers
    equal the store's while the state does not change; a live worker's writes during a
    chunk show up in the next one (normalisers read later in a chunk are brought into the
    frame of those read first, should the worker have rescaled them meanwhile).

    Examples
    --------
    >>> from recommender.store import InMemoryStore, StateUpdate
    >>> store = InMemoryStore()
    >>> store.apply(StateUpdate(200, 200, history={"ann": {"tea": 1.0}}))
    >>> view = ChunkView(store, EngineConfig())
    >>> view.prefetch(["ann", "bob"])
    >>> view.history("ann", 10), view.history("bob", 10)
    ([('tea', 1.0)], [])
    """

    def __init__(self, store: ServingReads, config: EngineConfig) -> None:
        self.store = store
        self.config = config
        self.decay = ForwardDecay(config.half_life, config.epoch)
        self._clear()

    def _clear(self) -> None:
        self._histories: dict[UserId, list[Scored]] = {}
        self._neighbours: dict[ItemId, Decayed[list[Scored]]] = {}
        self._counted: set[ItemId] = set()
        self._counts: dict[ItemId, float] = {}
        self._counts_landmark: float | None = None
        self._factor_users: set[UserId] = set()
        self._user_factors: dict[UserId, np.ndarray] = {}
        self._popular: dict[Category | None, tuple[int, Decayed[list[Scored]]]] = {}
        self._screened_at: float | None = None
        self._withdrawn: dict[ItemId, bool] = {}
        self._documents: dict[ItemId, dict[str, Any] | None] = {}

    def prefetch(self, users: list[UserId]) -> None:
        """Forget the last chunk; read what recommending to ``users`` needs."""
        self._clear()
        self._histories = self.store.histories(users, self.config.history_length)
        recent = {item for history in self._histories.values()
                  for item in [item for item, score in history if score > 0][
                      : self.config.window]}
        self.neighbours(recent, self.config.neighbours_per_item)
        candidates = {other for pairs in self._neighbours.values()
                      for other, _ in pairs.scores}
        self.item_counts(candidates | recent)
        self.user_factors(users)

    def history(self, user_id: UserId, limit: int) -> list[Scored]:
        if user_id in self._histories and limit <= self.config.history_length:
            return self._histories[user_id][:limit]
        return self.store.history(user_id, limit)

    def user_state(self, user_id: UserId, limit: int) -> tuple[list[Scored], np.ndarray | None]:
        return self.history(user_id, limit), self.user_factors([user_id]).get(user_id)

    def first_read(self, user_id: UserId, limit: int, factors: bool = True,
                   popular: int = 0) -> FirstRead:
        # No withdrawal times: screen() keeps the chunk's verdicts, read once per time.
        return FirstRead(self.history(user_id, limit),
                         self.user_factors([user_id]).get(user_id) if factors else None,
                         popular=self.popular(popular) if popular > 0 else None)

    def neighbours(self, item_ids: Iterable[ItemId], limit: int
                   ) -> dict[ItemId, Decayed[list[Scored]]]:
        items = list(item_ids)
        if limit != self.config.neighbours_per_item:
            return self.store.neighbours(items, limit)
        missing = [item for item in items if item not in self._neighbours]
        if missing:
            self._neighbours.update(self.store.neighbours(missing, limit))
        return {item: self._neighbours[item] for item in items}

    def neighbour_arrays(self, item_ids: Iterable[ItemId], limit: int) -> CodedNeighbours:
        return read_coded(self, item_ids, limit)

    def item_counts(self, item_ids: Iterable[ItemId]) -> Decayed[dict[ItemId, float]]:
        def read(missing: list[ItemId]) -> dict[ItemId, float]:
            counts, landmark = self.store.item_counts(missing)
            if not self._counted:
                self._counts_landmark = landmark
            elif landmark != self._counts_landmark:  # rescaled since: one frame for all
                older = self.decay.ratio(self._counts_landmark, landmark)
                for item in self._counts:
                    self._counts[item] *= older
                self._counts_landmark = landmark
            return counts

        found = _read_through(item_ids, self._counted, self._counts, read)
        return Decayed(found, self._counts_landmark)

    def user_factors(self, user_ids: Iterable[UserId]) -> dict[UserId, np.ndarray]:
        return _read_through(user_ids, self._factor_users, self._user_factors,
                             self.store.user_factors)

    def popular(self, k: int, category: Category | None = None) -> Decayed[list[Scored]]:
        # The top k of a sorted set is the head of any longer top list read from it.
        read, ranked = self._popular.get(category, (0, Decayed([], None)))
        if k > read:
            read = max(k, 2 * read, 256)
            ranked = self.store.popular(read, category)
            self._popular[category] = (read, ranked)
        return Decayed(ranked.scores[:k], ranked.landmark)

    def screen(self, item_ids: Iterable[ItemId], now: float, documents: bool = False
               ) -> tuple[set[ItemId], dict[ItemId, dict[str, Any]]]:
        items = list(item_ids)
        if now != self._screened_at:  # verdicts hold for one time only
            self._screened_at = now
            self._withdrawn.clear()
            self._documents.clear()
        missing = [item for item in items if item not in self._withdrawn
                   or (documents and item not in self._documents)]
        if missing:
            withdrawn, found = self.store.screen(missing, now, documents)
            self._withdrawn.update((item, item in withdrawn) for item in missing)
            if documents:
                self._documents.update((item, found.get(item)) for item in missing)
        withdrawn = {item for item in items if self._withdrawn[item]}
        found = {}
        if documents:
            found = {item: document for item in items
                     if (document := self._documents.get(item)) is not None
                     and item not in withdrawn}
        return withdrawn, found

    def __getattr__(self, name: str) -> Any:
        # Everything else (item factors for the engine's refresh, catalog lookups) is the
        # store's own answer.
        if name == "store":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.store, name)


def _read_through(ids: Iterable[str], asked: set[str], found: dict[str, Any], read
                  ) -> dict[str, Any]:
    """``read`` the ids not ``asked`` before (its answer leaves out ids without a value);
    returns the values of ``ids`` that have one."""
    wanted = list(ids)
    missing = [i for i in wanted if i not in asked]
    if missing:
        found.update(read(missing))
        asked.update(missing)
    return {i: found[i] for i in wanted if i in found}


def chunks(ids: Iterable[UserId], size: int = CHUNK) -> Iterator[list[UserId]]:
    iterator = iter(ids)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def read_users(file: IO[str]) -> Iterator[UserId]:
    """One id per line; surrounding whitespace and blank lines are ignored."""
    for line in file:
        user = line.strip()
        if user:
            yield user


@dataclass
class ExportReport:
    users: int = 0
    seconds: float = 0.0
    models: Counter[str] = field(default_factory=Counter)


def export(engine: Engine, view: ChunkView, users: Iterable[UserId], output: IO[bytes], k: int,
           choose, now: float, item_filter: BoundFilter | None = None, chunk: int = CHUNK,
           progress=lambda _: None, placement: str = "default",
           record_impressions=lambda _: None) -> ExportReport:
    """Write one line per user to ``output``: ``{"recommendation_id", "user_id", "variant",
    "model", "items": [{"item_id", "score", "backfill"}]}``. ``engine`` reads through ``view``;
    ``choose(user)`` answers ``(variant name, model, params, allocated)`` and may add the
    allocation's decision (logged with the impression, as the API logs it); every list is
    ranked as of ``now``. Each chunk's lists are handed to ``record_impressions`` (a list
    of :class:`~recommender.attribution.Impression`, shown on ``placement`` at ``now``)
    before its lines are written, so every id in the file is known to attribution."""
    report = ExportReport()
    started = time.monotonic()
    for users_in_chunk in chunks(users, chunk):
        view.prefetch(users_in_chunk)
        engine.refresh()  # item factors changed since the last chunk, as the API refreshes
        lines, shown = [], []
        for user in users_in_chunk:
            variant, model, params, allocated, *decision = choose(user)
            result = engine.recommend(user, k, now, model, params, item_filter)
            report.models[result.model] += 1
            recommendation_id = uuid.uuid4().hex
            shown.append(Impression(recommendation_id, user, placement, variant, result.model,
                                    tuple(item for item, _ in result.items), now, allocated,
                                    decision[0] if decision else None))
            lines.append(orjson.dumps({
                "recommendation_id": recommendation_id,
                "user_id": user, "variant": variant, "model": result.model,
                "items": [{"item_id": item, "score": score,
                           "backfill": item in result.backfill}
                          for item, score in result.items],
            }))
        record_impressions(shown)
        output.write(b"\n".join(lines) + b"\n")
        report.users += len(users_in_chunk)
        progress(len(users_in_chunk))
    report.seconds = time.monotonic() - started
    return report


class ExportError(ValueError):
    """An export that cannot start (unknown version or filter); ``str()`` says why."""


def bind_filter(client, settings, name: str | None, values: str | None) -> BoundFilter | None:
    """The registered filter ``name`` bound to ``values`` (a JSON object of its
    $PARAMETERS), as ``GET /recommendations?filter=&filter_values=`` binds it."""
    from streamrec.wiring import Wiring

    definitions = Wiring(settings, client).filter_definitions()

    def lookup(filter_name: str) -> Filter | None:
        definition = definitions.get(filter_name)
        return None if definition is None else parse(definition["expression"])

    try:
        return bind_named(name, values, lookup)
    except RequestFilterError as error:
        raise ExportError(f"--{error.parameter.replace('_', '-')}: {error}") from None
    except FilterError as error:  # a definition stored by an older parser
        raise ExportError(f"--filter: {name!r}: {error}") from None


def run(settings, output: Path, users_file: Path | None, k: int, model: str | None,
        placement: str, version: str | None = None, filter_name: str | None = None,
        filter_values: str | None = None, chunk: int = CHUNK,
        show_progress: bool | None = None, now: float | None = None
        ) -> tuple[str, ExportReport]:
    """Export for the users in ``users_file``, or every user with a history when None, from
    model ``version`` (default: the one serving). ``model`` forces a model; otherwise
    ``placement``'s allocation chooses per user, as ``GET /recommendations`` does (a bandit
    draws, so a bandit placement's export is one draw per user). ``show_progress=None``
    shows a bar on a terminal only. Returns the version and the report."""
    from tqdm import tqdm

    from streamrec.wiring import Wiring

    base = Wiring.connect(settings, "export", socket_timeout=30)
    try:
        registry = base.versions()
        version = version or registry.serving()
        known = registry.get(version)
        if known is None:
            raise ExportError(f"version: {version!r} does not exist (streamrec versions)")
        wiring = base.for_version(version, known)
        store = wiring.store()
        view = ChunkView(store, wiring.settings.engine_config())
        engine = wiring.engine(view)  # the view answers the engine's reads
        item_filter = bind_filter(base.client, settings, filter_name, filter_values)
        allocation = base.allocation()
        if model is None:
            allocation.refresh()

        # What the placement's allocation looks at (targeting, segments, context features),
        # read through the view as the API reads it; the export's lists carry no context.
        reads = allocation.reads(placement) if model is None else frozenset()

        def choose(user: UserId) -> tuple[str, str, dict[str, float], bool, Any]:
            audience = read_audience(view, reads, user, {}, now)
            choice = allocation.choose_for(placement, user, model, audience)
            return (choice.variant, choice.model, dict(choice.params), choice.allocated,
                    choice.decision)

        # Straight into the feedback store, through the attributor the worker's impressions
        # agent uses (same counting, same expiry): a chunk's ids are known before its lines
        # are written, whether or not a worker runs.
        attributor = base.attributor()

        total = None
        if users_file is not None:
            with users_file.open() as file:
                total = sum(1 for _ in read_users(file))
        now = time.time() if now is None else now
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(output.open("wb"))
            bar = stack.enter_context(tqdm(total=total, unit=" users", desc="export",
                                           disable=None if show_progress is None
                                           else not show_progress))
            users = (store.user_ids() if users_file is None
                     else read_users(stack.enter_context(users_file.open())))
            return version, export(
                engine, view, users, out, k, choose, now, item_filter, chunk, bar.update,
                placement, lambda shown: attributor.record_impressions(shown, time.time()))
    finally:
        base.close()
