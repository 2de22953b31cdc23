"""The impressions topic's contract: what the API logs for every list it serves.

The worker validates each message with :class:`ImpressionMessage` exactly as the API
validates what clients send (types, finite numbers, bounded names and sizes), and reads
stored impressions back through it too: a record that breaks it, on the topic or in Redis,
is refused with a reason and can never reach the attribution code.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, Strict, StringConstraints

from schemas.models import MAX_TIMESTAMP, Id, ModelName, _Contract

# Placement, variant and filter names: what a key, a Prometheus label and a URL can carry.
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
Name = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=64,
                                                  pattern=NAME_PATTERN)]
MAX_ITEMS = 500  # the longest list the API serves (k)


MAX_DECISION_FEATURES = 64  # a contextual bandit's feature vector, as logged


class Decision(_Contract):
    """How the placement's allocation chose the variant of one list, logged with it so
    that another allocation can be judged off-policy from the log (``report --policy``).

    ``propensity`` is the probability the allocation gave the chosen variant at that
    moment (a split's share, a bandit's posterior probability mixed with its floor);
    ``segment`` is the user's most likely segment (``clustered``), ``features`` the
    context the allocation saw (``contextual``: bounded, named, finite), ``targeted``
    whether the request matched the experiment's targeting condition (None: no
    condition; False: it got the placement's default variant).
    """

    strategy: Name
    propensity: Annotated[float, Strict(), Field(gt=0, le=1)]
    segment: Annotated[int, Strict(), Field(ge=0, le=255)] | None = None
    features: Annotated[dict[Name, Annotated[float, Strict()]],
                        Field(max_length=MAX_DECISION_FEATURES)] = Field(default_factory=dict)
    targeted: bool | None = None


class ImpressionMessage(_Contract):
    """One list shown: by whom, where, which variant and model, which items, when.

    ``allocated`` is false when the placement's allocation did not choose the variant (a
    forced ``model=``, an unconfigured placement): such a list is kept so that feedback on
    it is told apart, but it never counts for the placement's variants.
    """

    recommendation_id: Id
    user_id: Id | None = None  # None: shown to nobody in particular (/popular, /similar)
    placement: Name
    variant: Name
    model: ModelName
    items: Annotated[list[Id], Field(max_length=MAX_ITEMS)]
    timestamp: Annotated[float, Strict(), Field(ge=0, le=MAX_TIMESTAMP)]
    allocated: bool = True
    decision: Decision | None = None  # None: not allocated, or logged before decisions were
