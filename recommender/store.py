"""The narrow interface to recommendation state, and its in-memory implementation.

``streamrec.storage.state_store.RedisStore`` implements the same protocol for production; the
shared contract test (``tests/contract_store.py``) runs against both. Orderings follow
Redis sorted sets: descending by score, ties by descending member.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter, methodcaller
from typing import Any, Protocol

import numpy as np

from recommender.availability import Withdrawals, is_withdrawn, withdrawn_at
from recommender.base import Category, ItemId, Scored, UserId
from recommender.blend import forget
from recommender.cooccurrence import CodedNeighbours, coded
from recommender.decay import LEGACY_EPOCH, Decayed, ForwardDecay, Renormalisation, renormalise
from recommender.once import DEFAULT_WINDOW_SECONDS, Claim, DuplicateEvents, EventMemory
from recommender.popularity import category_moves

# Where a store's read of its changes stopped: opaque, passed back as the read returned it
# (the in-memory store's version number; the Redis store's time and what it last read).
Cursor = object

# User factor vectors are kept at half precision: 2 bytes a component instead of 4, 80 of
# a user's ~880 bytes in Redis, with the same Recall@10 (docs/benchmarks.md). Item vectors
# stay float32: there are fewer of them, and the serving index multiplies them.
USER_FACTOR_DTYPE = np.dtype("<f2")


def as_stored_user_factors(vector: np.ndarray) -> np.ndarray:
    """``vector`` as a store gives it back: rounded to half precision, returned as float32.

    >>> as_stored_user_factors(np.array([0.1, 1.0], np.float32)).tolist()
    [0.0999755859375, 1.0]
    """
    return np.asarray(vector, USER_FACTOR_DTYPE).astype(np.float32)


@dataclass
class StateUpdate:
    """Everything one batch changes, applied atomically by :meth:`StateStore.apply`.

    Increments are added; ``history`` scores (times in seconds, kept to the millisecond)
    replace the stored score only when greater;
    afterwards each touched history keeps its ``history_length`` highest scores and each
    touched neighbour list its ``max_neighbours`` highest weights.

    The decayed increments (``popularity``, ``category_popularity``, ``item_counts``,
    ``pairs``) are in the batch's frame: ``weight * 2 ** ((t - reference) / half_life)``.
    The store moves them into the frame of each key it adds them to, rescaling the key
    first when its landmark is far behind (:func:`recommender.decay.renormalise`); a key
    with values but no landmark (written before landmarks existed) has ``epoch``'s frame.
    """

    history_length: int
    max_neighbours: int
    popularity: Mapping[ItemId, float] = field(default_factory=dict)
    category_popularity: Mapping[Category, Mapping[ItemId, float]] = field(default_factory=dict)
    item_counts: Mapping[ItemId, float] = field(default_factory=dict)
    pairs: Mapping[ItemId, Mapping[ItemId, float]] = field(default_factory=dict)
    history: Mapping[UserId, Mapping[ItemId, float]] = field(default_factory=dict)
    user_factors: Mapping[UserId, np.ndarray] = field(default_factory=dict)
    item_factors: Mapping[ItemId, np.ndarray] = field(default_factory=dict)
    events: int = 0
    # The last applied offset per source partition ("topic:partition"), written in the same
    # transaction as the state, so a replayed batch can be recognised and skipped.
    offsets: Mapping[str, int] = field(default_factory=dict)
    # The event types of each (user, item) in the batch, added to what is stored; kept for
    # the items the user's history keeps (filters on Interactions.event_type read them).
    event_types: Mapping[UserId, Mapping[ItemId, Collection[str]]] = field(
        default_factory=dict)
    reference: float | None = None
    half_life: float | None = None
    epoch: float = LEGACY_EPOCH
    # The half-life of the popularity keys (overall and per category), if not half_life's.
    popularity_half_life: float | None = None
    # Counts added to the hybrid's tally of its sources (recommender.blend): "trials" and
    # "hits:<source>".
    blend: Mapping[str, int] = field(default_factory=dict)
    # The tally halves every count (rounding down) once its trials reach twice this (0:
    # never): recommender.blend.forget.
    blend_memory: int = 0
    # The batch's claims on event ids (recommender.once): the store refuses the batch with
    # DuplicateEvents when one repeats an id, else keeps them with the state.
    claims: Sequence[Claim] = ()
    # Records of the batch left out as duplicates (counted with the state).
    duplicates: int = 0
    # Feedback waiting for its impression (recommender.attribution.waiting_entry, give up
    # at): kept with the state, so a crash after the batch loses none. A store without
    # feedback (in memory) ignores it; Redis keeps an entry it has already (a replay) as is.
    waiting_feedback: Sequence[tuple[str, float]] = ()

    def has_decayed(self) -> bool:
        return bool(self.popularity or self.category_popularity or self.item_counts
                    or self.pairs)


_values = methodcaller("values")


class NonFiniteError(ValueError):
    """An update holding NaN or an infinity (or a decayed update without its frame): the
    store refuses the whole batch before writing any of it. ``str()`` names the key and
    the member."""


def check_finite(update: StateUpdate,
                 name: Callable[[str, str | None], str] = lambda kind, id: (
                     kind if id is None else f"{kind}[{id!r}]")) -> None:
    """Raise :class:`NonFiniteError` if any value of ``update`` is NaN or infinite.

    ``name(field, id)`` names the key holding a value of the update's ``field`` (the
    category, item or user ``id``; None for a key of its own), as the store calls it.
    Sums come first: a batch without a bad value costs one addition per value.

    >>> check_finite(StateUpdate(200, 200, pairs={"tea": {"cup": float("nan")}},
    ...                          reference=0.0, half_life=60.0))
    Traceback (most recent call last):
    ...
    recommender.store.NonFiniteError: pairs['tea'], member 'cup': nan is not finite
    """
    def refuse(where: str, value: object) -> None:
        raise NonFiniteError(f"{where}: {value!r} is not finite")

    def scan(kind: str, id: str | None, values: Mapping[str, float]) -> None:
        if not math.isfinite(sum(values.values())):
            for member, value in values.items():
                if not math.isfinite(value):
                    refuse(f"{name(kind, id)}, member {member!r}", value)

    if update.has_decayed():
        frame = (update.reference, update.half_life, update.epoch)
        popular = update.popularity_half_life
        if (None in frame or not all(map(math.isfinite, frame)) or not update.half_life > 0
                or popular is not None and not (math.isfinite(popular) and popular > 0)):
            raise NonFiniteError(
                "decayed increments need a finite reference, epoch and positive half-lives, "
                f"got {frame} and {popular}")
    # One sum over every scalar first (a batch writes some forty maps: a call each cost more
    # than the sums); a finite total has no NaN nor infinity in it, else find the key.
    maps = (update.popularity, *update.category_popularity.values(), update.item_counts,
            *update.pairs.values(), *update.history.values())
    if not math.isfinite(sum(chain.from_iterable(map(_values, maps)))):
        scan("popularity", None, update.popularity)
        for category, increments in update.category_popularity.items():
            scan("category_popularity", category, increments)
        scan("item_counts", None, update.item_counts)
        for item, increments in update.pairs.items():
            scan("pairs", item, increments)
        for user, scores in update.history.items():
            scan("history", user, scores)
    for kind, vectors in (("user_factors", update.user_factors),
                          ("item_factors", update.item_factors)):
        # One pass over all of a batch's vectors (hundreds of small arrays: a numpy call
        # each cost more than the check); the slow search only when one is bad.
        if not vectors or np.isfinite(np.concatenate(list(vectors.values()), axis=None)).all():
            continue
        for id, vector in vectors.items():
            if not np.isfinite(vector).all():
                bad = np.asarray(vector)[~np.isfinite(vector)][0]
                refuse(name(kind, id), float(bad))


def read_coded(store: ServingReads, item_ids: Iterable[ItemId], limit: int
               ) -> CodedNeighbours:
    """:meth:`ServingReads.neighbour_arrays` from :meth:`~ServingReads.neighbours` and
    :meth:`~ServingReads.item_counts` (two round trips): a store that keeps no arrays."""
    items = list(item_ids)
    neighbours = store.neighbours(items, limit)
    named = set(items).union(*(map(_first, listed.scores) for listed in neighbours.values()))
    return coded(neighbours, store.item_counts(named))


_first, _second = itemgetter(0), itemgetter(1)


@dataclass(frozen=True)
class FirstRead:
    """What a request reads first, in one round trip: the user's history, their factor
    vector (when asked for), the catalog's withdrawal times as of that read or later,
    when the store can give them without another round trip (None: screen with
    :meth:`ServingReads.screen`), and the most popular items with their landmark, as
    :meth:`ServingReads.popular` gives them (when asked for)."""

    history: list[Scored]
    vector: np.ndarray | None = None
    withdrawals: Withdrawals | None = None
    popular: Decayed[list[Scored]] | None = None


class FactorReads(Protocol):
    """Factor vectors: what learning and serving both read."""

    def user_factors(self, user_ids: Iterable[UserId]) -> dict[UserId, np.ndarray]:
        """Stored factor vectors, as float32 rounded to half precision
        (:func:`as_stored_user_factors`); users without one are absent."""
        ...

    def item_factors(self, item_ids: Iterable[ItemId]) -> dict[ItemId, np.ndarray]: ...

    def blend_tally(self) -> dict[str, int]:
        """The hybrid's tally of its sources (recommender.blend): every ``blend`` count
        applied, summed."""
        ...


class ServingReads(FactorReads, Protocol):
    """What answering a request reads (the API's engine; ``streamrec export``'s view)."""

    def history(self, user_id: UserId, limit: int) -> list[Scored]:
        """The user's whole (bounded) history, highest score first."""
        ...

    def histories(self, user_ids: Iterable[UserId], limit: int) -> dict[UserId, list[Scored]]:
        """:meth:`history` of many users, in one round trip."""
        ...

    def user_state(self, user_id: UserId, limit: int) -> tuple[list[Scored], np.ndarray | None]:
        """:meth:`history` and the user's factor vector (None without one), in one round
        trip: what a factor-model request reads first."""
        ...

    def first_read(self, user_id: UserId, limit: int, factors: bool = True,
                   popular: int = 0) -> FirstRead:
        """:meth:`history`, with ``factors`` the user's factor vector, the withdrawal
        times when the store has them at hand, and with ``popular`` > 0 what
        ``popular(popular)`` gives, in one round trip: what a request reads first. The
        times honour every catalog write stored before the read."""
        ...

    # Decayed state is read with its key's landmark, in the same round trip: the stored
    # scores are in that key's frame (recommender.decay).
    def neighbours(self, item_ids: Iterable[ItemId], limit: int
                   ) -> dict[ItemId, Decayed[list[Scored]]]:
        """Each item's ``limit`` heaviest co-occurring items, with its list's landmark."""
        ...

    def item_counts(self, item_ids: Iterable[ItemId]) -> Decayed[dict[ItemId, float]]:
        """Co-occurrence normalisers (items never counted are absent), with their landmark."""
        ...

    def neighbour_arrays(self, item_ids: Iterable[ItemId], limit: int) -> CodedNeighbours:
        """:meth:`neighbours` with the normalisers of every item they name and of
        ``item_ids``, numbered (:class:`~recommender.cooccurrence.CodedNeighbours`): what
        ranking by co-occurrence reads. :func:`read_coded` builds it from the two reads."""
        ...

    def popular(self, k: int, category: Category | None = None) -> Decayed[list[Scored]]:
        """The ``k`` most popular items (stored decayed scores), with their landmark."""
        ...

    def changed_items(self, since: Cursor | None) -> tuple[Cursor, dict[ItemId, np.ndarray]]:
        """Item factors changed after cursor ``since`` (all if None), and the new cursor
        (opaque: pass it back as it came).

        None is ever skipped. A change may be returned again (a rewrite landing between
        two reads of one refresh), but a read with nothing changed since returns nothing.
        """
        ...

    def changed_documents(self, since: Cursor | None
                          ) -> tuple[Cursor, dict[ItemId, dict[str, Any] | None]]:
        """Item documents put after cursor ``since`` (all if None; None for a deleted one),
        and the new cursor. None is skipped; as with :meth:`changed_items`, a read with
        nothing changed since returns nothing."""
        ...

    def screen(self, item_ids: Iterable[ItemId], now: float, documents: bool = False
               ) -> tuple[set[ItemId], dict[ItemId, dict[str, Any]]]:
        """Which of ``item_ids`` are withdrawn at ``now`` (unavailable, deleted, expired),
        and with ``documents`` the stored documents of the others, in one round trip."""
        ...

    def interaction_types(self, user_id: UserId) -> dict[ItemId, frozenset[str]]:
        """The event types of the user's interactions, per item of their history."""
        ...

    def get_item(self, item_id: ItemId) -> dict[str, Any] | None: ...

    def get_user(self, user_id: UserId) -> dict[str, Any] | None: ...

    def ping(self) -> bool:
        """True when the store answers; never raises."""
        ...


