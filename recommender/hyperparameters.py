"""Every model hyperparameter, declared once: name, default, bounds and what it does.

The table feeds :class:`EngineConfig` (its fields, under the engine's names), the settings
(``STREAMREC_<SETTING>``, validated with these bounds: :mod:`streamrec.settings`) and what
``streamrec rebuild --set`` may change for a model version (:data:`TUNABLE`). A new
hyperparameter is one row here.

Examples
--------
>>> EngineConfig().mf_dim, EngineConfig(mf_dim=8).mf_dim
(32, 8)
>>> BY_SETTING["cooccurrence_window"].field
'window'
>>> BY_SETTING["mf_dim"].check(0)
Traceback (most recent call last):
...
ValueError: mf_dim: 0 must be >= 1
>>> "decay_epoch" in TUNABLE, "mf_dim" in TUNABLE
(False, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, make_dataclass
from typing import Any

from recommender.base import MAX_WEIGHT
from recommender.decay import LEGACY_EPOCH

DAY = 86400.0
WEEK = 7 * DAY
YEAR = 365 * DAY


@dataclass(frozen=True)
class Hyperparameter:
    """One row of the table.

    ``setting`` names the settings field (and the ``rebuild --set`` name), ``field`` the
    :class:`EngineConfig` field; ``ge``, ``gt`` and ``le`` bound it; a ``finite`` one
    refuses infinity and NaN; a ``tunable`` one may differ between model versions.
    """

    setting: str
    type: type
    default: Any
    doc: str
    field: str = ""  # the EngineConfig name, when not the setting's
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    finite: bool = False
    tunable: bool = True

    @property
    def engine_field(self) -> str:
        return self.field or self.setting

    def bounds(self) -> dict[str, Any]:
        """The bounds as pydantic's ``Field`` takes them."""
        found: dict[str, Any] = {name: getattr(self, name) for name in ("ge", "gt", "le")
                                 if getattr(self, name) is not None}
        if self.finite:
            found["allow_inf_nan"] = False
        return found

    def check(self, value: Any) -> Any:
        """``value`` if it is of this type and within the bounds, else ValueError."""
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.type) or isinstance(value, bool):
            raise ValueError(f"{self.setting}: {value!r} is not {self.type.__name__}")
        if self.finite and not math.isfinite(value):
            raise ValueError(f"{self.setting}: {value!r} must be finite")
        for limit, holds, words in ((self.ge, lambda v, x: v >= x, ">="),
                                    (self.gt, lambda v, x: v > x, ">"),
                                    (self.le, lambda v, x: v <= x, "<=")):
            if limit is not None and not holds(value, limit):
                raise ValueError(f"{self.setting}: {value!r} must be {words} {limit:g}")
        return value


