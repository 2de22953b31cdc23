"""Learn from a batch, answer a request: the model code the worker, the API and the
offline evaluation all run, over any :class:`~recommender.store.StateStore`."""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from itertools import filterfalse, islice
from operator import itemgetter
from typing import Protocol, TypeVar

import numpy as np

from recommender import screening
from recommender.availability import Withdrawals
from recommender.base import (
    BATCH_MODELS,
    Category,
    Interaction,
    ItemId,
    Scored,
    UserId,
    check_model,
)
from recommender.blend import HYBRID, SOURCES, TALLY_K, Tally, count_hits, fuse
from recommender.content import ContentIndex
from recommender.cooccurrence import CodedNeighbours, CoOccurrence
from recommender.decay import Decayed, ForwardDecay
from recommender.filters import BoundFilter
from recommender.hyperparameters import EngineConfig
from recommender.mf import ItemFactorIndex, OnlineBPR
from recommender.once import Claim
from recommender.popularity import DecayedPopularity
from recommender.screening import Screen
from recommender.store import Cursor, StateStore, StateUpdate, top

# A ranking read in rounds: rank(n) -> the best n (see recommender.screening.take).
Ranking = Callable[[int], list[Scored]]



class ExternalModel(Protocol):
    """A model ranked outside the stream: a scheduled training run (``ease``, ``ials``)
    or a set of lists a batch job made (``lists:NAME``), plugged into an engine through
    :attr:`Engine.external_models`.

    ``rank(reads, n)`` gives the user's best ``n`` given what the request read (the
    history, co-occurrence candidates...: :class:`Reads`), or None when it has no list for
    this user; the engine screens it (seen items, filters, availability) like any other.
    A model with a ``fallback`` attribute (a model name, or None) has the user it has no
    list for ranked by that model instead, which the result then names. A model with a
    ``similar(item_id)`` method (a set of similar-item lists) ranks an item's similar
    items: its list, or None when it has none.
    """

    def rank(self, reads: Reads, n: int) -> list[Scored] | None: ...


HYBRID_PARAMS = ("hybrid_mf", "hybrid_cooccurrence", "hybrid_popular", "hybrid_ease",
                 "hybrid_ials", "hybrid_rank_constant")


@dataclass(frozen=True)
class Recommendations:
    """A ranked list and the model that produced it.

    ``backfill`` holds the items that are not ``model``'s own: popular items (or, for
    similar items, content neighbours) that fill a list the model could not make ``k``
    long. They come after the model's items and score 0.
    """

    model: str
    items: list[Scored]
    backfill: frozenset[ItemId] = frozenset()