class BatchLearning(FactorReads, Protocol):
    """What learning a batch reads and writes (the worker's engine, a rebuild, evaluation):
    one :class:`StateUpdate` per batch, with the offsets it brings the state up to."""

    def windows(self, user_ids: Iterable[UserId], limit: int) -> dict[UserId, list[Scored]]:
        """Each user's positive history (score > 0), newest first, at most ``limit``."""
        ...

    def item_categories(self, item_ids: Iterable[ItemId]) -> dict[ItemId, list[Category]]: ...

    def sample_items(self, count: int) -> list[ItemId]:
        """Up to ``count`` distinct random items that have factors (negative samples)."""
        ...

    def apply(self, update: StateUpdate) -> None: ...

    def applied_offsets(self, partitions: Iterable[str]) -> dict[str, int]:
        """The last applied offset of each ``"topic:partition"`` that has one."""
        ...


class Catalog(Protocol):
    """Item and user documents, written from the compacted catalog topics."""

    def put_items(self, documents: Iterable[tuple[ItemId, Mapping[str, Any] | None]],
                  popularity: ForwardDecay | None = None) -> None:
        """Create or replace item documents, in one round trip; a None document (a
        tombstone) deletes the item. Each item's :func:`withdrawn_at` is kept with it.

        With ``popularity`` (the decay of the popularity learned), each item's per-category
        popularity follows its categories (:func:`recommender.popularity.category_moves`):
        its overall score, moved into each category key's frame, and nothing in the
        categories it left."""
        ...

    def put_users(self, documents: Iterable[tuple[UserId, Mapping[str, Any]]]) -> None: ...

    def delete_users(self, user_ids: Iterable[UserId]) -> None:
        """Delete each user's document, history, event types and factors (a tombstone on
        the users topic); the items' shared state (popularity, co-occurrence) stays.
        Deleting a user who is not there does nothing."""
        ...


