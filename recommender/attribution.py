"""Joining feedback to what was shown: impressions, and the rule that decides whether an
event earns its variant a reward.

A list that was shown is an :class:`Impression`. An event carrying that list's
``recommendation_id`` is credited when it comes from the same user, touches an item that
was in the list, is a rewarded event type, and happens within the attribution window.
Duplicates (the same list, item and event type again) are credited once: the store
enforces that atomically, since retried producers and replays send the same event twice.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from recommender.base import ItemId, UserId

# Outcomes that earn nothing, counted so operators can see where feedback goes.
NO_IMPRESSION = "no_impression"  # unknown id, or its impression expired
LATE = "late"
OTHER_USER = "other_user"
NOT_IN_LIST = "not_in_list"
NOT_A_REWARD = "not_a_reward"


@dataclass(frozen=True)
class Impression:
    recommendation_id: str
    user_id: UserId
    placement: str
    variant: str
    model: str
    items: tuple[ItemId, ...]
    timestamp: float

    def to_dict(self) -> dict[str, Any]:
        return {"recommendation_id": self.recommendation_id, "user_id": self.user_id,
                "placement": self.placement, "variant": self.variant, "model": self.model,
                "items": list(self.items), "timestamp": self.timestamp}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Impression:
        return cls(str(data["recommendation_id"]), str(data["user_id"]),
                   str(data["placement"]), str(data["variant"]), str(data.get("model", "")),
                   tuple(str(item) for item in data["items"]), float(data["timestamp"]))


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
    window: float,
    reward_types: Collection[str],
) -> Credit | str:
    """The credit an event earns, or the reason it earns none.

    Examples
    --------
    >>> shown = Impression("r1", "ann", "home", "B", "hybrid", ("tea", "cup"), 100.0)
    >>> attribute(shown, "ann", "cup", "click", 130.0, 3600, {"click"}).position
    1
    >>> attribute(shown, "ann", "cup", "click", 4000.0, 3600, {"click"})
    'late'
    >>> attribute(shown, "bob", "cup", "click", 130.0, 3600, {"click"})
    'other_user'
    """
    if event_type not in reward_types:
        return NOT_A_REWARD
    if impression is None:
        return NO_IMPRESSION
    if impression.user_id != user_id:
        return OTHER_USER
    if timestamp - impression.timestamp > window:
        return LATE
    try:
        position = impression.items.index(item_id)
    except ValueError:
        return NOT_IN_LIST
    return Credit(impression.recommendation_id, impression.placement, impression.variant,
                  item_id, position, event_type)