class Engine:
    """Co-occurrence and popularity over a store.

    Examples
    --------
    >>> from recommender.store import InMemoryStore
    >>> engine = Engine(InMemoryStore(), EngineConfig())
    >>> _ = engine.learn_many([
    ...     Interaction("ann", "tea", 1.0, 1.0), Interaction("ann", "cup", 2.0, 1.0),
    ...     Interaction("bob", "tea", 3.0, 1.0),
    ... ])
    >>> result = engine.recommend("bob", k=2, now=3.0)
    >>> result.model, [item for item, _ in result.items]
    ('cooccurrence', ['cup'])
    >>> engine.recommend("new user", k=1, now=3.0).model
    'popular'
    """

    def __init__(self, store: StateStore, config: EngineConfig, keep_reads: bool = False
                 ) -> None:
        """``keep_reads``: keep what the last requests read for the batch learned next, as
        an offline replay wants, which asks for lists and then learns on one engine. A
        serving engine never learns here: the reads it kept would only be freed 256 at a
        time, each with its neighbour lists and MF scores (about 160 KB for a hybrid
        request on 100,000 items: a 35-45 ms pause of its process per 256 requests, and
        a fifth more CPU per request; docs/benchmarks.md)."""
        self.store = store
        self.config = config
        self.keep_reads = keep_reads
        decay = ForwardDecay(config.half_life, config.epoch)
        self.decay = decay
        self.cooccurrence = CoOccurrence(config.window, config.window_seconds, decay)
        self.popularity_decay = ForwardDecay(config.popularity_half_life or config.half_life,
                                             config.epoch)
        self.popularity = DecayedPopularity(self.popularity_decay)
        self.mf = OnlineBPR(config.mf_dim, config.mf_learning_rate, config.mf_regularization,
                            config.mf_negatives, seed=config.seed, max_norm=config.mf_max_norm)
        # The serving copy of the item factors: filled on first use, then kept fresh by
        # refresh() (the API's background task) or by learn_many in the same process.
        self.item_index = ItemFactorIndex()
        self._refreshing = threading.Lock()
        # The serving copy of the catalog's content (cold start), kept fresh the same way.
        self.content = ContentIndex()
        self._content_cursor: Cursor | None = None
        self._created: dict[ItemId, float] = {}  # item -> created_at, for exploration
        self._new_items_cache: tuple[object, list[ItemId]] = (None, [])
        self._catalog_changes = 0  # refreshes that read documents
        # The blend's tally as last read (refresh(), and after each batch learned here).
        self.tally = Tally({}, config.hybrid_learning_exponent)
        self._tally_credit = 0.0  # positive events owed to the tally (hybrid_learning_share)
        # What this engine's last requests read, by (user, time), with keep_reads: a batch
        # learned next tries the sources on the same state, which an offline replay has
        # just read.
        self._recent_reads: dict[tuple[UserId, float], _Reads] = {}
        # Models ranked outside the stream (BATCH_MODELS, lists:NAME): the model's name ->
        # its current ranker, or None when there is none (no run trained, no set imported).
        self.external_models: Callable[[str], ExternalModel | None] | None = None

    def learn_many(
        self, interactions: Sequence[Interaction], offsets: Mapping[str, int] | None = None,
        events: int | None = None, claims: Sequence[Claim] = (), duplicates: int = 0,
        waiting_feedback: Sequence[tuple[str, float]] = (), tally: bool = True,
    ) -> StateUpdate:
        """Apply a batch, in order, as one atomic store update, together with the source
        ``offsets`` it brings the state up to (``"topic:partition" -> offset``). ``events``
        counts the batch's events when some of them were applied already.

        ``claims`` are the batch's event ids (:mod:`recommender.once`): the store raises
        :class:`~recommender.once.DuplicateEvents`, having written nothing, when one repeats
        an id; ``duplicates`` counts the records already left out as such.
        ``waiting_feedback`` is written with the state (:class:`StateUpdate`).

        Without ``tally`` the blend's trials are left out of the update (nothing else in it
        depends on them): an engine applying it elsewhere tries them on its own state
        (:meth:`apply_learned`)."""
        # On the state before the batch.
        blend = self._try_sources(interactions) if tally else {}
        users = {event.user_id for event in interactions}
        items = {event.item_id for event in interactions}
        windows = self.store.windows(users, self.config.window)
        categories = self.store.item_categories(items)
        # The batch's frame: increments are decayed to its latest event (each at most its
        # weight); the store moves them into each key's frame.
        reference = max((event.timestamp for event in interactions), default=0.0)
        pairs = self.cooccurrence.learn_many(interactions, windows, reference)
        popularity = self.popularity.learn_many(interactions, categories, reference)
        factors = self._learn_factors(interactions)
        update = StateUpdate(
            history_length=self.config.history_length,
            max_neighbours=self.config.max_neighbours,
            popularity=popularity.overall,
            category_popularity=popularity.by_category,
            item_counts=pairs.item_counts,
            pairs=pairs.pairs,
            history=pairs.history,
            user_factors=factors.users,
            item_factors=factors.items,
            events=len(interactions) if events is None else events,
            offsets=offsets or {},
            event_types=_event_types(interactions),
            reference=reference,
            half_life=self.config.half_life,
            epoch=self.config.epoch,
            popularity_half_life=self.config.popularity_half_life,
            blend=blend,
            blend_memory=self.config.hybrid_learning_memory,
            claims=claims,
            duplicates=duplicates,
            waiting_feedback=waiting_feedback,
        )
        self.apply_learned(update)
        return update

    def apply_learned(self, update: StateUpdate, trials: Sequence[Interaction] | None = None
                      ) -> None:
        """Apply ``update``, what :meth:`learn_many` learned from a batch, to the store and
        to what this engine keeps of it: the second half of :meth:`learn_many`. An engine
        on a copy of the state (an offline replay's, whose learning runs ahead in another
        process) applies the updates the other learned, in order, and ends as it does.
        Given the batch as ``trials`` (its update learned without ``tally``), the blend's
        sources are tried first, on this engine's state, where its requests may have just
        read them (every batch's trials in one engine: the share tried carries over)."""
        if trials is not None:
            update = dataclasses.replace(update, blend=self._try_sources(trials))
        self.store.apply(update)
        self._recent_reads.clear()
        if update.blend:
            self.tally = Tally(self.store.blend_tally(), self.config.hybrid_learning_exponent)
        if self.item_index.cursor is not None:
            self.item_index.upsert(update.item_factors)

    def _try_sources(self, interactions: Sequence[Interaction]) -> dict[str, int]:
        """The blend's tally of this batch: for a ``hybrid_learning_share`` of its positive
        events (at most ``hybrid_learning_sample``, evenly spread over the batch) of users
        with a history, which sources ranked the event's item in their top few just before
        it.

        The share is a rate per event, carried across batches, so a replay's many small
        batches try as many events as a worker's few large ones.
        """
        positives = [event for event in interactions if event.weight > 0]
        self._tally_credit += len(positives) * self.config.hybrid_learning_share
        sample = min(int(self._tally_credit), self.config.hybrid_learning_sample)
        # A batch above the cap does not bank its excess for later batches.
        self._tally_credit = min(self._tally_credit - sample, 1.0)
        if not positives or sample <= 0:
            return {}
        step = max(1, len(positives) // sample)
        fusion = self._fusion_weights(self.config)
        counts: dict[str, int] = {}
        trials = positives[::step][:sample]
        unread = iter(self._trial_reads([event for event in trials if (
            event.user_id, event.timestamp) not in self._recent_reads]))
        for event in trials:
            reads = self._recent_reads.get((event.user_id, event.timestamp)) or next(unread)
            if not reads.seen:  # a newcomer gets popular items from every model
                continue
            # Co-occurrence's own top first: ranked at TALLY_K, which content neighbours
            # may change (cold items). Then the fusion (is it better than its best
            # part?), whose longer reads the popular and MF tops are cut from: the same
            # lists as read alone, for one read of each instead of two.
            cooccurrence = [item for item, _ in reads.cooccurrence(TALLY_K)]
            fused = [item for item, _ in self._fused(
                reads, fusion, self.config, self.config.hybrid_candidates, TALLY_K)]
            tops = {"cooccurrence": cooccurrence,
                    "popular": self._popular_ranked(TALLY_K, reads),
                    "mf": ([] if reads.vector is None
                           else [item for item, _ in reads.factors(TALLY_K)]),
                    HYBRID: fused}
            for name, count in count_hits(tops, event.item_id).items():
                counts[name] = counts.get(name, 0) + count
        return counts

    def _trial_reads(self, events: Sequence[Interaction]) -> list[_Reads]:
        """What the tally's trials of ``events`` read, read for all of them at once: the
        users' histories and factors, their recent items' neighbours with the candidates'
        counts, and popular items as far as the user who has seen most needs. The same
        values each trial's own reads would give (neither the store nor the lists depend
        on who else is tried; a popular list's prefix is the shorter list), in five round
        trips instead of four per trial.

        One :class:`_Reads` per event, even for two events of a user at one time: what a
        trial ranks is cached in its reads, and a list cut from a longer one may differ
        from the list ranked at its own length (content neighbours of cold items)."""
        if not events:
            return []
        if self.item_index.cursor is None:
            self.refresh()
        users = list(dict.fromkeys(event.user_id for event in events))
        limit = self.config.history_length
        histories = self.store.histories(users, limit)
        vectors = self.store.user_factors(users)
        found = [_Reads(self, event.user_id, histories[event.user_id],
                        vectors.get(event.user_id), event.timestamp) for event in events]
        tried = [reads for reads in found if reads.seen]
        if not tried:
            return found
        recent = list(dict.fromkeys(item for reads in tried for item in reads.recent))
        neighbours = self._cooccurrence_reads(recent)
        # The fusion reads hybrid_candidates past the seen items (Engine._popular_ranked).
        size = self.config.hybrid_candidates + max(len(reads.banned) for reads in tried)
        popular = self.store.popular(size, None)
        for reads in tried:
            reads.share_neighbours(neighbours)
            reads.share(("popular", None), size, popular)
        return found

    def _learn_factors(self, interactions: Sequence[Interaction]):
        positives = [event for event in interactions if event.weight > 0]
        # Negatives are drawn (with replacement) from a pool of random items: no larger
        # than the draws need, so a small batch reads a few vectors, not the whole pool.
        pool = self.store.sample_items(min(self.config.mf_negative_pool,
                                           self.config.mf_negatives * len(positives)))
        users = self.store.user_factors({event.user_id for event in positives})
        items = self.store.item_factors({e.item_id for e in positives}.union(pool))
        return self.mf.learn_many(positives, users, items, pool)

    def refresh(self) -> int:
        """Bring the in-memory item factors and catalog content up to date; returns how
        many factor rows changed."""
        with self._refreshing:
            cursor, changed = self.store.changed_items(self.item_index.cursor)
            self.item_index.upsert(changed)
            self.item_index.cursor = cursor
            self.refresh_content()
            self.tally = Tally(self.store.blend_tally(), self.config.hybrid_learning_exponent)
        return len(changed)

    def refresh_content(self) -> int:
        """Bring the content index up to date with the catalog; returns documents read."""
        cursor, documents = self.store.changed_documents(self._content_cursor)
        if documents:
            self._catalog_changes += 1
            self.content.upsert(documents)
            for item, document in documents.items():
                created = None if document is None else document.get("created_at")
                if isinstance(created, int | float):
                    self._created[item] = float(created)
                else:
                    self._created.pop(item, None)
        self._content_cursor = cursor
        return len(documents)

    def popular(
        self, k: int, now: float, category: Category | None = None, exclude: Sequence[ItemId] = (),
        item_filter: BoundFilter | None = None, user_id: UserId | None = None,
    ) -> list[Scored]:
        """Most popular items, as decayed weighted counts at ``now``, never withdrawn ones.

        ``item_filter`` keeps only the items it allows (``user_id`` gives its Interactions
        conditions a user). An INCLUDE filter that requires categories ranks from their
        per-category popularity instead of screening the whole catalog.
        """
        screen = self._screen(now, item_filter, user_id)
        return self._popular(k, now, category, exclude, screen, item_filter)

    def _popular(
        self, k: int, now: float, category: Category | None, exclude: Sequence[ItemId],
        screen: Screen, item_filter: BoundFilter | None, reads: _Reads | None = None,
    ) -> list[Scored]:
        banned = set(exclude)
        categories = _ranked_categories(category, item_filter)
        if categories is not None:
            def rank(n: int) -> list[Scored]:
                return self._popular_in(categories, n, now)
        else:
            def rank(n: int) -> list[Scored]:
                found = (self.store.popular(n, category) if reads is None
                         else reads.popular(n, category))
                return self.popularity_decay.values_at(found, now)
        first = self._first_round(k, item_filter) + len(banned)
        return self._take(rank, k, first, screen, banned)

    def _popular_in(self, categories: list[Category], n: int, now: float) -> list[Scored]:
        """The ``n`` most popular items of any of ``categories``, as decayed values at one
        time for all of them (each category's list is in its own frame)."""
        found = [self.store.popular(n, category) for category in categories]
        at = self.popularity_decay.reading_time(now, [ranked.landmark for ranked in found])
        best: dict[ItemId, float] = {}
        for ranked in found:
            for item, value in self.popularity_decay.values_at(ranked, at):
                best[item] = max(value, best.get(item, value))
        return top(best, n)

    def _popular_ranked(self, k: int, reads: _Reads) -> list[ItemId]:
        """Popularity as a hybrid source: unscreened (the blend is screened once), ranked
        (one key's values all decay alike: no need to read them at a time)."""
        banned = reads.banned
        ranked = reads.popular(k + len(banned), None).scores
        # In C, stopping at the k-th: the list reads k past the user's ~200 seen items.
        return list(islice(filterfalse(banned.__contains__, map(_first, ranked)), k))

    def similar(
        self, item_id: ItemId, k: int, now: float | None = None,
        item_filter: BoundFilter | None = None, user_id: UserId | None = None,
    ) -> list[Scored]:
        """Items most often touched together with ``item_id``, never withdrawn ones:
        :meth:`similar_items`'s list."""
        return self.similar_items(item_id, k, now, item_filter, user_id).items

    def similar_items(
        self, item_id: ItemId, k: int, now: float | None = None,
        item_filter: BoundFilter | None = None, user_id: UserId | None = None,
        model: str = "cooccurrence",
    ) -> Recommendations:
        """Items most often touched together with ``item_id``, never withdrawn ones.

        Its co-occurrence neighbours come first (model ``cooccurrence``); when fewer than
        ``k`` of them pass, items whose catalog document resembles it fill the list with
        their content similarity, listed in :attr:`Recommendations.backfill` (a new item,
        which nobody touched with another yet, gets only those). ``item_filter`` may compare
        with the item's own properties (``CurrentItem``).

        ``model`` ``lists:NAME`` ranks by the item's imported similar-item list instead,
        screened alike; what it lacks is filled as above, flagged ``backfill``. An item the
        set has no list for is ranked by co-occurrence, and the result names it.
        """
        listed = None
        if model != "cooccurrence":
            external = None if self.external_models is None else self.external_models(model)
            if external is None or not hasattr(external, "similar"):
                raise ValueError(f"model: {model!r} ranks no similar items (cooccurrence, "
                                 "or lists:NAME of an imported set)")
            listed = [(item, score) for item, score in external.similar(item_id) or ()
                      if item != item_id]
        if not listed:
            return self._similar_items(item_id, k, now, item_filter, user_id)
        found = self._similar_items(item_id, k, now, item_filter, user_id, listed)
        return Recommendations(model, found.items, found.backfill)

    def _similar_items(
        self, item_id: ItemId, k: int, now: float | None, item_filter: BoundFilter | None,
        user_id: UserId | None, listed: list[Scored] | None = None,
    ) -> Recommendations:
        """:meth:`similar_items` ranked by co-occurrence, or by ``listed`` first (each of
        co-occurrence's and content's items then backfill)."""
        now = time.time() if now is None else now
        current = None
        if item_filter is not None and item_filter.filter.uses_current_item:
            current = self.store.get_item(item_id) or {"item_id": item_id}
        screen = self._screen(now, item_filter, user_id, current)
        content: set[ItemId] = set()  # the last round's content neighbours

        def rank(n: int) -> list[Scored]:
            if listed is not None:
                ranked = listed[:n]
                if len(ranked) < n:  # the list is short: co-occurrence and content fill it
                    chosen = {item for item, _ in ranked}
                    filled = [(item, 0.0) for item, _ in ranked_by_others(n)
                              if item not in chosen]
                    # Every item not the list's is backfill; none of the list's is, even
                    # one that its document resembles too.
                    content.update(item for item, _ in filled)
                    content.difference_update(chosen)
                    ranked += filled[:n - len(ranked)]
                return ranked
            return ranked_by_others(n)

        def ranked_by_others(n: int) -> list[Scored]:
            limit = min(max(self.config.neighbours_per_item, n), self.config.max_neighbours)
            neighbours = self.store.neighbours([item_id], limit)[item_id]
            counts = self.store.item_counts([item_id, *(other for other, _ in
                                                        neighbours.scores)])
            ranked = self.cooccurrence.similar(item_id, neighbours, counts,
                                               len(neighbours.scores))
            content.clear()
            if len(ranked) < n:  # too few neighbours: what its catalog document resembles
                self._content_ready()
                chosen = [item for item, _ in ranked]
                resembling = self.content.similar(item_id, n - len(ranked), exclude=chosen)
                content.update(item for item, _ in resembling)
                ranked += resembling
            return ranked

        items = self._take(rank, k, self._first_round(k, item_filter), screen)
        return Recommendations("cooccurrence", items,
                               frozenset(item for item, _ in items if item in content))

    def recommend(
        self, user_id: UserId, k: int, now: float, model: str = "cooccurrence",
        params: Mapping[str, float] | None = None, item_filter: BoundFilter | None = None,
        category: Category | None = None,
    ) -> Recommendations:
        """Top-k by the named model, never items the user already interacted with, nor
        withdrawn ones, nor any ``item_filter`` removes.

        ``model`` is one of :data:`MODELS`; ``params`` override the hybrid blend
        (``hybrid_mf``, ``hybrid_cooccurrence``, ``hybrid_popular``) for this request. The
        result names the model that ranked the list: a user nobody knows (no history)
        gets ``popular`` from every model; a known user always gets ``model``'s own items
        first, and popular items that pass the same screen fill what it lacks (after a
        filter, the seen items, or for ``mf`` before the user has factors), listed in
        :attr:`Recommendations.backfill`. Candidates are read in growing rounds until ``k``
        pass the screen (at most ``max_screened_candidates``); a filter that leaves nothing
        gives an empty list.
        ``category`` (a theme the user chose, from the request's context) is where popular
        items come from for a user the models know nothing about yet.
        """
        return self.recommend_many(user_id, k, now, (model,), params, item_filter,
                                   category)[model]

    def recommend_many(
        self, user_id: UserId, k: int, now: float, models: Sequence[str],
        params: Mapping[str, float] | None = None, item_filter: BoundFilter | None = None,
        category: Category | None = None,
        variants: Mapping[str, Mapping[str, float]] | None = None,
    ) -> dict[str, Recommendations]:
        """:meth:`recommend` by each of ``models`` for one user at one time: the same
        lists, but what they share (the history, the co-occurrence scores, the popular
        and MF candidates) is read and computed once, as the offline evaluation asks.

        ``variants`` adds hybrid lists under their own names, each with its own blend
        ``params`` (``streamrec tune`` compares blends on one replay this way).
        """
        lists = {model: (model, params or {}) for model in models}
        lists.update((name, ("hybrid", blend)) for name, blend in (variants or {}).items())
        for model, blend in lists.values():
            check_model(model)
            unknown = set(blend) - set(HYBRID_PARAMS)
            if unknown:
                raise ValueError(f"params: {sorted(unknown)} are not among "
                                 f"{list(HYBRID_PARAMS)}")
        used = {model for model, _ in lists.values()}
        # An external model's fallback may be mf or hybrid: its factors come in the same read.
        factors = bool(used - {"popular", "cooccurrence"})
        if factors and self.item_index.cursor is None:
            self.refresh()
        # The hybrid reads its sources' candidates: let the other lists share that read.
        least = self.config.hybrid_candidates if "hybrid" in used else 0
        popular = self._first_popular(used, k, item_filter, category, least)
        # The history (and factors, and the popular prefix), with the withdrawal times when
        # the store has them at hand: then the lists screen without a round trip of their
        # own, and their first round ranks without one either.
        first = self.store.first_read(user_id, self.config.history_length, factors, popular)
        reads = _Reads(self, user_id, first.history, first.vector, now, least,
                       first.withdrawals)
        if first.popular is not None:
            reads.share(("popular", None), popular, first.popular)
        if self.keep_reads:
            if len(self._recent_reads) >= 256:  # only a batch learned next reads them
                self._recent_reads.clear()
            self._recent_reads[user_id, now] = reads
        return {name: self._recommend(reads, model, k, blend, item_filter, category)
                for name, (model, blend) in lists.items()}

    def _recommend(self, reads: _Reads, model: str, k: int, params: Mapping[str, float],
                   item_filter: BoundFilter | None, category: Category | None
                   ) -> Recommendations:
        user_id, now, seen, recent = reads.user_id, reads.now, reads.seen, reads.recent
        screen = self._screen(now, item_filter, user_id, withdrawals=reads.withdrawals)
        if model == "popular":
            return Recommendations("popular", self._popular(
                k, now, category, seen, screen, item_filter, reads))
        if model == "cooccurrence":
            rank = reads.cooccurrence if reads.cooccurrence(k) else None
        elif model == "mf":
            rank = self._factors_ranking(reads)
        elif model == "hybrid":
            rank = self._hybrid_ranking(reads, params)
        else:  # ease, ials, lists:NAME
            external = None if self.external_models is None else self.external_models(model)
            fallback = getattr(external, "fallback", None)
            if external is not None and fallback and external.rank(reads, k) is None:
                # A user the set has no list for: ranked by the model the set names.
                return self._recommend(reads, check_model(fallback), k, params,
                                       item_filter, category)
            rank = self._external_ranking(model, reads)
        # An external list was made without the events since: drop what the user has seen.
        banned = reads.banned if model not in ("cooccurrence", "mf", "hybrid") else ()
        ranked = [] if rank is None else self._take(
            rank, k, self._first_round(k, item_filter), screen, banned)
        # The rule (README, "Short lists"): `popular` names only the cold start of a user
        # nobody knows. A known user's list is always the asked model's, and whatever it
        # lacks after the filter and the seen items is popular backfill, flagged per item,
        # so a client can tell, and a report never counts popular's items as the model's.
        used = model if ranked or seen else "popular"
        backfill: frozenset[ItemId] = frozenset()
        if len(ranked) < k:
            chosen = seen + [item for item, _ in ranked]
            # A newcomer's chosen category first, then everything popular.
            fill = [] if category is None or used != "popular" else self._popular(
                k, now, category, chosen, screen, item_filter, reads)
            chosen += [item for item, _ in fill]
            fill += self._popular(k - len(ranked) - len(fill), now, None, chosen, screen,
                                  item_filter, reads) if len(ranked) + len(fill) < k else []
            if used != "popular":  # its model did not choose it: 0, and flagged
                backfill = frozenset(item for item, _ in fill)
                fill = [(item, 0.0) for item, _ in fill]
            ranked += fill
        if self.config.exploration_share > 0:  # any list but an explicit model=popular
            ranked = self._explore(user_id, ranked, k, now, recent, seen, screen)
        return Recommendations(used, ranked, backfill)

    def _content_ready(self) -> None:
        if self._content_cursor is None:
            with self._refreshing:
                if self._content_cursor is None:
                    self.refresh_content()

    def _new_items(self, now: float) -> list[ItemId]:
        """Items created within ``new_item_seconds`` of ``now``: the catalog is scanned
        once a minute (and after the content index changed), not on every request."""
        stamp = (int(now // 60), self._catalog_changes)
        if self._new_items_cache[0] != stamp:
            horizon = now - self.config.new_item_seconds
            self._new_items_cache = (stamp, [item for item, created in self._created.items()
                                             if horizon <= created <= now])
        return self._new_items_cache[1]

    def _explore(self, user_id: UserId, ranked: list[Scored], k: int, now: float,
                 recent: list[ItemId], seen: list[ItemId], screen: Screen) -> list[Scored]:
        """Give ``exploration_share`` of the list (in expectation; the last places) to new
        items: those most like the user's latest item by content, else random ones."""
        self._content_ready()
        fresh = self._new_items(now)
        if not fresh:
            return ranked
        # Stable for a user within a minute, different across users and minutes.
        rng = random.Random(f"{self.config.seed}:{user_id}:{int(now // 60)}")
        quota = self.config.exploration_share * k
        slots = int(quota) + (rng.random() < quota - int(quota))
        if not slots:
            return ranked
        taken = set(seen) | {item for item, _ in ranked}
        candidates: list[ItemId] = []
        if recent:
            candidates = [item for item, _ in self.content.similar(
                recent[0], 4 * slots, exclude=taken, among=fresh)]
        others = [item for item in fresh if item not in taken and item not in candidates]
        candidates += rng.sample(others, min(len(others), 4 * slots))
        explore = screen.judge_all(candidates)[:slots] if candidates else []
        if not explore:
            return ranked
        kept = ranked[: max(0, k - len(explore))]
        return kept + [(item, 0.0) for item in explore]

    def _first_popular(self, models: Collection[str], k: int, item_filter: BoundFilter | None,
                       category: Category | None, least: int) -> int:
        """How long a prefix of overall popularity the request's first read brings: what the
        first round of its lists reads from it (their first round, or the hybrid's
        candidates, past the user's seen items, at most ``history_length`` of them), or 0
        when none of its lists would read it.

        The hybrid always ranks popularity among its sources, and ``popular`` ranks from
        it. ``cooccurrence`` and ``mf`` fill from it only the lists of newcomers and of
        users their model knows too little of: they read it on their own when they do
        (a prefix read for every request cost mf 21% more CPU a request,
        ``scripts/serving_reads.py``, docs/benchmarks.md). Not when a chosen category, or
        the few categories a filter requires, rank popularity instead; nor for the models
        ranked outside the stream, whose backfill was not measured.
        """
        size = max(self._first_round(k, item_filter), least) + self.config.history_length
        if "hybrid" in models:
            return size
        if (not FIRST_POPULAR_MODELS.isdisjoint(models) and category is None
                and _ranked_categories(None, item_filter) is None):
            return size
        return 0

    def _first_round(self, k: int, item_filter: BoundFilter | None) -> int:
        # Withdrawn items are few: read k. A filter may remove most: read more at once.
        return k if item_filter is None else screening.GROWTH * k

    def _take(self, rank: Ranking, k: int, first: int, screen: Screen,
              banned: Collection[ItemId] = frozenset()) -> list[Scored]:
        return screening.take(rank, k, first, screen, banned)

    def _screen(self, now: float, item_filter: BoundFilter | None,
                user_id: UserId | None = None, current: Mapping | None = None,
                withdrawals: Withdrawals | None = None) -> Screen:
        """What a request may show: not withdrawn at ``now`` and kept by ``item_filter``,
        judging at most ``max_screened_candidates`` items in all.

        Each round reads the candidates' withdrawal times (and with a filter on Items their
        documents) in one round trip, unless the request's first read brought the times
        (``withdrawals``) and no document is needed; the user's event types are read
        once, if needed, and so is their document for a filter on ``Users``.
        """
        if item_filter is None and withdrawals is not None and not withdrawals.times:
            return Screen(None, self.config.max_screened_candidates)  # nothing to judge
        user = None
        if item_filter is not None and item_filter.filter.uses_users and user_id is not None:
            user = self.store.get_user(user_id)
        keep = None if item_filter is None else item_filter.predicate(current, user)
        documents = item_filter is not None and item_filter.filter.uses_items
        wants_types = item_filter is not None and item_filter.filter.uses_interactions
        event_types: dict[ItemId, frozenset[str]] | None = None

        def allowed(items: list[ItemId]) -> set[ItemId]:
            nonlocal event_types
            if withdrawals is not None and not documents:
                withdrawn, found = withdrawals.withdrawn(items, now), {}
            else:
                withdrawn, found = self.store.screen(items, now, documents)
            live = [item for item in items if item not in withdrawn]
            if keep is None:
                return set(live)
            if event_types is None:
                event_types = (self.store.interaction_types(user_id)
                               if wants_types and user_id is not None else {})
            return {item for item in live
                    if keep(found.get(item) or {"item_id": item}, event_types.get(item, ()))}

        return Screen(allowed, self.config.max_screened_candidates)

    def _cooccurrence_reads(self, recent: list[ItemId]) -> CodedNeighbours:
        """The stored neighbour lists of ``recent`` and the counts of every candidate, as
        arrays: what :meth:`_cooccurrence` ranks, whatever its ``k``."""
        return self.store.neighbour_arrays(recent, self.config.neighbours_per_item)

    def _cooccurrence(self, recent: list[ItemId], k: int, seen: list[ItemId],
                      found: CodedNeighbours | None = None) -> list[Scored]:
        if not recent:
            return []
        found = found or self._cooccurrence_reads(recent)
        # Recent items nobody else has touched yet have no neighbours: take their
        # content's (three newest at most, so that a request stays cheap).
        cold = [(n, item) for n, item in enumerate(recent[:3])
                if item not in found.lists or not len(found.lists[item].scores[0])]
        if not cold or self.config.content_weight <= 0:
            return self.cooccurrence.rank(recent, found, k, exclude=seen)
        # Content may lift any candidate into the list: rank them all.
        ranked = self.cooccurrence.rank(recent, found, len(found.ids), exclude=seen)
        self._content_ready()
        scores = dict(ranked)
        banned = set(seen) | set(recent)
        for position, item in cold:
            weight = self.config.content_weight * 0.85**position
            for other, similarity in self.content.similar(item, min(k, 100), exclude=banned):
                scores[other] = scores.get(other, 0.0) + weight * similarity
        return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))[:k]

    def _factors_ranking(self, reads: _Reads) -> Ranking | None:
        if reads.vector is None:
            return None
        return reads.factors

    def _external_ranking(self, model: str, reads: _Reads) -> Ranking | None:
        external = None if self.external_models is None else self.external_models(model)
        if external is None:
            return None
        return lambda n: external.rank(reads, n) or []

    def _hybrid_ranking(self, reads: _Reads, params: Mapping[str, float]) -> Ranking | None:
        """Fuse MF (the user's factors), co-occurrence and popularity over the union of
        their candidates, with the weights the tally taught; or the one source that the
        tally finds better than the fusion itself (recommender.blend)."""
        config = dataclasses.replace(self.config, **params) if params else self.config
        if reads.vector is None and not reads.cooccurrence(1):
            return None
        weights = self._fusion_weights(config)
        leader = self.tally.leader([source for source in SOURCES if weights[source] > 0])
        if leader != HYBRID:
            weights = {source: float(source == leader) for source in SOURCES}

        def rank(n: int) -> list[Scored]:
            return self._fused(reads, weights, config, max(config.hybrid_candidates, n))[:n]

        return rank

    def cooccurrence_candidates(self, recent: list[ItemId], k: int, seen: list[ItemId]
                                ) -> list[Scored]:
        """Co-occurrence's best ``k`` for a user's recent items, with what content adds for
        recent items nobody else touched yet: the ranking its list and the hybrid use."""
        return self._cooccurrence(recent, k, seen)

    def fusion(self, params: Mapping[str, float] | None = None) -> tuple[dict[str, float], str]:
        """The hybrid's blend as it stands: each source's weight (configured x learned)
        and the tally's leader (``hybrid``, or the one source the hybrid serves alone)."""
        config = dataclasses.replace(self.config, **params) if params else self.config
        weights = self._fusion_weights(config)
        return weights, self.tally.leader([source for source in SOURCES if weights[source] > 0])

    def _fusion_weights(self, config: EngineConfig) -> dict[str, float]:
        configured = {"mf": config.hybrid_mf, "cooccurrence": config.hybrid_cooccurrence,
                      "popular": config.hybrid_popular}
        learned = self.tally.factors()
        weights = {source: configured[source] * learned[source] for source in SOURCES}
        for model in BATCH_MODELS:  # a source only when weighted, at its configured weight
            weight = getattr(config, f"hybrid_{model}")
            if weight > 0:
                weights[model] = weight
        return weights

    def _fused(self, reads: _Reads, weights: Mapping[str, float], config: EngineConfig,
               size: int, keep: int | None = None) -> list[Scored]:
        """Each source's best ``size`` candidates, fused: the best ``keep`` of them (``size``
        if None; no caller cuts more); once per request and blend (the hybrid's list and
        the tally's trial of the fusion are often the same). A shorter ``keep`` (the
        tally's trial: its top ten) is cut from the request's fusion when it has one, else
        only that many are sorted (when the hybrid serves its leader alone, the trial's
        fusion is the only one)."""
        def compute(best: int) -> list[Scored]:
            # A source the blend weighs 0 (the leader alone) is not ranked: popular and MF
            # lists are prefixes of longer ones, so later reads find the same. Co-occurrence
            # always is: a cold item's content makes its short list differ from a cut one.
            sources = {"cooccurrence": list(map(_first, reads.cooccurrence(size))),
                       "popular": (self._popular_ranked(size, reads)
                                   if weights["popular"] > 0 else [])}
            if reads.vector is not None:
                sources["mf"] = (list(map(_first, reads.factors(size)))
                                 if weights["mf"] > 0 else [])
            for model in BATCH_MODELS:
                external = (None if model not in weights or self.external_models is None
                            else self.external_models(model))
                if external is not None:
                    sources[model] = [item for item, _ in external.rank(reads, size) or []]
            return fuse(sources, weights, config.hybrid_rank_constant, best)

        key = ("fused", size, config.hybrid_rank_constant, *sorted(weights.items()))
        if keep is None or keep >= size:
            return reads.memo(key, lambda: compute(size))
        fused = reads.memoised(key)
        if fused is not None:
            return fused[:keep]
        return reads.memo((*key, keep), lambda: compute(keep))

    def user_history(self, user_id: UserId) -> list[Scored]:
        return self.store.history(user_id, self.config.history_length)



MAX_CATEGORY_READS = 8  # a filter requiring more categories screens overall popularity
# The models whose requests read overall popularity often enough to bring it in the first
# read (the hybrid always does). Not cooccurrence and mf: they read it only for newcomers
# and short lists, and the 210-item prefix cost mf's requests 21% more CPU
# (docs/benchmarks.md).
FIRST_POPULAR_MODELS = frozenset({"popular"})


def _ranked_categories(category: Category | None, item_filter: BoundFilter | None
                       ) -> list[Category] | None:
    """The categories whose popularity a popular list ranks from instead of the overall
    one (the few an INCLUDE filter requires), or None: overall (or ``category``'s)."""
    if category is not None or item_filter is None:
        return None
    categories = item_filter.required_categories()
    if categories is None or len(categories) > MAX_CATEGORY_READS:
        return None
    return sorted(categories)



_T = TypeVar("_T")  # what a request memoises


class _Reads:
    """What the lists of one request (one user at one time) share, read or computed once
    and handed out in prefixes: the history, co-occurrence scores, popular items, MF
    candidates. A longer prefix than any read so far reads again."""

    def __init__(self, engine: Engine, user_id: UserId, history: list[Scored],
                 vector: np.ndarray | None, now: float, least: int = 0,
                 withdrawals: Withdrawals | None = None) -> None:
        self.engine = engine
        self.withdrawals = withdrawals  # the catalog's withdrawal times, when read with it
        self.least = least  # the shortest prefix worth reading
        self.user_id = user_id
        self.vector = vector
        self.now = now
        self.history = history  # (item, last interaction time; negative: disliked)
        self.seen = list(map(_first, history))
        self.banned = set(self.seen)
        # Stops at the window's last liked item: a history holds up to ~200 (4 us less).
        self.recent = list(islice((item for item, score in history if score > 0),
                                  engine.config.window))
        self._read: dict[object, tuple[int, object]] = {}
        self._neighbours: CodedNeighbours | None = None

    def cooccurrence(self, n: int) -> list[Scored]:
        """The ``n`` best co-occurrence candidates."""
        return self._prefix("cooccurrence", n, 0,
                            lambda size: self.engine._cooccurrence(
                                self.recent, size, self.seen, self._neighbour_reads()),
                            lambda found, size: found[:size])

    def share_neighbours(self, found: CodedNeighbours) -> None:
        """Use ``found`` (read for several requests at once) as this one's neighbours."""
        self._neighbours = found

    def share(self, key: object, size: int, found: object) -> None:
        """Use ``found`` (read for several requests at once, or with the request's first
        read) as this one's read of ``key``, ``size`` long: no longer prefix reads
        again."""
        self._read[key] = (size, found)

    def _neighbour_reads(self) -> CodedNeighbours | None:
        # A longer prefix ranks again, on the same reads: their size does not depend on it.
        if not self.recent:
            return None
        if self._neighbours is None:
            self._neighbours = self.engine._cooccurrence_reads(self.recent)
        return self._neighbours

    def popular(self, n: int, category: Category | None) -> Decayed[list[Scored]]:
        # Lists of popular items skip the seen ones: read past them at once.
        return self._prefix(("popular", category), n, len(self.banned),
                            lambda size: self.engine.store.popular(size, category),
                            lambda found, size: Decayed(found.scores[:size], found.landmark))

    def factors(self, n: int) -> list[Scored]:
        # One product per request: a longer prefix ranks the same scores again.
        scores = self.memo("factor scores",
                           lambda: self.engine.item_index.scores(self.vector, self.seen))
        return self._prefix("factors", n, 0, scores.top, lambda found, size: found[:size])

    def memo(self, key: object, compute: Callable[[], _T]) -> _T:
        """``compute()``, once per request and ``key``; callers must not change it."""
        cached = self._read.get(key)
        if cached is None:
            cached = self._read[key] = (0, compute())
        return cached[1]

    def memoised(self, key: object) -> list[Scored] | None:
        """What :meth:`memo` has for ``key``, or None."""
        cached = self._read.get(key)
        return None if cached is None else cached[1]

    def _prefix(self, key: object, n: int, extra: int, read: Callable, cut: Callable):
        cached = self._read.get(key)
        if cached is None or cached[0] < n:
            size = max(n, self.least + extra)
            cached = self._read[key] = (size, read(size))
        return cut(cached[1], n)
Reads = _Reads  # what ExternalModel.rank is given
_first = itemgetter(0)


def _event_types(interactions: Sequence[Interaction]) -> dict[UserId, dict[ItemId, set[str]]]:
    """Per user and item, the event types of the batch (events without one are left out)."""
    types: dict[UserId, dict[ItemId, set[str]]] = {}  # plain dicts: an update pickles
    for event in interactions:
        if event.event_type is not None:
            types.setdefault(event.user_id, {}).setdefault(event.item_id, set()).add(
                event.event_type)
    return types