class Operations(Protocol):
    """Figures and scans for operators (``streamrec versions``, export, metrics)."""

    def user_ids(self) -> Iterator[UserId]:
        """Every user with a history, in no particular order, without holding them all.

        Each appears at least once; Redis's SCAN may repeat one whose table was resized
        during the iteration.
        """
        ...

    def events_applied(self) -> int: ...

    def duplicates_skipped(self) -> int:
        """Records left out because their event id was applied already."""
        ...


class StateStore(ServingReads, BatchLearning, Catalog, Operations, Protocol):
    """Every role at once: what an implementation provides (``InMemoryStore``,
    ``RedisStore``) and the shared contract tests check. A caller that needs one role takes
    that role's protocol."""


# The StateUpdate fields decayed at the popularity half-life.
POPULARITY_FIELDS = ("popularity", "category_popularity")


def top(scores: Mapping[str, float], k: int | None = None) -> list[Scored]:
    """Sorted-set order: by score, then member, both descending."""
    if k is not None and k < len(scores):
        return heapq.nlargest(k, scores.items(), key=lambda pair: (pair[1], pair[0]))
    return sorted(scores.items(), key=lambda pair: (pair[1], pair[0]), reverse=True)


# (a, b) -> (b, a) in C: between (member, score) pairs and the (score, member) order.
_swap = itemgetter(1, 0)


