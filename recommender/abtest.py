"""The arithmetic of comparing variants: rates with intervals, a two-proportion test and
the sample size a test still needs. Standard library only (``statistics.NormalDist``)."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from statistics import NormalDist

_NORMAL = NormalDist()
NO_EFFECT = 10**12  # trials "needed" when two rates are equal: no finite sample separates them


def wilson_interval(successes: int, trials: int, confidence: float = 0.95
                    ) -> tuple[float, float]:
    """Wilson score interval for a rate; ``(0, 1)`` when nothing was tried.

    >>> low, high = wilson_interval(20, 100)
    >>> round(low, 4), round(high, 4)
    (0.1334, 0.2888)
    """
    if trials <= 0:
        return 0.0, 1.0
    z = _NORMAL.inv_cdf(0.5 + confidence / 2)
    rate = successes / trials
    denominator = 1 + z * z / trials
    centre = (rate + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials))
    half /= denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Comparison:
    control_rate: float
    treatment_rate: float
    lift: float  # relative: treatment / control - 1 (inf when control is 0)
    z: float
    p_value: float  # two-sided
    needed_per_variant: int  # for the observed effect at alpha 0.05 and power 0.8
    still_needed_per_variant: int


def required_sample_size(base_rate: float, other_rate: float, alpha: float = 0.05,
                         power: float = 0.8) -> int:
    """Trials per variant to detect ``base_rate`` vs ``other_rate`` (two-sided test).

    >>> required_sample_size(0.10, 0.12)
    3841
    """
    if base_rate == other_rate:
        return NO_EFFECT
    z_alpha = _NORMAL.inv_cdf(1 - alpha / 2)
    z_power = _NORMAL.inv_cdf(power)
    pooled = (base_rate + other_rate) / 2
    numerator = (z_alpha * math.sqrt(2 * pooled * (1 - pooled))
                 + z_power * math.sqrt(base_rate * (1 - base_rate)
                                       + other_rate * (1 - other_rate))) ** 2
    return math.ceil(numerator / (base_rate - other_rate) ** 2)


def compare(control: tuple[int, int], treatment: tuple[int, int]) -> Comparison:
    """Two-proportion z-test of ``(successes, trials)`` pairs.

    >>> result = compare((100, 1000), (130, 1000))
    >>> round(result.lift, 2), round(result.z, 2), round(result.p_value, 3)
    (0.3, 2.1, 0.035)
    """
    (x1, n1), (x2, n2) = control, treatment
    p1 = x1 / n1 if n1 else 0.0
    p2 = x2 / n2 if n2 else 0.0
    lift = (p2 / p1 - 1) if p1 > 0 else (math.inf if p2 > 0 else 0.0)
    pooled = (x1 + x2) / (n1 + n2) if n1 + n2 else 0.0
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2)) if n1 and n2 else 0.0
    z = (p2 - p1) / spread if spread > 0 else 0.0
    p_value = 2 * (1 - _NORMAL.cdf(abs(z)))
    needed = required_sample_size(p1, p2)
    return Comparison(p1, p2, lift, z, p_value, needed, max(0, needed - min(n1, n2)))


def variant_metrics(counters: dict[str, int], click: str = "click",
                    conversion: str = "purchase") -> dict[str, float | list[float]]:
    """CTR (clicks per item shown), take-rate (lists that earned a reward per list shown)
    and conversions per list, each rate with its 95% Wilson interval.

    >>> metrics = variant_metrics({"impressions": 10, "items_shown": 100, "click": 5,
    ...                            "lists_rewarded": 4, "purchase": 1})
    >>> metrics["ctr"], metrics["take_rate"], metrics["conversion_rate"]
    (0.05, 0.4, 0.1)
    """
    lists = counters.get("impressions", 0)
    shown = counters.get("items_shown", 0)
    clicks = counters.get(click, 0)
    taken = counters.get("lists_rewarded", 0)
    conversions = counters.get(conversion, 0)
    return {
        "impressions": lists, "items_shown": shown, "clicks": clicks,
        "lists_rewarded": taken, "conversions": conversions,
        "ctr": clicks / shown if shown else 0.0,
        "ctr_interval": list(wilson_interval(min(clicks, shown), shown)),
        "take_rate": taken / lists if lists else 0.0,
        "take_rate_interval": list(wilson_interval(taken, lists)),
        "conversion_rate": conversions / lists if lists else 0.0,
        "conversion_interval": list(wilson_interval(min(conversions, lists), lists)),
    }


class UnknownControl(ValueError):
    """A control that is not one of the placement's variants; ``str()`` names them."""


