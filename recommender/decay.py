"""Forward exponential decay (Cormode et al., 2009).

Instead of shrinking every stored count as time passes, each new event is weighted by
``2 ** ((t - epoch) / half_life)``; comparing stored sums at any moment then ranks by
exponentially decayed counts, and dividing by the same factor at ``now`` reads them back
as decayed counts. Stored values grow by 2 every half-life and stay within float range
for about 1,000 half-lives after ``epoch`` (19 years at the default 7 days).
"""

from __future__ import annotations

import math

MAX_EXPONENT = 1000.0


class ForwardDecay:
    """Weights for forward-decayed counters.

    Parameters
    ----------
    half_life
        Seconds after which an event counts half as much.
    epoch
        The landmark time (epoch seconds) where the factor is 1.

    Examples
    --------
    >>> decay = ForwardDecay(half_life=10.0, epoch=0.0)
    >>> decay.factor(20.0)
    4.0
    >>> stored = 1.0 * decay.factor(0.0) + 1.0 * decay.factor(10.0)
    >>> decay.value_at(stored, now=10.0)
    1.5
    """

    def __init__(self, half_life: float, epoch: float) -> None:
        if half_life <= 0:
            raise ValueError("half_life must be positive")
        self.half_life = half_life
        self.epoch = epoch

    def factor(self, timestamp: float) -> float:
        exponent = (timestamp - self.epoch) / self.half_life
        return math.pow(2.0, max(-MAX_EXPONENT, min(MAX_EXPONENT, exponent)))

    def value_at(self, stored: float, now: float) -> float:
        """Read a stored sum back as the decayed count at ``now``."""
        return stored / self.factor(now)