class _SortedSet:
    """A Redis sorted set in memory: scores by member, and the members kept in sorted-set
    order as they change, so that reading the top is a slice.

    A few changes are moved into place by bisection (a batch of one event changes one or
    two members of most keys it touches, and up to its window's size of its item's
    neighbour list); more than :data:`MOVES` re-sort at the next read.

    >>> ranked = _SortedSet({"a": 1.0, "b": 3.0})
    >>> ranked.update({"c": 2.0, "a": 4.0})
    >>> ranked.top(2), ranked.top()
    ([('a', 4.0), ('b', 3.0)], [('a', 4.0), ('b', 3.0), ('c', 2.0)])
    >>> ranked.add({"b": 1.0, "d": 4.0}); ranked.top()
    [('d', 4.0), ('b', 4.0), ('a', 4.0), ('c', 2.0)]
    >>> ranked.trim(1); ranked.scores
    {'d': 4.0}
    """

    # Moving 20 members of a list of 200 (a new item's own neighbour list, every event of
    # a replay) costs 23 us against 104 us to re-sort; at about 100 sorting wins.
    MOVES = 64

    __slots__ = ("scores", "_weights", "_pairs")

    def __init__(self, scores: Mapping[str, float] | None = None) -> None:
        self.scores: dict[str, float] = dict(scores or {})
        # The scores ascending, to bisect (floats: a bisection over (score, member) tuples
        # cost a tuple a move and slower comparisons; a second bisection by member breaks
        # ties); None: sort at the next read.
        self._weights: list[float] | None = None
        # The same members as (member, score) pairs at the same positions: a read is a
        # reversed slice of it, in C. A replay reads each list right after it changed, so
        # building a read's pairs anew (as a map over the order did) cost 5 us a list of 50.
        self._pairs: list[Scored] = []

    def __len__(self) -> int:
        return len(self.scores)

    def update(self, changes: Mapping[str, float]) -> None:
        """Set each member of ``changes`` to its score there."""
        scores = self.scores
        if self._weights is not None and len(changes) > self.MOVES:
            self._weights = None
        if self._weights is None:
            scores.update(changes)
            return
        move = self._move
        for member, score in changes.items():
            move(member, scores.get(member), score)
            scores[member] = score

    def _move(self, member: str, old: float | None, score: float) -> None:
        """Move ``member`` from ``old`` (None: absent) to its place at ``score``: after the
        lower scores, and the equal ones of lower members (ascending (score, member))."""
        weights, pairs = self._weights, self._pairs
        if old is not None:
            at = bisect.bisect_left(weights, old)
            if pairs[at][0] != member:  # among equal scores, by member
                at = bisect.bisect_left(pairs, member, at, bisect.bisect_right(weights, old, at),
                                        key=_first)
            del weights[at], pairs[at]
        at = bisect.bisect_left(weights, score)
        if at < len(weights) and weights[at] == score:
            # Ties can be many (popularity that underflowed to 0 in a rescale): bisect them.
            at = bisect.bisect_left(pairs, member, at, bisect.bisect_right(weights, score, at),
                                    key=_first)
        weights.insert(at, score)
        pairs.insert(at, (member, score))

    def add(self, increments: Mapping[str, float], factor: float = 1.0) -> None:
        """Add ``factor`` times each increment to its member's score."""
        scores = self.scores
        if len(increments) > self.MOVES or self._weights is None:
            self.update({member: scores.get(member, 0.0) + increment * factor
                         for member, increment in increments.items()})
            return
        # A few moves (most keys a small batch touches): bisect each in place, without the
        # intermediate mapping update() takes.
        move = self._move
        for member, increment in increments.items():
            old = scores.get(member)
            score = scores[member] = (0.0 if old is None else old) + increment * factor
            move(member, old, score)

    def remove(self, members: Iterable[str]) -> None:
        """Drop each of ``members`` that is in the set."""
        scores = self.scores
        for member in members:
            if scores.pop(member, None) is not None:
                self._weights = None

    def rescale(self, factor: float) -> None:
        """Every score times ``factor``."""
        self.scores = {member: score * factor for member, score in self.scores.items()}
        self._weights = None  # scores that underflow to one value now tie: sort again

    def trim(self, size: int) -> None:
        """Keep the ``size`` highest members."""
        excess = len(self.scores) - size
        if excess > 0:
            self._sort()
            scores = self.scores
            for member, _ in self._pairs[:excess]:
                del scores[member]
            del self._weights[:excess], self._pairs[:excess]

    def _sort(self) -> None:
        if self._weights is None:
            order = sorted(map(_swap, self.scores.items()))
            self._weights = list(map(_first, order))
            self._pairs = list(map(_swap, order))

    def top(self, k: int | None = None) -> list[Scored]:
        """The ``k`` highest (all if None), in sorted-set order."""
        self._sort()
        if k is None:
            return self._pairs[::-1]
        return self._pairs[:-k - 1:-1] if k > 0 else []


