"""Joining feedback to what was shown: impressions, and the rule that decides whether an
event earns its variant a reward.

A list that was shown is an :class:`Impression`. An event carrying that list's
``recommendation_id`` is credited when it comes from the same user, touches an item that
was in the list, is a rewarded event type, and arrives within the attribution window.
Duplicates (the same list, item and event type again) are credited once: the store
enforces that atomically, since retried producers and replays send the same event twice.

Times: the window is measured from when the list was shown (the API's clock) to when the
event was received (its Kafka record time, set when the API accepted it), neither of which
a client chooses. The event's own ``timestamp`` is the client's word: it can only cost the
event its credit (a claimed time past the window is late, one before the list was shown
is refused), never earn one. ``skew`` forgives that much clock difference.

Only lists whose variant the placement's allocation chose count for the placement's
variants: a forced ``model=``, an unconfigured placement or a variant the placement does
not have is recorded (so feedback on it is told apart) but credits nothing. The lists of
``GET /popular`` and ``GET /items/{id}/similar`` have no allocation: each route is a
placement of its own with one variant (:data:`ROUTE_PLACEMENTS`), always counted, so a
click on them is credited like one on a placement's list. Such a list asked for without a
``user_id`` was shown to nobody in particular (``user_id`` None): any user's click on it
counts.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from recommender.base import ItemId, UserId

# Outcomes that earn nothing, counted so operators can see where feedback goes.
NO_IMPRESSION = "no_impression"  # unknown id, or its impression expired
LATE = "late"
OTHER_USER = "other_user"
NOT_IN_LIST = "not_in_list"
NOT_A_REWARD = "not_a_reward"
NOT_ALLOCATED = "not_allocated"  # the list's variant was not the placement's choice
BEFORE_IMPRESSION = "before_impression"  # claims to precede the list it names

# The lists of routes without an allocation: route placement -> its one variant. The admin
# API refuses placements of these names, so their counters never mix with a configured one.
ROUTE_PLACEMENTS = {"popular": "popular", "similar": "similar"}

CLOCK_SKEW = 60.0  # seconds of clock difference forgiven between list and event


@dataclass(frozen=True)
class Impression:
    recommendation_id: str
    user_id: UserId | None  # None: a list asked for anonymously (/popular, /similar)
    placement: str
    variant: str
    model: str
    items: tuple[ItemId, ...]
    timestamp: float
    allocated: bool = True  # False: not the placement's choice, counts for no variant
    # How the allocation chose (schemas.impression.Decision's fields): None when it did not.
    decision: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        document = {"recommendation_id": self.recommendation_id, "user_id": self.user_id,
                    "placement": self.placement, "variant": self.variant, "model": self.model,
                    "items": list(self.items), "timestamp": self.timestamp,
                    "allocated": self.allocated}
        if self.decision is not None:
            document["decision"] = dict(self.decision)
        return document

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Impression:
        """From a document already validated (``schemas.impression.ImpressionMessage``)."""
        return cls(data["recommendation_id"], data["user_id"], data["placement"],
                   data["variant"], data["model"], tuple(data["items"]), data["timestamp"],
                   data.get("allocated", True), data.get("decision"))


@dataclass(frozen=True)
class Credit:
    """One rewarded event: which list, variant and position earned it."""

    recommendation_id: str
    placement: str
    variant: str
    item_id: ItemId
    position: int  # 0-based position of the item in the list
    event_type: str
    # The list's logged decision: a clustered or contextual bandit learns from it.
    decision: Mapping[str, Any] | None = None


def attribute(
    impression: Impression | None,
    user_id: UserId,
    item_id: ItemId,
    event_type: str,
    timestamp: float,
    received: float,
    window: float,
    reward_types: Collection[str],
    skew: float = CLOCK_SKEW,
) -> Credit | str:
    """The credit an event earns, or the reason it earns none.

    ``timestamp`` is the time the event claims, ``received`` when it reached Kafka.

    Examples
    --------
    >>> shown = Impression("r1", "ann", "home", "B", "hybrid", ("tea", "cup"), 100.0)
    >>> attribute(shown, "ann", "cup", "click", 130.0, 131.0, 3600, {"click"}).position
    1
    >>> attribute(shown, "ann", "cup", "click", 130.0, 4000.0, 3600, {"click"})
    'late'
    >>> attribute(shown, "ann", "cup", "click", 1.0, 131.0, 3600, {"click"})
    'before_impression'
    >>> attribute(shown, "bob", "cup", "click", 130.0, 131.0, 3600, {"click"})
    'other_user'
    >>> anyone = Impression("r2", None, "popular", "popular", "popular", ("tea",), 100.0)
    >>> attribute(anyone, "bob", "tea", "click", 130.0, 131.0, 3600, {"click"}).variant
    'popular'
    """
    if event_type not in reward_types:
        return NOT_A_REWARD
    if impression is None:
        return NO_IMPRESSION
    if not impression.allocated:
        return NOT_ALLOCATED
    if impression.user_id is not None and impression.user_id != user_id:
        return OTHER_USER
    shown = impression.timestamp
    if min(timestamp, received) < shown - skew:
        return BEFORE_IMPRESSION
    if max(timestamp, received) - shown > window:
        return LATE
    try:
        position = impression.items.index(item_id)
    except ValueError:
        return NOT_IN_LIST
    return Credit(impression.recommendation_id, impression.placement, impression.variant,
                  item_id, position, event_type, impression.decision)


class Attributor:
    """Credits feedback events against stored impressions, through a feedback store.

    An event whose impression has not arrived yet (the impressions topic can lag the
    events topic) waits up to ``grace`` seconds of wall time and is tried again; after
    that it counts as ``no_impression``. Waiting events live in the feedback store (the
    worker writes them in the batch's atomic apply, with its offsets), so a crash loses
    none: the next worker settles them, each once.

    Impressions count for a placement's variant only when the allocation chose it and the
    placement is configured with that variant (read from the store every ``refresh``
    seconds, and at once for a name not known yet on a list shown since the last read):
    names nobody configured create no counters, whatever arrives on the impressions topic.

    Examples
    --------
    >>> from recommender.feedback import InMemoryFeedback
    >>> store = InMemoryFeedback()
    >>> _ = store.put_placement({"name": "home", "variants": [{"name": "A"}, {"name": "B"}]},
    ...                         "docs", 0.0)
    >>> attributor = Attributor(store, window=3600, grace=5, reward_types={"click"})
    >>> shown = Impression("r1", "ann", "home", "B", "hybrid", ("tea", "cup"), 100.0)
    >>> attributor.credit_many([("r2", "ann", "cup", "click", 110.0, 110.0)], now=0.0)
    {}
    >>> attributor.record_impressions([shown, Impression("r2", "ann", "home", "A",
    ...                                "popular", ("cup",), 100.0)], now=0.5)
    2
    >>> attributor.credit_many([("r1", "ann", "cup", "click", 120.0, 120.0),
    ...                         ("r1", "ann", "cup", "click", 121.0, 121.0)], now=1.0)
    {'credited': 2, 'duplicate': 1}
    >>> store.variant_counters("home")["A"]["lists_rewarded"]
    1
    """

    def __init__(self, store, window: float, grace: float, reward_types: Collection[str],
                 skew: float = CLOCK_SKEW, refresh: float = 1.0) -> None:
        self.store = store
        self.window = window
        self.grace = grace
        self.reward_types = frozenset(reward_types)
        self.skew = skew
        self.refresh = refresh
        self._entries = 0  # tags the waiting entries of events given to credit_many
        self._lock = threading.Lock()
        self._configured: dict[str, frozenset[str]] = {}  # placement -> its variants
        self._configured_at = -math.inf

    @property
    def ttl(self) -> float:
        """Impressions outlive the window so late events are told apart from unknown ones."""
        return 2 * self.window + self.grace

    def record_impressions(self, impressions: Sequence[Impression], now: float) -> int:
        """Keep each impression; count it for its variant only where that is configured.
        Returns how many were new."""
        # A name not known yet may have been configured since the last read, if its list
        # was shown after that read (give or take the clocks' skew): read again at once,
        # or that impression would never count. Lists shown before the read cannot make
        # it read again, so a stream of names nobody configured costs one read a batch
        # at most, and old ones none.
        if now - self._configured_at >= self.refresh or any(
                i.allocated and not self._counts(i)
                and i.timestamp >= self._configured_at - self.skew for i in impressions):
            self._read_configured(now)
        counted = [i if self._counts(i) else replace(i, allocated=False) for i in impressions]
        return self.store.record_impressions(counted, self.ttl)

    def _counts(self, impression: Impression) -> bool:
        if not impression.allocated:
            return False
        if impression.placement in ROUTE_PLACEMENTS:
            return impression.variant == ROUTE_PLACEMENTS[impression.placement]
        return impression.variant in self._configured.get(impression.placement, ())

    def _read_configured(self, now: float) -> None:
        self._configured = {
            name: frozenset(variant["name"] for variant in config.get("variants", ()))
            for name, config in self.store.placements().items()}
        self._configured_at = now

    def credit_many(self, events, now: float) -> dict[str, int]:
        """Attribute ``(recommendation_id, user_id, item_id, event_type, timestamp,
        received)`` tuples plus any waiting ones; returns outcome counts (``credited``
        included). The events wait in the store first (:func:`waiting_entry`), so feedback
        is only ever settled from there, once."""
        rewarded = [tuple(event) for event in events if event[3] in self.reward_types]
        if rewarded:
            with self._lock:
                first = self._entries
                self._entries += len(rewarded)
            self.store.wait([(waiting_entry(f"n{first + n}", event), now + self.grace)
                             for n, event in enumerate(rewarded)])
        return self.settle(now)

    def settle(self, now: float) -> dict[str, int]:
        """Attribute every waiting event: credited, or counted under the reason it earns
        nothing, and taken out of the waiting ones in the same atomic step (an event
        settled by a concurrent call, or before a crash, is not counted again); one whose
        impression has not arrived waits until its time to give up."""
        entries = self.store.waiting()
        if not entries:
            return {}
        events = [(entry, deadline, waiting_event(entry)) for entry, deadline in entries]
        shown = self.store.impressions({event[0] for _, _, event in events})
        credits, settled, final = [], [], []
        for entry, deadline, event in events:
            rid, user, item, kind, timestamp, received = event
            impression = shown.get(rid)
            result = attribute(impression, user, item, kind, timestamp, received,
                               self.window, self.reward_types, self.skew)
            if result == NO_IMPRESSION and now < deadline:
                continue
            if isinstance(result, Credit):
                credits.append(result)
                settled.append(entry)
            else:  # counted for the list's placement too, where the list is known
                final.append((entry, result,
                              None if impression is None else impression.placement))
        outcomes = self.store.settle(final) if final else {}
        fresh = self.store.credit(credits, self.ttl, settled) if credits else []
        if any(value is True for value in fresh):
            outcomes["credited"] = sum(value is True for value in fresh)
        if any(value is False for value in fresh):
            outcomes["duplicate"] = sum(value is False for value in fresh)
        return outcomes

    def waiting(self) -> int:
        return len(self.store.waiting())


def waiting_entry(tag: str, event: Sequence[Any]) -> str:
    """How a feedback event waits in a store: ``tag`` (unique per event: its record's
    position on Kafka) and the event, as one string.

    >>> entry = waiting_entry("0:7", ("r1", "ann", "cup", "click", 120.0, 121.0))
    >>> waiting_event(entry)
    ('r1', 'ann', 'cup', 'click', 120.0, 121.0)
    """
    return json.dumps([tag, *event], separators=(",", ":"))


def waiting_event(entry: str | bytes) -> tuple:
    """The event of a :func:`waiting_entry`."""
    return tuple(json.loads(entry)[1:])
