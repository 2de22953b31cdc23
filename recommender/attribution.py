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
not have is recorded (so feedback on it is told apart) but credits nothing.
"""

from __future__ import annotations

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

CLOCK_SKEW = 60.0  # seconds of clock difference forgiven between list and event
UNKNOWN_NAME_REFRESH = 0.1  # seconds between reads of the placements on unknown names


@dataclass(frozen=True)
class Impression:
    recommendation_id: str
    user_id: UserId
    placement: str
    variant: str
    model: str
    items: tuple[ItemId, ...]
    timestamp: float
    allocated: bool = True  # False: not the placement's choice, counts for no variant

    def to_dict(self) -> dict[str, Any]:
        return {"recommendation_id": self.recommendation_id, "user_id": self.user_id,
                "placement": self.placement, "variant": self.variant, "model": self.model,
                "items": list(self.items), "timestamp": self.timestamp,
                "allocated": self.allocated}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Impression:
        """From a document already validated (``schemas.impression.ImpressionMessage``)."""
        return cls(data["recommendation_id"], data["user_id"], data["placement"],
                   data["variant"], data["model"], tuple(data["items"]), data["timestamp"],
                   data.get("allocated", True))


@dataclass(frozen=True)
class Credit:
    """One rewarded event: which list, variant and position earned it."""

    recommendation_id: str
    placement: str
    variant: str
    item_id: ItemId
    position: int  # 0-based position of the item in the list
    event_type: str


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
    """
    if event_type not in reward_types:
        return NOT_A_REWARD
    if impression is None:
        return NO_IMPRESSION
    if not impression.allocated:
        return NOT_ALLOCATED
    if impression.user_id != user_id:
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
                  item_id, position, event_type)


class Attributor:
    """Credits feedback events against stored impressions, through a feedback store.

    An event whose impression has not arrived yet (the impressions topic can lag the
    events topic) waits up to ``grace`` seconds of wall time and is tried again; after
    that it counts as ``no_impression``. Waiting events live in memory: a worker crash
    loses them (their Kafka offsets are already committed), which is documented.

    Impressions count for a placement's variant only when the allocation chose it and the
    placement is configured with that variant (read from the store, at most every
    ``refresh`` seconds, sooner when a name is not known yet): names nobody configured
    create no counters, whatever arrives on the impressions topic.

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
        self._waiting: list[tuple[float, tuple]] = []  # (give up at, event)
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
        age = now - self._configured_at
        # A name not known yet may have been configured a moment ago: read again sooner,
        # but not for every batch of names nobody configured.
        if age >= self.refresh or (age >= UNKNOWN_NAME_REFRESH and not all(
                map(self._counts, impressions))):
            self._read_configured(now)
        counted = [i if self._counts(i) else replace(i, allocated=False) for i in impressions]
        return self.store.record_impressions(counted, self.ttl)

    def _counts(self, impression: Impression) -> bool:
        return impression.allocated and impression.variant in self._configured.get(
            impression.placement, ())

    def _read_configured(self, now: float) -> None:
        self._configured = {
            name: frozenset(variant["name"] for variant in config.get("variants", ()))
            for name, config in self.store.placements().items()}
        self._configured_at = now

    def credit_many(self, events, now: float) -> dict[str, int]:
        """Attribute ``(recommendation_id, user_id, item_id, event_type, timestamp,
        received)`` tuples plus any waiting ones; returns outcome counts (``credited``
        included)."""
        with self._lock:
            waiting, self._waiting = self._waiting, []
            candidates = [event for _, event in waiting]
            give_up = [deadline for deadline, _ in waiting]
            for event in events:
                if event[3] in self.reward_types:
                    candidates.append(tuple(event))
                    give_up.append(now + self.grace)
            if not candidates:
                return {}
            shown = self.store.impressions({event[0] for event in candidates})
            outcomes: dict[str, int] = {}
            by_placement: dict[str, dict[str, int]] = {}  # where the list is known

            def count(result: str, placement: str | None) -> None:
                outcomes[result] = outcomes.get(result, 0) + 1
                if placement is not None:
                    counts = by_placement.setdefault(placement, {})
                    counts[result] = counts.get(result, 0) + 1

            credits = []
            for event, deadline in zip(candidates, give_up, strict=True):
                rid, user, item, kind, timestamp, received = event
                impression = shown.get(rid)
                result = attribute(impression, user, item, kind, timestamp, received,
                                   self.window, self.reward_types, self.skew)
                if result == NO_IMPRESSION and now < deadline:
                    self._waiting.append((deadline, event))
                elif isinstance(result, Credit):
                    credits.append(result)
                else:
                    count(result, None if impression is None else impression.placement)
            for credit, new in zip(credits, self.store.credit(credits, self.ttl), strict=True):
                count("credited" if new else "duplicate", credit.placement)
            if outcomes:
                self.store.count_outcomes(outcomes, by_placement)
            return outcomes

    def waiting(self) -> int:
        return len(self._waiting)