class _CodedSortedSet(_SortedSet):
    """A neighbour list: a :class:`_SortedSet` that keeps its members' codes (the
    store's numbering, ``ids`` the item of each code) and scores in their order, so that
    reading its top as arrays is two slices. The replay reads neighbour lists only as
    arrays: their pairs are built when read as pairs, not kept at every move.

    >>> ids, codes = [], {}
    >>> def code(member):
    ...     if member not in codes:
    ...         codes[member] = len(ids); ids.append(member)
    ...     return codes[member]
    >>> listed = _CodedSortedSet(code, ids)
    >>> listed.update({"a": 1.0, "b": 3.0}); listed.add({"c": 2.0, "d": 3.0})
    >>> listed.top(3), listed.top_coded(3)
    ([('d', 3.0), ('b', 3.0), ('c', 2.0)], ([3, 2, 1], [3.0, 3.0, 2.0]))
    """

    __slots__ = ("_code", "_ids", "_codes")

    def __init__(self, code: Callable[[str], int], ids: Sequence[str]) -> None:
        super().__init__()
        self._code = code
        self._ids = ids
        # Valid while _weights is: a re-sort builds them again.
        self._codes: list[int] = []

    def _move(self, member: str, old: float | None, score: float) -> None:
        # _SortedSet._move's, over codes instead of pairs (a call to it cost more than its
        # work).
        weights, codes, ids = self._weights, self._codes, self._ids
        if old is not None:
            at = bisect.bisect_left(weights, old)
            if ids[codes[at]] != member:
                at = bisect.bisect_left(codes, member, at, bisect.bisect_right(weights, old, at),
                                        key=ids.__getitem__)
            del weights[at], codes[at]
        at = bisect.bisect_left(weights, score)
        if at < len(weights) and weights[at] == score:
            at = bisect.bisect_left(codes, member, at, bisect.bisect_right(weights, score, at),
                                    key=ids.__getitem__)
        weights.insert(at, score)
        codes.insert(at, self._code(member))

    def _sort(self) -> None:
        if self._weights is None:
            order = sorted(map(_swap, self.scores.items()))
            self._weights = list(map(_first, order))
            self._codes = list(map(self._code, map(_second, order)))

    def trim(self, size: int) -> None:
        excess = len(self.scores) - size
        if excess > 0:
            self._sort()
            scores, ids = self.scores, self._ids
            for code in self._codes[:excess]:
                del scores[ids[code]]
            del self._weights[:excess], self._codes[:excess]

    def top(self, k: int | None = None) -> list[Scored]:
        codes, weights = self.top_coded(len(self.scores) if k is None else k)
        return list(zip(map(self._ids.__getitem__, codes), weights, strict=True))

    def top_coded(self, k: int) -> tuple[list[int], list[float]]:
        """:meth:`top`'s codes and scores."""
        self._sort()
        if k <= 0:
            return [], []
        return self._codes[:-k - 1:-1], self._weights[:-k - 1:-1]


