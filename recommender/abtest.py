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


# -- the arena: offline metrics beside live ones, and what to do ---------------------------

OFFLINE_METRICS = ("recall@10", "ndcg@10")
MAX_WORTH_TESTING = 10_000_000  # lists per variant: beyond this the difference is too small
SMALLEST_DIFFERENCE = 0.1  # relative: what "tell a difference" means when rates are equal


def with_cards(report: dict[str, object], models: dict[str, str],
               cards: dict[str, dict]) -> dict[str, object]:
    """``report`` (:func:`placement_report`) with each variant's ``model`` and ``offline``
    figures: the card of what serves its model now (``keys.MODEL_CARDS``: batch-trained and
    imported models; None for a model without one), and ``advice`` (:func:`advice`).

    >>> report = placement_report({"A": {"impressions": 100, "lists_rewarded": 10}})
    >>> card = {"run": 3, "made_at": 1.0, "kind": "trained",
    ...         "offline": {"recall@10": 0.21, "ndcg@10": 0.12, "users": 50, "slice": "10%"}}
    >>> offline = with_cards(report, {"A": "ease"}, {"ease": card})["variants"]["A"]["offline"]
    >>> offline["recall@10"], offline["run"], offline["kind"]
    (0.21, 3, 'trained')
    """
    for name, metrics in report["variants"].items():  # type: ignore[union-attr]
        model = models.get(name)
        card = cards.get(model) if model else None
        metrics["model"] = model
        offline = (card or {}).get("offline")
        metrics["offline"] = None if card is None else {
            **(offline or {}), "run": card.get("run"), "kind": card.get("kind")}
    report["advice"] = advice(report)
    return report


def advice(report: dict[str, object]) -> str:
    """What a :func:`placement_report` says to do, in words: switch to a variant whose
    take-rate beats the control's significantly, keep the control when every other variant
    is significantly worse, or how many more lists each variant needs before a difference
    can be told (never 10^12: a difference too small to matter says so).

    >>> advice(placement_report({"A": {"impressions": 2000, "lists_rewarded": 200},
    ...                          "B": {"impressions": 1000, "lists_rewarded": 160}}))
    'switch to B: its take-rate 16.0% [13.9%, 18.4%] beats A 10.0% [8.8%, 11.4%] (p 0.0000)'
    >>> print(advice(placement_report({"A": {"impressions": 400, "lists_rewarded": 40},
    ...                                "B": {"impressions": 300, "lists_rewarded": 36}})))
    ... # doctest: +NORMALIZE_WHITESPACE
    not enough data yet: about 3,541 more lists per variant to tell a difference of 2.0
    points of take-rate (B 12.0% against A 10.0%)
    >>> advice(placement_report({"A": {"impressions": 10}, "B": {"impressions": 12}}))
    'not enough data yet: no list has earned a reward'
    """
    variants: dict = report["variants"]  # type: ignore[assignment]
    control = report.get("control")
    comparisons: dict = report["comparisons"]  # type: ignore[assignment]
    if control is None or not comparisons:
        return "one variant: nothing to compare" if variants else "no variant has served yet"
    base = variants[control]
    if all(c["verdict"] == NOT_ENOUGH_DATA for c in comparisons.values()):
        served = sum(m["impressions"] for m in variants.values())
        return ("not enough data yet: no list has earned a reward" if served else
                "not enough data yet: no list has been served")
    better = [name for name, c in comparisons.items() if c["verdict"] == "significant"
              and variants[name]["take_rate"] > base["take_rate"]]
    if better:
        best = max(better, key=lambda name: variants[name]["take_rate"])
        return (f"switch to {best}: its take-rate {_rate(variants[best])} beats {control} "
                f"{_rate(base)} (p {comparisons[best]['p_value']:.4f})")
    worse = [name for name, c in comparisons.items() if c["verdict"] == "significant"
             and variants[name]["take_rate"] < base["take_rate"]]
    if len(worse) == len(comparisons):
        return (f"keep {control}: its take-rate {_rate(base)} beats every other variant "
                f"(p < 0.05)")
    # The closest call: the challenger not yet told apart that comes nearest to winning.
    open_names = [name for name in comparisons if name not in worse]
    challenger = max(open_names, key=lambda name: variants[name]["take_rate"])
    challenged = variants[challenger]
    low, high = sorted((base["take_rate"], challenged["take_rate"]))
    if high - low < SMALLEST_DIFFERENCE * max(high, 1e-9) / 2:
        # Equal so far: say what it takes to tell a 10% relative difference apart.
        high = low * (1 + SMALLEST_DIFFERENCE) if low > 0 else high
    needed = required_sample_size(low, high) if high > low else NO_EFFECT
    shown = min(base["impressions"], challenged["impressions"])
    if needed >= MAX_WORTH_TESTING:
        return (f"keep {control} or {challenger}: their take-rates ({_rate(base)}, "
                f"{_rate(challenged)}) differ by too little to tell apart at any traffic "
                f"worth waiting for")
    return (f"not enough data yet: about {max(0, needed - shown):,} more lists per variant "
            f"to tell a difference of {100 * (high - low):.1f} points of take-rate "
            f"({challenger} {challenged['take_rate']:.1%} against {control} "
            f"{base['take_rate']:.1%})")


def _rate(metrics: dict) -> str:
    low, high = metrics["take_rate_interval"]
    return f"{metrics['take_rate']:.1%} [{low:.1%}, {high:.1%}]"
