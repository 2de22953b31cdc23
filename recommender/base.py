"""Vocabulary shared by every model."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

UserId = str
ItemId = str
Category = str
Scored = tuple[ItemId, float]

# Split weights of variants and hybrid blend weights are relative; bounded so that sums of
# them stay far from overflowing (weights of 1e308 summed to infinity: every user went to
# one variant and every blended score was NaN, served as null).
MAX_WEIGHT = 1e6

# The models a list can be ranked by: the one place they are named. MODELS are the
# streaming models, learned from each event as it arrives. BATCH_MODELS are trained on a
# schedule from the retained log (``streamrec trainer``), and ``lists:NAME`` serves a set
# of lists a batch job outside streamrec made (``streamrec lists import NAME FILE``).
StreamingModel = Literal["popular", "cooccurrence", "mf", "hybrid"]
MODELS: tuple[str, ...] = get_args(StreamingModel)
BATCH_MODELS: tuple[str, ...] = ("ease", "ials")
LISTS_PREFIX = "lists:"
LIST_SET_PATTERN = r"[a-z0-9][a-z0-9_-]{0,31}"  # the NAME of lists:NAME
MODEL_PATTERN = (f"^({'|'.join(MODELS + BATCH_MODELS)}|{LISTS_PREFIX}{LIST_SET_PATTERN})$")


def check_model(name: str) -> str:
    """``name`` if it names a model a list can be ranked by, else a ValueError saying why.

    >>> check_model("hybrid"), check_model("ease"), check_model("lists:nightly")
    ('hybrid', 'ease', 'lists:nightly')
    >>> check_model("lists:Bad Name")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: model: 'lists:Bad Name' is not one of [...] nor lists:NAME (NAME: ...)
    """
    if re.fullmatch(MODEL_PATTERN, name) is None:
        raise ValueError(f"model: {name!r} is not one of {list(MODELS + BATCH_MODELS)} nor "
                         f"{LISTS_PREFIX}NAME (NAME: {LIST_SET_PATTERN})")
    return name


@dataclass(frozen=True, slots=True)
class Interaction:
    """One interaction as the models see it.

    ``weight`` comes from the event type (see :class:`recommender.weights.EventWeights`);
    a weight of 0 marks an item the user has seen but did not like, which is excluded
    from their lists but teaches no model anything.
    """

    user_id: UserId
    item_id: ItemId
    timestamp: float
    weight: float
    event_type: str | None = None  # kept per (user, item) for filters on Interactions