HYPERPARAMETERS: tuple[Hyperparameter, ...] = (
    Hyperparameter("history_length", int, 200, "Recent items kept per user.", ge=1),
    # 10, not 20: the hybrid is as good or better on MovieLens and every synthetic regime
    # (docs/evaluation.md, "The window"), and an event's pair work and a request's
    # neighbour-list reads are halved.
    Hyperparameter("cooccurrence_window", int, 10, "A user's latest items that pair with a "
                   "new one.", field="window", ge=1),
    Hyperparameter("cooccurrence_window_seconds", float, YEAR, "How far back those items "
                   "may lie.", field="window_seconds", gt=0),
    Hyperparameter("max_neighbours", int, 200, "Neighbours kept per item.", ge=1),
    Hyperparameter("neighbours_per_item_read", int, 50, "Neighbours of each recent item "
                   "read to rank.", field="neighbours_per_item", ge=1),
    # Two memories: which items go together (co-occurrence, its window) changes slowly,
    # what is popular can change within a day (docs/evaluation.md has the evidence).
    Hyperparameter("decay_half_life_seconds", float, 10 * YEAR, "Half-life of co-occurrence "
                   "(and of popularity unless popularity_half_life_seconds is set).",
                   field="half_life", gt=0, finite=True),
    Hyperparameter("popularity_half_life_seconds", float, DAY, "Half-life of popularity "
                   "(overall and per category).", field="popularity_half_life", gt=0,
                   finite=True),
    Hyperparameter("decay_epoch", float, LEGACY_EPOCH, "The frame of decayed state written "
                   "before landmarks existed (recommender.decay): 2025-01-01T00:00:00Z.",
                   field="epoch", finite=True, tunable=False),
    Hyperparameter("mf_dim", int, 32, "Factors per user and item.", ge=1, le=512),
    Hyperparameter("mf_learning_rate", float, 0.05, "BPR's step size.", gt=0),
    Hyperparameter("mf_regularization", float, 0.002, "BPR's L2 penalty.", ge=0),
    Hyperparameter("mf_max_norm", float, 100.0, "Longest a user's or item's factor vector "
                   "may grow: a longer one is scaled back after each step, so that no step "
                   "size or penalty makes the factors overflow (ml-latest-small's reach "
                   "4.3 at the defaults).", gt=0, le=10_000, tunable=False),
    Hyperparameter("mf_negatives", int, 4, "Negatives sampled per positive.", ge=1),
    Hyperparameter("mf_negative_pool", int, 256, "Items the negatives are drawn from, per "
                   "batch.", ge=1),
    Hyperparameter("seed", int, 0, "Seed of every random choice of the models."),
    # hybrid: a reciprocal-rank fusion of its sources, weighted by what the stream taught
    # (recommender.blend)
    Hyperparameter("hybrid_mf", float, 1.0, "Hybrid's configured weight of MF's ranking.", ge=0,
                   le=MAX_WEIGHT),
    Hyperparameter("hybrid_cooccurrence", float, 1.0, "Hybrid's configured weight of "
                   "co-occurrence's ranking.", ge=0, le=MAX_WEIGHT),
    Hyperparameter("hybrid_popular", float, 0.2, "Hybrid's weight of popularity.", ge=0,
                   le=MAX_WEIGHT),
    # The batch-trained models as hybrid sources (0: not a source): the serving run's
    # ranking fused like the others, at its configured weight (the tally learns only the
    # streaming sources' weights).
    Hyperparameter("hybrid_ease", float, 0.0, "Hybrid's weight of the serving ease run's "
                   "ranking (0: not a source).", ge=0, le=MAX_WEIGHT),
    Hyperparameter("hybrid_ials", float, 0.0, "Hybrid's weight of the serving ials run's "
                   "ranking (0: not a source).", ge=0, le=MAX_WEIGHT),
    Hyperparameter("hybrid_candidates", int, 100, "Candidates each source gives the "
                   "hybrid.", ge=1),
    Hyperparameter("hybrid_rank_constant", float, 60.0, "Rank fusion: a source's item at "
                   "rank r scores weight / (constant + r).", ge=0, le=MAX_WEIGHT),
    # The blend learns from the stream: a share of the positive events (at most
    # hybrid_learning_sample a batch) is tried on every source before the batch is learned.
    Hyperparameter("hybrid_learning_share", float, 1.0, "Share of positive events tried on "
                   "every source for the blend's tally (0: none).", ge=0, le=1),
    Hyperparameter("hybrid_learning_sample", int, 8, "Most events a batch tries for the "
                   "tally.", ge=0),
    # The tally forgets: once it holds twice this many trials every count is halved, so it
    # weighs roughly the last hybrid_learning_memory to twice that many trials and follows a
    # stream whose best source changes (a long log, a shop whose season turns).
    Hyperparameter("hybrid_learning_memory", int, 5000, "Trials the blend's tally remembers "
                   "(it halves its counts when it holds twice as many; 0: never forgets).",
                   ge=0),
    Hyperparameter("hybrid_learning_exponent", float, 2.0, "How sharply the weights follow "
                   "the sources' hit rates (0: configured weights alone).", ge=0, le=100),
    # Most candidates one list screens (withdrawn items, filters) before it answers with
    # what passed: the bound on a request whose filter removes nearly everything.
    Hyperparameter("max_screened_candidates", int, 5000, "Most candidates one list "
                   "screens.", ge=1, tunable=False),
    # Cold start: items nobody has interacted with get neighbours from their catalog
    # documents (content similarity, weighted against co-occurrence by content_weight);
    # exploration_share of each personalised list goes to items created within
    # new_item_seconds, so that they can earn interactions.
    Hyperparameter("content_weight", float, 0.5, "Weight of content similarity against "
                   "co-occurrence.", ge=0, tunable=False),
    Hyperparameter("exploration_share", float, 0.0, "Share of a personalised list given to "
                   "new items.", ge=0, le=1, tunable=False),
    Hyperparameter("new_item_seconds", float, WEEK, "How long an item counts as new.", gt=0,
                   tunable=False),
)

BY_SETTING = {h.setting: h for h in HYPERPARAMETERS}
# What a model version may override (``streamrec rebuild --set NAME=VALUE``).
TUNABLE = frozenset(h.setting for h in HYPERPARAMETERS if h.tunable)

EngineConfig = make_dataclass(
    "EngineConfig",
    [(h.engine_field, h.type, field(default=h.default)) for h in HYPERPARAMETERS],
    frozen=True)
EngineConfig.__module__ = __name__
EngineConfig.__doc__ = ("The engine's hyperparameters, one field per row of "
                        ":data:`HYPERPARAMETERS` (under its ``field`` name).")
