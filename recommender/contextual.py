"""Linear Thompson sampling over a bounded, hashed feature vector: the ``contextual``
allocation strategy.

A request's context (the ``context`` keys the client sends, the user's catalog
properties, the hour of the week, the user's activity level) becomes named features
(:func:`context_features`), logged with the impression as they are, then hashed into
``dimensions`` (at most 64) slots, slot 0 a constant (:func:`vectorize`). Each variant
(arm) keeps a ridge regression of the list's reward (1: it earned a reward) on that
vector: ``A = sum x x^T`` and ``b = sum reward x``, with prior precision ``ridge``.
Choosing draws each arm's score from its posterior at ``x``, ``N(x.mu, alpha^2 x^T
A^-1 x)``, which needs no sample of the whole weight vector: with the inverse cached per
refresh of the state, a choice is a few matrix-vector products.

Bounded for years: when an arm's count of updates reaches ``cap`` its whole state is
halved (old evidence weighs half, then a quarter...), so ``A``'s entries never exceed
about ``2 x cap x max|x_i x_j|`` and the posterior never stops moving.

The state is plain numbers under named fields (``variant|A|i|j``, ``variant|b|i``,
``variant|n``): :func:`impression_increments` and :func:`reward_increments` say what one
impression and one rewarded list add; a store applies them (Redis: atomically with the
impression or the credit, once) and :meth:`LinearThompson.load` reads them back.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

MAX_DIMENSIONS = 64
MAX_FEATURES = 64  # named features logged per decision (schemas.impression.Decision)
MAX_CONTEXT_KEYS = 16
DEFAULT_CAP = 100_000  # updates per arm before its state is halved
HOURS_PER_WEEK = 168
# History lengths at which the activity level steps up: new, light, regular, heavy, loyal.
ACTIVITY_STEPS = (1, 5, 20, 100)
# The built-in features' names in a placement's ``features`` (a context key cannot start
# with "@"): the hour of the week and of the day, and the user's activity level.
HOUR = "@hour"
ACTIVITY = "@activity"
SEPARATOR = "|"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(32)
_WEIGHTS = _WEIGHTS / math.sqrt(2 * math.pi)  # expectations under N(0, 1)


@lru_cache(maxsize=65536)
def _name(*parts: str) -> str:
    """A feature's name: its parts made safe for a key and a log (the name is hashed, so
    two values that clean to the same text share a slot as any hash collision would)."""
    return _UNSAFE.sub("_", ".".join(parts))[:64]


def activity_level(history_length: int) -> int:
    """0 (no history) to 4 (100 items or more).

    >>> [activity_level(n) for n in (0, 1, 7, 50, 5000)]
    [0, 1, 2, 3, 4]
    """
    return sum(history_length >= step for step in ACTIVITY_STEPS)


def context_features(context: Mapping[str, Any], user: Mapping[str, Any] | None,
                     history_length: int, now: float,
                     keys: Sequence[str] | None = None) -> dict[str, float]:
    """The named features of one request, at most :data:`MAX_FEATURES`.

    ``keys`` limits what is used (a placement's ``features``): context keys, user
    properties (``user.NAME``) and the built-in features, :data:`HOUR` and
    :data:`ACTIVITY`; None uses every one sent (bounded) and both built-ins. Values are
    categories: ``device`` ``mobile`` becomes ``ctx.device.mobile = 1``; a user's
    ``country`` ``CA`` becomes ``user.country.CA = 1`` (lists: one feature per element).
    The hour of the week is a point on a circle (``hour.sin``, ``hour.cos``) and the day's
    hour another, so 23:00 and 00:00 are neighbours. The activity level is one of
    ``activity.0`` to ``activity.4``.

    >>> sorted(context_features({"device": "mobile"}, {"country": "CA"}, 7, 0.0))
    ['activity.2', 'ctx.device.mobile', 'day.cos', 'day.sin', 'hour.cos', 'hour.sin', \
'user.country.CA']
    >>> sorted(context_features({"device": "mobile"}, None, 7, 0.0, keys=["device"]))
    ['ctx.device.mobile']
    """
    wanted = None if keys is None else frozenset(keys)
    features: dict[str, float] = {}
    if wanted is None or HOUR in wanted:
        hour_of_week = (int(now // 3600) + 72) % HOURS_PER_WEEK  # epoch 0 was a Thursday
        features["hour.sin"] = math.sin(2 * math.pi * hour_of_week / HOURS_PER_WEEK)
        features["hour.cos"] = math.cos(2 * math.pi * hour_of_week / HOURS_PER_WEEK)
        features["day.sin"] = math.sin(2 * math.pi * (hour_of_week % 24) / 24)
        features["day.cos"] = math.cos(2 * math.pi * (hour_of_week % 24) / 24)
    if wanted is None or ACTIVITY in wanted:
        features[f"activity.{activity_level(history_length)}"] = 1.0
    # Contexts and users repeat (a few devices and countries; a user's next request): their
    # names are worked out once per distinct one, by a key of plain tuples.
    names = _context_names(tuple(context.items())[:MAX_CONTEXT_KEYS], wanted)
    if user:
        names += _user_names(tuple((key, tuple(value) if type(value) is list else value)
                                   for key, value in list(user.items())[:MAX_CONTEXT_KEYS]),
                             wanted)
    for name in names[:MAX_FEATURES - len(features)]:
        features[name] = 1.0
    return features


@lru_cache(maxsize=4096)
def _context_names(items: tuple, wanted: frozenset[str] | None) -> tuple[str, ...]:
    return tuple(_name("ctx", key, value if type(value) is str else str(value))
                 for key, value in items if wanted is None or key in wanted)


@lru_cache(maxsize=4096)
def _user_names(items: tuple, wanted: frozenset[str] | None) -> tuple[str, ...]:
    names = []
    for key, value in items:
        if wanted is not None and key not in wanted and "user." + key not in wanted:
            continue
        for element in (value if type(value) is tuple else (value,))[:4]:
            if type(element) is str:
                names.append(_name("user", key, element))
            elif isinstance(element, int | float):  # bool is an int
                names.append(_name("user", key, str(element)))
    return tuple(names)


@lru_cache(maxsize=65536)  # names repeat (a few devices, countries, hours): hash once
def slot(name: str, dimensions: int) -> int:
    """The slot of a named feature: 1 to ``dimensions - 1`` (0 is the constant)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return 1 + int.from_bytes(digest, "little") % (dimensions - 1)


def vectorize(features: Mapping[str, float], dimensions: int) -> np.ndarray:
    """The hashed vector of named features, slot 0 set to 1.

    >>> vectorize({"ctx.device.mobile": 1.0}, 8).tolist().count(1.0)
    2
    """
    x = np.zeros(dimensions)
    x[0] = 1.0
    values = np.fromiter(features.values(), dtype=float, count=len(features))
    slots = _slots(tuple(features), dimensions)
    finite = np.isfinite(values)
    np.add.at(x, slots[finite], values[finite])
    return x


@lru_cache(maxsize=4096)  # requests repeat the same sets of names (same devices, pages...)
def _slots(names: tuple[str, ...], dimensions: int) -> np.ndarray:
    return np.fromiter((slot(name, dimensions) for name in names), dtype=np.intp,
                       count=len(names))


def impression_increments(variant: str, features: Mapping[str, float], dimensions: int
                          ) -> list[tuple[str, float]]:
    """What one impression adds to its arm's state: ``x x^T`` (upper triangle) and 1 to
    the arm's count, as ``(field, amount)``.

    >>> impression_increments("a", {}, 4)
    [('a|A|0|0', 1.0), ('a|n', 1.0)]
    """
    x = vectorize(features, dimensions)
    nonzero = np.flatnonzero(x)
    fields = [(f"{variant}|A|{i}|{j}", float(x[i] * x[j]))
              for n, i in enumerate(nonzero) for j in nonzero[n:]]
    return [*fields, (f"{variant}|n", 1.0)]


def reward_increments(variant: str, features: Mapping[str, float], dimensions: int
                      ) -> list[tuple[str, float]]:
    """What a list's first reward adds to its arm's state: ``x`` to ``b``."""
    x = vectorize(features, dimensions)
    return [(f"{variant}|b|{i}", float(x[i])) for i in np.flatnonzero(x)]


def halve_fields(fields: dict[str, float], variant: str) -> None:
    """Halve every field of ``variant``'s state in place (what a store does at the cap)."""
    prefix = variant + SEPARATOR
    for name in fields:
        if name.startswith(prefix):
            fields[name] /= 2


def apply_increments(fields: dict[str, float], variant: str,
                     increments: Iterable[tuple[str, float]], cap: float) -> None:
    """Add ``increments`` to ``fields``, then halve the arm's state if its count reached
    ``cap``: the in-memory twin of the Redis script (the count field ends ``|n``)."""
    for name, amount in increments:
        fields[name] = fields.get(name, 0.0) + amount
    if fields.get(f"{variant}|n", 0.0) >= cap:
        halve_fields(fields, variant)


class LinearThompson:
    """Linear Thompson sampling per arm, from the state a store holds.

    Parameters
    ----------
    dimensions
        Length of the hashed feature vector (2 to 64).
    alpha
        Scale of the posterior's spread: more exploration above 1, less below.
    ridge
        Prior precision of each weight (the regularisation of the regression).
    seed
        Seed of the random draws.

    Examples
    --------
    >>> policy = LinearThompson(dimensions=8, seed=1)
    >>> mobile, desktop = {"ctx.device.mobile": 1.0}, {"ctx.device.desktop": 1.0}
    >>> fields = {}
    >>> for _ in range(300):  # mobile users take "a"'s lists, desktop users "b"'s
    ...     for arm in ("a", "b"):
    ...         for features, good in ((mobile, "a"), (desktop, "b")):
    ...             apply_increments(fields, arm, impression_increments(arm, features, 8), 1e5)
    ...             if arm == good:
    ...                 apply_increments(fields, arm, reward_increments(arm, features, 8), 1e5)
    >>> policy.load(fields, ["a", "b"])
    >>> policy.choose(["a", "b"], mobile)[0], policy.choose(["a", "b"], desktop)[0]
    ('a', 'b')
    """

    def __init__(self, dimensions: int = MAX_DIMENSIONS, alpha: float = 1.0,
                 ridge: float = 1.0, seed: int | None = None) -> None:
        if not 2 <= dimensions <= MAX_DIMENSIONS:
            raise ValueError(f"dimensions: {dimensions} is not between 2 and {MAX_DIMENSIONS}")
        self.dimensions = dimensions
        self.alpha = alpha
        self.ridge = ridge
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._arms: tuple[str, ...] = ()
        self._means = np.zeros((0, dimensions))
        self._covariances = np.zeros((0, dimensions, dimensions))
        self._stacked = np.zeros((0, dimensions))

    def load(self, fields: Mapping[str, float], arms: Sequence[str]) -> None:
        """Read each arm's ``A`` and ``b`` from a store's fields and cache its posterior
        mean and covariance (one inverse per arm, per refresh)."""
        d = self.dimensions
        precision = np.tile(np.eye(d) * self.ridge, (len(arms), 1, 1))
        moments = np.zeros((len(arms), d))
        values = np.fromiter(fields.values(), dtype=float, count=len(fields))
        # Where each field goes, worked out once per set of names (a store's hash keeps
        # its fields in the same order between writes): the refresh is then a few numpy
        # calls, not a Python loop over ~20,000 fields.
        kinds, rows, firsts, seconds = _places(tuple(fields), tuple(arms), d)
        usable = np.isfinite(values) & (kinds >= 0)
        matrix = usable & (kinds == 0)
        np.add.at(precision, (rows[matrix], firsts[matrix], seconds[matrix]), values[matrix])
        mirror = matrix & (firsts != seconds)
        np.add.at(precision, (rows[mirror], seconds[mirror], firsts[mirror]), values[mirror])
        vector = usable & (kinds == 1)
        np.add.at(moments, (rows[vector], firsts[vector]), values[vector])
        covariances = np.linalg.inv(precision)
        self._arms = tuple(arms)
        self._covariances = covariances
        self._stacked = covariances.reshape(-1, d)  # every arm's rows: one BLAS call
        self._means = np.einsum("aij,aj->ai", covariances, moments)

    def posterior(self, arms: Sequence[str], features: Mapping[str, float]
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Each arm's score mean and standard deviation at these features (an arm not in
        the loaded state has the prior's)."""
        x = vectorize(features, self.dimensions)
        if tuple(arms) == self._arms:  # the usual case: one matrix-vector product
            quadratic = (self._stacked @ x).reshape(len(arms), -1) @ x
            return self._means @ x, self.alpha * np.sqrt(np.maximum(quadratic, 1e-12))
        known = {name: n for n, name in enumerate(self._arms)}
        means = np.zeros(len(arms))
        spreads = np.full(len(arms), math.sqrt(float(x @ x) / self.ridge))
        rows = [known.get(arm, -1) for arm in arms]
        loaded = [n for n, row in enumerate(rows) if row >= 0]
        if loaded:
            picked = [rows[n] for n in loaded]
            means[loaded] = self._means[picked] @ x
            spreads[loaded] = np.sqrt(np.maximum(
                (self._covariances[picked] @ x) @ x, 1e-12))
        return means, self.alpha * spreads

    def choose(self, arms: Sequence[str], features: Mapping[str, float],
               explore: float = 0.0) -> tuple[str, float]:
        """A Thompson draw (or, with probability ``explore``, an even one): the arm
        chosen and the probability this gives it (its propensity, by quadrature)."""
        means, spreads = self.posterior(arms, features)
        if explore > 0 and self._rng.random() < explore:
            chosen = int(self._rng.integers(len(arms)))
        else:
            chosen = int(np.argmax(means + spreads * self._rng.standard_normal(len(means))))
        win = win_probability(means, spreads, chosen)
        return arms[chosen], explore / len(arms) + (1 - explore) * win


@lru_cache(maxsize=16)  # ~1 MB each at 10 variants: one per contextual placement served
def _places(names: tuple[str, ...], arms: tuple[str, ...], dimensions: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per field: its kind (0: ``A|i|j``, 1: ``b|i``, -1: not an arm's ``A`` or ``b``, or
    a field this version does not know), its arm's row, ``i`` and ``j``."""
    index = {name: n for n, name in enumerate(arms)}
    places = np.full((4, len(names)), -1, dtype=np.intp)
    places[1:] = 0
    for n, name in enumerate(names):
        parts = name.split(SEPARATOR)
        row = index.get(parts[0])
        if row is None:
            continue
        try:
            numbers = [int(part) for part in parts[2:]]
        except ValueError:
            continue
        if not all(0 <= number < dimensions for number in numbers):
            continue
        if len(parts) == 4 and parts[1] == "A":
            places[:, n] = (0, row, numbers[0], numbers[1])
        elif len(parts) == 3 and parts[1] == "b":
            places[:, n] = (1, row, numbers[0], 0)
    return places[0], places[1], places[2], places[3]


def win_probability(means: np.ndarray, spreads: np.ndarray, arm: int) -> float:
    """P(arm's draw is the highest) for independent normal draws, by Gauss-Hermite
    quadrature (32 nodes): ``E_z[prod_b Phi((m_a + s_a z - m_b) / s_b)]``. Within 0.01 of
    the truth unless an arm's spread is hundreds of times another's; never 0.

    >>> round(win_probability(np.array([0.0, 0.0]), np.array([1.0, 1.0]), 0), 6)
    0.5
    """
    if len(means) == 1:
        return 1.0
    # (nodes, arms): every other arm's CDF at each node; the arm's own column is set to
    # infinity (CDF 1), which costs less than taking the others out.
    z = np.subtract.outer(means[arm] + spreads[arm] * _NODES, means) / spreads
    z[:, arm] = np.inf
    probability = float(_WEIGHTS @ np.prod(_normal_cdf(z), axis=1))
    return min(1.0, max(probability, 1e-6))


# The standard normal CDF as a table, read by linear interpolation (error below 1e-7):
# one numpy call where a formula takes a dozen, and numpy has no erf of its own.
_GRID = np.linspace(-9.0, 9.0, 18_001)
_CDF = np.array([0.5 * math.erfc(-value / math.sqrt(2)) for value in _GRID])


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return np.interp(z, _GRID, _CDF)