class InMemoryStore:
    """Dictionaries standing in for Redis sorted sets, for evaluation and unit tests."""

    def __init__(self, seed: int = 0, dedup_window: float = DEFAULT_WINDOW_SECONDS) -> None:
        self._seen = EventMemory(dedup_window)
        self._duplicates = 0
        self._history: dict[UserId, _SortedSet] = {}
        self._neighbours: dict[ItemId, _CodedSortedSet] = {}
        self._counts: dict[ItemId, float] = {}
        self._popular = _SortedSet()
        self._popular_by_category: dict[Category, _SortedSet] = {}
        self._items: dict[ItemId, dict[str, Any]] = {}
        self._document_changed: dict[ItemId, int] = {}
        self._catalog_version = 0
        self._users: dict[UserId, dict[str, Any]] = {}
        self._user_factors: dict[UserId, np.ndarray] = {}
        self._item_factors: dict[ItemId, np.ndarray] = {}
        self._item_changed: dict[ItemId, int] = {}
        self._factor_ids: list[ItemId] = []
        self._version = 0
        self._sample = random.Random(seed)
        self._events = 0
        self._blend: dict[str, int] = {}
        self._offsets: dict[str, int] = {}
        self._withdrawn: dict[ItemId, float] = {}
        self._event_types: dict[UserId, dict[ItemId, set[str]]] = defaultdict(dict)
        # The landmark of each decayed key, by (StateUpdate field, category or item).
        self._landmarks: dict[tuple[str, str | None], float] = {}
        self._plans: tuple[StateUpdate | None, dict] = (None, {})
        # For neighbour_arrays: a code per item that has been in a neighbour list or
        # counted, and the normalisers by code (a new array whenever they change: a read
        # keeps what it was given).
        self._codes: dict[ItemId, int] = {}
        self._ids: list[ItemId] = []
        self._coded_counts = np.zeros(0)

    def windows(self, user_ids: Iterable[UserId], limit: int) -> dict[UserId, list[Scored]]:
        # Positive scores rank above the others: the positive part of the top is the
        # top of the positive part.
        return {user: [pair for pair in self.history(user, limit) if pair[1] > 0]
                for user in user_ids}

    def history(self, user_id: UserId, limit: int) -> list[Scored]:
        history = self._history.get(user_id)
        return [] if history is None else history.top(limit)

    def histories(self, user_ids: Iterable[UserId], limit: int) -> dict[UserId, list[Scored]]:
        return {user: self.history(user, limit) for user in user_ids}

    def user_state(self, user_id: UserId, limit: int) -> tuple[list[Scored], np.ndarray | None]:
        return self.history(user_id, limit), self._user_factors.get(user_id)

    def first_read(self, user_id: UserId, limit: int, factors: bool = True,
                   popular: int = 0) -> FirstRead:
        # The store itself: the times as they are (one process, nothing to mirror).
        return FirstRead(self.history(user_id, limit),
                         self._user_factors.get(user_id) if factors else None,
                         Withdrawals(self._withdrawn),
                         self.popular(popular) if popular > 0 else None)

    def user_ids(self) -> Iterator[UserId]:
        yield from list(self._history)

    def _frame(self, key: tuple[str, str | None], exists: bool, update: StateUpdate
               ) -> Renormalisation:
        """The write rule for one decayed key (as the Redis APPLY script applies it)."""
        assert update.reference is not None and update.half_life is not None  # check_finite
        stored = self._landmarks.get(key)
        half_life = update.half_life
        if key[0] in POPULARITY_FIELDS and update.popularity_half_life is not None:
            half_life = update.popularity_half_life
        # Keys written by the same batches share landmarks: one plan per landmark a batch.
        plans = self._plans
        if plans[0] is not update:
            self._plans = plans = (update, {})
        plan = plans[1].get((stored, exists, half_life))
        if plan is None:
            plan = plans[1][stored, exists, half_life] = renormalise(
                stored, exists, update.reference, half_life, update.epoch)
        self._landmarks[key] = plan.landmark
        return plan

    def _add(self, key: tuple[str, str | None], scores: _SortedSet,
             increments: Mapping[str, float], update: StateUpdate) -> None:
        plan = self._frame(key, len(scores) > 0, update)
        if plan.rescale is not None:
            scores.rescale(plan.rescale)
        scores.add(increments, plan.increments)

    def apply(self, update: StateUpdate) -> None:
        check_finite(update)
        repeated = self._seen.duplicates(update.claims)
        if repeated:
            raise DuplicateEvents(repeated)
        if update.popularity:
            self._add(("popularity", None), self._popular, update.popularity, update)
        for category, increments in update.category_popularity.items():
            ranked = self._popular_by_category.setdefault(category, _SortedSet())
            self._add(("category_popularity", category), ranked, increments, update)
        if update.item_counts:
            counts = self._counts
            plan = self._frame(("item_counts", None), bool(counts), update)
            if plan.rescale is not None:
                for member, value in counts.items():
                    counts[member] = value * plan.rescale
            factor = plan.increments
            for member, increment in update.item_counts.items():
                counts[member] = counts.get(member, 0.0) + increment * factor
            self._code_counts(update.item_counts, plan.rescale)
        # A batch of one event writes about twenty neighbour lists: _add's rule inlined,
        # and a list trimmed only when it is over its length (calls cost more than the work).
        neighbours, frame, size = self._neighbours, self._frame, update.max_neighbours
        for item, increments in update.pairs.items():
            weights = neighbours.get(item)
            if weights is None:  # not setdefault: that builds a set for every key
                weights = neighbours[item] = _CodedSortedSet(self._code, self._ids)
            plan = frame(("pairs", item), len(weights.scores) > 0, update)
            if plan.rescale is not None:
                weights.rescale(plan.rescale)
            weights.add(increments, plan.increments)
            if len(weights.scores) > size:
                weights.trim(size)
        for user, scores in update.history.items():
            history = self._history.get(user)
            if history is None:
                history = self._history[user] = _SortedSet()
            known = history.scores
            changes = {}
            for item, score in scores.items():
                score = round(score * 1000) / 1000  # kept to the millisecond, as in Redis
                if item not in known or score > known[item]:
                    changes[item] = score
            history.update(changes)
            history.trim(update.history_length)
        for user, items in update.event_types.items():
            known = self._event_types[user]
            for item, types in items.items():
                known.setdefault(item, set()).update(types)
            history = self._history.get(user)
            kept = {} if history is None else history.scores
            for item in [item for item in known if item not in kept]:
                del known[item]
        if update.user_factors or update.item_factors:
            self._version += 1
        for user, vector in update.user_factors.items():
            self._user_factors[user] = as_stored_user_factors(vector)
        for item, vector in update.item_factors.items():
            if item not in self._item_factors:
                self._factor_ids.append(item)
            self._item_factors[item] = np.array(vector, np.float32)
            self._item_changed[item] = self._version
        self._events += update.events
        self._duplicates += update.duplicates
        self._seen.remember(update.claims)
        self._offsets.update(update.offsets)
        for name, count in update.blend.items():
            self._blend[name] = self._blend.get(name, 0) + count
        if update.blend:
            self._blend = forget(self._blend, update.blend_memory)

    def neighbours(self, item_ids: Iterable[ItemId], limit: int
                   ) -> dict[ItemId, Decayed[list[Scored]]]:
        landmarks, neighbours = self._landmarks, self._neighbours
        return {item: Decayed(neighbours[item].top(limit) if item in neighbours else [],
                              landmarks.get(("pairs", item))) for item in item_ids}

    def item_counts(self, item_ids: Iterable[ItemId]) -> Decayed[dict[ItemId, float]]:
        items = list(item_ids)
        return Decayed({item: count for item, count in zip(items, map(self._counts.get, items),
                                                           strict=True) if count is not None},
                       self._landmarks.get(("item_counts", None)))

    def neighbour_arrays(self, item_ids: Iterable[ItemId], limit: int) -> CodedNeighbours:
        landmarks, neighbours, ids = self._landmarks, self._neighbours, self._ids
        lists = {item: Decayed(neighbours[item].top_coded(limit) if item in neighbours
                               else ([], []), landmarks.get(("pairs", item)))
                 for item in item_ids}
        return CodedNeighbours(ids, self._codes, lists, Decayed(
            self._coded_counts[:len(ids)], landmarks.get(("item_counts", None))))

    def _code(self, item: ItemId) -> int:
        """``item``'s code, a new one if it has none (its normaliser 0 until counted)."""
        code = self._codes.get(item)
        if code is None:
            code = self._codes[item] = len(self._ids)
            self._ids.append(item)
            if code >= len(self._coded_counts):  # room for as many again
                self._coded_counts = np.concatenate(
                    [self._coded_counts, np.zeros(max(1024, code))])
        return code

    def _code_counts(self, changed: Iterable[ItemId], rescale: float | None) -> None:
        """Copy the normalisers of ``changed`` (all of them after a rescale, which multiplies
        each alike) into a new array of them by code."""
        codes = list(map(self._code, changed))
        counts = self._coded_counts * rescale if rescale is not None else self._coded_counts.copy()
        counts[codes] = list(map(self._counts.__getitem__, changed))
        self._coded_counts = counts

    def popular(self, k: int, category: Category | None = None) -> Decayed[list[Scored]]:
        if category is None:
            return Decayed(self._popular.top(k), self._landmarks.get(("popularity", None)))
        ranked = self._popular_by_category.get(category)
        return Decayed([] if ranked is None else ranked.top(k),
                       self._landmarks.get(("category_popularity", category)))

    def item_categories(self, item_ids: Iterable[ItemId]) -> dict[ItemId, list[Category]]:
        return {
            item: list(self._items[item].get("categories", ()))
            for item in item_ids
            if item in self._items
        }

    def user_factors(self, user_ids: Iterable[UserId]) -> dict[UserId, np.ndarray]:
        return {u: self._user_factors[u] for u in user_ids if u in self._user_factors}

    def item_factors(self, item_ids: Iterable[ItemId]) -> dict[ItemId, np.ndarray]:
        return {i: self._item_factors[i] for i in item_ids if i in self._item_factors}

    def sample_items(self, count: int) -> list[ItemId]:
        if len(self._factor_ids) <= count:
            return list(self._factor_ids)
        # random.sample draws k of n in O(k); numpy's choice without replacement cost
        # O(n) per batch.
        return [self._factor_ids[row]
                for row in self._sample.sample(range(len(self._factor_ids)), count)]

    def changed_items(self, since: float | None) -> tuple[float, dict[ItemId, np.ndarray]]:
        changed = {
            item: self._item_factors[item]
            for item, version in self._item_changed.items()
            if since is None or version > since
        }
        return float(self._version), changed

    def put_items(self, documents: Iterable[tuple[ItemId, Mapping[str, Any] | None]],
                  popularity: ForwardDecay | None = None) -> None:
        documents = list(documents)
        if popularity is not None:
            latest = dict(documents)
            self._recategorise(category_moves(self.item_categories(latest), latest),
                               popularity)
        for item_id, document in documents:
            self._catalog_version += 1
            self._document_changed[item_id] = self._catalog_version
            if document is None:
                self._items.pop(item_id, None)
            else:
                self._items[item_id] = dict(document)
            withdrawn = withdrawn_at(document)
            if withdrawn is None:
                self._withdrawn.pop(item_id, None)
            else:
                self._withdrawn[item_id] = withdrawn

    def _recategorise(self, moves: Mapping[ItemId, tuple[list[Category], list[Category]]],
                      decay: ForwardDecay) -> None:
        """Set each item's per-category popularity to its overall popularity (as the Redis
        RECATEGORISE script does)."""
        overall = self._popular.scores
        here = self._landmarks.get(("popularity", None))
        for item, (categories, left) in moves.items():
            for category in left:
                ranked = self._popular_by_category.get(category)
                if ranked is not None:
                    ranked.remove([item])
            score = overall.get(item)
            if score is None or here is None:
                continue
            for category in categories:
                key = ("category_popularity", category)
                ranked = self._popular_by_category.setdefault(category, _SortedSet())
                plan = renormalise(self._landmarks.get(key), len(ranked) > 0, here,
                                   decay.half_life, decay.epoch)
                if plan.rescale is not None:
                    ranked.rescale(plan.rescale)
                self._landmarks[key] = plan.landmark
                ranked.update({item: score * plan.increments})

    def changed_documents(self, since: float | None
                          ) -> tuple[float, dict[ItemId, dict[str, Any] | None]]:
        changed = {item: self._items.get(item) for item, version in
                   self._document_changed.items() if since is None or version > since}
        return float(self._catalog_version), changed

    def screen(self, item_ids: Iterable[ItemId], now: float, documents: bool = False
               ) -> tuple[set[ItemId], dict[ItemId, dict[str, Any]]]:
        items = list(item_ids)
        known = self._withdrawn
        withdrawn = {i for i in items if i in known and is_withdrawn(known[i], now)}
        found = {i: self._items[i] for i in items
                 if documents and i in self._items and i not in withdrawn}
        return withdrawn, found

    def interaction_types(self, user_id: UserId) -> dict[ItemId, frozenset[str]]:
        return {item: frozenset(types)
                for item, types in self._event_types.get(user_id, {}).items()}

    def get_item(self, item_id: ItemId) -> dict[str, Any] | None:
        return self._items.get(item_id)

    def put_users(self, documents: Iterable[tuple[UserId, Mapping[str, Any]]]) -> None:
        for user_id, document in documents:
            self._users[user_id] = dict(document)

    def delete_users(self, user_ids: Iterable[UserId]) -> None:
        for user_id in user_ids:
            for state in (self._users, self._history, self._user_factors,
                          self._event_types):
                state.pop(user_id, None)

    def get_user(self, user_id: UserId) -> dict[str, Any] | None:
        return self._users.get(user_id)

    def events_applied(self) -> int:
        return self._events

    def duplicates_skipped(self) -> int:
        return self._duplicates

    def blend_tally(self) -> dict[str, int]:
        return dict(self._blend)

    def applied_offsets(self, partitions: Iterable[str]) -> dict[str, int]:
        return {p: self._offsets[p] for p in partitions if p in self._offsets}

    def ping(self) -> bool:
        return True
