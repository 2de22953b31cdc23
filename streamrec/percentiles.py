"""The one percentile helper: the API's live metrics, the bench and the soak summarise
latencies and freshness with it, so their figures mean the same thing.

>>> percentiles([1.0, 2.0, 3.0, 4.0, 5.0], (50, 99))
{'p50': 3.0, 'p99': 4.96}
>>> summarise([1.0, 2.0, 3.0, 4.0, 5.0])
{'p50': 3.0, 'p99': 4.96, 'mean': 3.0, 'max': 5.0}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentiles(values: Sequence[float], points: Sequence[float] = (50, 99)
                ) -> dict[str, float]:
    """``{"p50": ..., "p99": ...}``: linear interpolation between the closest ranks; all 0
    for no values."""
    if len(values) == 0:
        return {f"p{p:g}": 0.0 for p in points}
    found = np.percentile(np.asarray(values, dtype=float), points)
    return {f"p{p:g}": float(v) for p, v in zip(points, found, strict=True)}


def summarise(values: Sequence[float]) -> dict[str, float]:
    """p50, p99, mean and max of some values (at least one)."""
    return {**percentiles(values, (50, 99)), "mean": float(np.mean(values)),
            "max": float(max(values))}