NOT_ENOUGH_DATA = "not enough data"
DIGITS = 4  # interval bounds: 0.01% is finer than any decision needs


def placement_report(counters: dict[str, dict[str, int]], control: str | None = None,
                     variants: Collection[str] = ()) -> dict[str, object]:
    """Metrics per variant and, against ``control`` (default: the most shown variant),
    each other variant's take-rate comparison. ``variants`` are the configured ones (they
    are listed even before they served). Interval bounds are rounded to 4 decimals; a comparison
    without a reward or a list on either side says so instead of giving numbers.

    >>> report = placement_report({"A": {"impressions": 10}, "B": {"impressions": 12}})
    >>> report["control"], report["comparisons"]["A"]["verdict"]
    ('B', 'not enough data')
    >>> report["variants"]["A"]["take_rate_interval"]
    [0.0, 0.2775]
    >>> placement_report({"A": {"impressions": 1}}, control="Z")
    Traceback (most recent call last):
    ...
    recommender.abtest.UnknownControl: control: 'Z' is not a variant of this placement; one of ['A']
    """
    names = sorted({*counters, *variants})
    if control is not None and control not in names:
        raise UnknownControl(f"control: {control!r} is not a variant of this placement; "
                             f"one of {names}")
    metrics_of = {name: _rounded(variant_metrics(counters.get(name, {}))) for name in names}
    if not metrics_of:
        return {"variants": {}, "control": None, "comparisons": {}}
    control = control or max(metrics_of, key=lambda name: metrics_of[name]["impressions"])
    base = metrics_of[control]
    comparisons = {}
    for name, metrics in metrics_of.items():
        if name != control:
            comparisons[name] = _comparison(base, metrics)
    return {"variants": metrics_of, "control": control, "comparisons": comparisons}


def _comparison(base: dict, metrics: dict) -> dict[str, object]:
    rewarded = base["lists_rewarded"] + metrics["lists_rewarded"]
    if not (base["impressions"] and metrics["impressions"] and rewarded):
        # No finite answer exists (no lists, or rates of 0 on both sides): numbers here would
        # read as a verdict (a sample size of 10^12, a lift of 0).
        return {"verdict": NOT_ENOUGH_DATA, "lift": None, "z": None, "p_value": None,
                "needed_per_variant": None, "still_needed_per_variant": None}
    result = compare((base["lists_rewarded"], base["impressions"]),
                     (metrics["lists_rewarded"], metrics["impressions"]))
    equal = result.needed_per_variant >= NO_EFFECT
    verdict = ("no difference observed yet" if equal else
               "significant" if result.p_value < 0.05 else "not significant yet")
    return {
        "verdict": verdict,
        "lift": result.lift if math.isfinite(result.lift) else None,
        "z": result.z, "p_value": result.p_value,
        "needed_per_variant": None if equal else result.needed_per_variant,
        "still_needed_per_variant": None if equal else result.still_needed_per_variant,
    }


def _rounded(metrics: dict) -> dict:
    """Interval bounds to 4 decimals: a bound of 6.9e-18 is a 0 that reads like noise."""
    return {name: [round(bound, DIGITS) for bound in value] if isinstance(value, list)
            else value for name, value in metrics.items()}
