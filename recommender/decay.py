"""Forward exponential decay with a landmark per decayed key (Cormode et al., 2009).

Instead of shrinking every stored count as time passes, each key (a popularity list, the
co-occurrence normaliser, an item's neighbour list) stores its values in its own frame: a
landmark time ``l`` such that stored score ``S`` means the decayed value
``S * 2 ** ((l - now) / half_life)`` at time ``now``. A batch computes its increments in its
own frame, relative to its latest event ``B`` (``weight * 2 ** ((t - B) / half_life)``, at
most ``weight``), and the store brings them into each key's frame as it adds them
(:func:`renormalise`). When ``B`` has moved more than :data:`RESCALE_HALF_LIVES` half-lives
past a key's landmark, the key is rescaled first (every member times
``2 ** ((l - B) / half_life)``) and its landmark moves to ``B``. So stored values stay within
``2 ** RESCALE_HALF_LIVES`` of the decayed mass they describe, whatever the half-life and
however long the run: nothing overflows and nothing is clamped.

Reads convert with the key's landmark (:meth:`ForwardDecay.value_at`); ratios of values
(the cosine of co-occurrence) need no reading time at all, only the landmarks' difference.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Generic, NamedTuple, TypeVar

from recommender.base import Scored

# A key is rescaled once a batch's reference is this many half-lives past its landmark:
# stored values stay below 2**64 times the decayed mass they describe (far from the
# 2**1024 where doubles end), and rescales are rare: hourly at a one-minute half-life,
# every 15 months at seven days.
RESCALE_HALF_LIVES = 64.0

# The frame of decayed state written before landmarks existed (2025-01-01, the former
# fixed epoch): a key that has values but no landmark is read and rescaled as if this were
# its landmark (the setting STREAMREC_DECAY_EPOCH).
LEGACY_EPOCH = 1_735_689_600.0

# See ForwardDecay.ratio.
MAX_RATIO_EXPONENT = 1000.0

Scores = TypeVar("Scores")


class Decayed(NamedTuple, Generic[Scores]):
    """Scores read from one decayed key, in its frame.

    ``landmark`` None: the key has no landmark (nothing stored, or state written before
    landmarks existed); :meth:`ForwardDecay.landmark` reads it as the legacy epoch.
    """

    scores: Scores
    landmark: float | None


class Renormalisation(NamedTuple):
    """How one batch writes one decayed key (see :func:`renormalise`). A named tuple: a
    replay builds one for most keys it writes (a frozen dataclass cost 1 us each)."""

    landmark: float  # the key's landmark after the write
    rescale: float | None  # first multiply every stored value by this (None: leave them)
    increments: float  # multiply each of the batch's increments by this


def renormalise(stored: float | None, exists: bool, reference: float, half_life: float,
                epoch: float = LEGACY_EPOCH) -> Renormalisation:
    """The write rule for a key with landmark ``stored`` (None: none stored) receiving a
    batch's increments computed relative to ``reference``.

    The Redis APPLY script (``streamrec.storage.scripts``) mirrors this function; the
    stores' shared contract test holds them to the same results.

    - a key with nothing stored takes the batch's frame;
    - a key with values but no landmark (written before landmarks) has ``epoch``'s frame;
    - a key whose landmark is more than :data:`RESCALE_HALF_LIVES` half-lives behind the
      reference is rescaled into the batch's frame;
    - otherwise (also a reference behind the landmark: a lagging partition, a replay) the
      increments move into the key's frame.

    Examples
    --------
    >>> renormalise(None, False, reference=100.0, half_life=10.0)
    Renormalisation(landmark=100.0, rescale=None, increments=1.0)
    >>> renormalise(80.0, True, reference=100.0, half_life=10.0)
    Renormalisation(landmark=80.0, rescale=None, increments=4.0)
    >>> renormalise(80.0, True, reference=70.0, half_life=10.0).increments
    0.5
    >>> renormalise(0.0, True, reference=1000.0, half_life=10.0)
    Renormalisation(landmark=1000.0, rescale=7.888609052210118e-31, increments=1.0)
    >>> renormalise(None, True, reference=30.0, half_life=10.0, epoch=10.0).increments
    4.0
    """
    if stored is None:
        if not exists:
            return Renormalisation(reference, None, 1.0)
        stored = epoch
    if reference - stored > RESCALE_HALF_LIVES * half_life:
        return Renormalisation(reference, 2.0 ** ((stored - reference) / half_life), 1.0)
    return Renormalisation(stored, None, 2.0 ** ((reference - stored) / half_life))


class ForwardDecay:
    """Weights and reads of forward-decayed counters kept in per-key frames.

    Parameters
    ----------
    half_life
        Seconds after which an event counts half as much.
    epoch
        The frame of keys written before landmarks existed (see :data:`LEGACY_EPOCH`).

    Examples
    --------
    >>> decay = ForwardDecay(half_life=10.0, epoch=0.0)
    >>> decay.factor(0.0, reference=20.0)
    0.25
    >>> stored = 1.0 * decay.factor(0.0, 10.0) + 1.0 * decay.factor(10.0, 10.0)
    >>> decay.value_at(stored, landmark=10.0, now=20.0)
    0.75
    >>> decay.ratio(30.0, 10.0)  # a value kept at landmark 30 in the frame of landmark 10
    4.0
    """

    def __init__(self, half_life: float, epoch: float = LEGACY_EPOCH) -> None:
        if not half_life > 0 or not math.isfinite(half_life):
            raise ValueError(f"half_life: {half_life!r} must be a positive number of seconds")
        self.half_life = half_life
        self.epoch = epoch

    def factor(self, timestamp: float, reference: float) -> float:
        """An event at ``timestamp``'s weight in the frame of ``reference``: at most 1 for
        events up to the reference (0.0 when below what a double holds)."""
        return 2.0 ** ((timestamp - reference) / self.half_life)

    def landmark(self, landmark: float | None) -> float:
        """A stored landmark, or the legacy epoch where none is stored."""
        return self.epoch if landmark is None else landmark

    def reading_time(self, now: float, landmarks: Iterable[float | None] = ()) -> float:
        """When to read values of keys with ``landmarks``: ``now``, or the latest landmark
        if that is later (events stamped ahead of the reader's clock). Values are never
        read before their landmark, so a read never grows them past what was stored."""
        return max([now, *(self.landmark(landmark) for landmark in landmarks)])

    def scale(self, landmark: float | None, now: float) -> float:
        """What a stored value of a key with ``landmark`` is multiplied by to read it as
        the decayed count at ``now``, read no earlier than the landmark
        (:meth:`reading_time`): at most 1, so a read never overflows."""
        landmark = self.landmark(landmark)
        return 2.0 ** ((landmark - max(now, landmark)) / self.half_life)

    def value_at(self, stored: float, landmark: float | None, now: float) -> float:
        """A stored value of a key with ``landmark`` as the decayed count at ``now``."""
        return stored * self.scale(landmark, now)

    def values_at(self, found: Decayed[list[Scored]], now: float) -> list[Scored]:
        """Every score of ``found`` as its decayed value at ``now``."""
        scale = self.scale(found.landmark, now)
        return [(item, score * scale) for item, score in found.scores]

    def ratio(self, landmark: float | None, base: float | None) -> float:
        """What a value in the frame of ``landmark`` is multiplied by to be in the frame of
        ``base``: ``2 ** ((landmark - base) / half_life)``.

        The write rule keeps related keys' landmarks within :data:`RESCALE_HALF_LIVES` of
        each other; only state written with another half-life can be further apart, and
        the exponent is capped there so that a read never raises.
        """
        exponent = (self.landmark(landmark) - self.landmark(base)) / self.half_life
        return 2.0 ** min(exponent, MAX_RATIO_EXPONENT)
