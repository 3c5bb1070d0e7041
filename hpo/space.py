"""The search space: ``parameters:`` -> Optuna distributions, sampling and grid enumeration.

Each leaf parameter becomes one Optuna parameter named by its dotted path (``opt.lr``);
constants become none. W&B distribution -> what Optuna samples -> what the trainer sees:

* constant: nothing -> ``value``.
* categorical: Categorical(values) -> the value. Values that are not None/bool/int/float/str
  (lists, mappings) go to Optuna as compact sorted-key JSON strings and come back decoded.
* categorical with ``probabilities``: Float(0, 1), a point u on the cumulative-probability
  axis -> the value whose stretch (of width p_i) holds u. Random and QMC sampling so draw
  value i with probability p_i exactly; model-based samplers see one ordered axis on which the
  probabilities act as the prior. A grid visits every value with p_i > 0 once.
* int_uniform: Int(min, max), both ends included.
* uniform: Float(min, max).
* q_uniform: Int/Float(min, max, step=q) when min and max are multiples of q (every multiple
  of q in [min, max] equally likely; W&B's round(U/q)*q gives the two end points half that
  weight); otherwise Float(min, max) then round(x/q)*q, exactly W&B's law.
* log_uniform: Float(e^min, e^max, log=True) (min/max are natural-log exponents).
* log_uniform_values: Float(min, max, log=True).
* inv_log_uniform: log(1/X) ~ U(min, max), i.e. log X ~ U(-max, -min):
  Float(e^-max, e^-min, log=True).
* inv_log_uniform_values: log(1/X) ~ U(log 1/max, log 1/min), i.e. X is log-uniform on
  [min, max]: Float(min, max, log=True) (the same law as log_uniform_values).
* q_log_uniform, q_log_uniform_values: the log-uniform above, then round(x/q)*q.
* normal, q_normal, log_normal, q_log_normal, beta, q_beta (no Optuna equivalent): the
  quantile u ~ Float(EPS, 1 - EPS) under the parameter's name -> inverse CDF(u) (tails
  beyond EPS cut off) -> round(x/q)*q for the q_ forms.

q rounding is round(x/q)*q without float noise, and gives ints when q is an int (as W&B).
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from statistics import NormalDist
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from hpo.config import GRID_FINITE, ParamSpec, iter_params
from hpo.errors import ConfigError

EPS = 1e-9  # quantile range of the inverse-CDF parameters: [EPS, 1 - EPS]
MAX_GRID = 1_000_000
_PRIMITIVE = (bool, int, float, str)


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, _PRIMITIVE):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _quantize(x: float, q: float) -> float | int:
    """``round(x / q) * q`` without float noise; an int when q is an int."""
    ratio = x / q
    if not math.isfinite(ratio):  # q below float resolution around x: nothing to round
        return x
    k = round(ratio)
    if isinstance(q, int):
        return int(k * q)
    digits = max(0, -int(Decimal(repr(float(q))).as_tuple().exponent))
    return round(k * q, digits)


def _ppf(spec: ParamSpec, u: float) -> float:
    dist = spec.distribution or ""
    if dist.endswith("beta"):
        from scipy.special import betaincinv

        return float(betaincinv(spec.a, spec.b, u))
    x = NormalDist(float(spec.mu or 0), float(spec.sigma or 1)).inv_cdf(u)
    return math.exp(x) if dist.endswith("log_normal") else x


@dataclass(frozen=True)
class _Leaf:
    """One parameter: its path, spec and the Optuna distribution it is sampled from."""

    path: tuple[str, ...]
    spec: ParamSpec
    dist: BaseDistribution | None = None
    cum: tuple[float, ...] = ()  # cumulative probabilities (weighted categorical)

    @property
    def name(self) -> str:
        return ".".join(self.path)

    def to_user(self, internal: Any) -> Any:
        """Optuna's internal value -> the value the trainer sees."""
        spec, dist = self.spec, self.spec.distribution or ""
        if dist == "constant":
            return spec.value
        values = spec.values or []
        if self.cum:
            last = max(i for i, p in enumerate(spec.probabilities or []) if p > 0)
            return values[min(bisect.bisect_right(self.cum, float(internal)), last)]
        if isinstance(self.dist, CategoricalDistribution):
            for value in values:
                if type(_encode(value)) is type(internal) and _encode(value) == internal:
                    return value
            raise ConfigError(f"parameter {self.name}: stored value {internal!r} is not one of "
                              "its values (did the sweep file change?)")
        x = _ppf(spec, float(internal)) if dist.endswith(("normal", "beta")) else internal
        if dist.startswith("q_"):
            return _quantize(x, spec.q or 1)
        return int(x) if dist == "int_uniform" else float(x)

    def grid_size(self) -> int | float:
        """How many values :meth:`grid` gives, computed without building them (``math.inf``
        when the count is beyond float range)."""
        spec, dist = self.spec, self.dist
        if self.cum:
            lows = (0.0, *self.cum[:-1])
            return sum(1 for lo, hi in zip(lows, self.cum, strict=True) if hi > lo)
        if isinstance(dist, CategoricalDistribution):
            return len(dist.choices)
        if isinstance(dist, IntDistribution):
            return max(0, (dist.high - dist.low) // dist.step + 1)
        assert isinstance(dist, FloatDistribution) and spec.q is not None
        if dist.step is not None:
            return _count(dist.high - dist.low, dist.step, 1)
        lo, hi = dist.low / spec.q, dist.high / spec.q
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return math.inf
        return max(0, round(hi) - round(lo) + 1)

    def grid(self) -> list[Any]:
        """Every internal value a grid visits (check :meth:`grid_size` first: it may be
        huge)."""
        spec, dist = self.spec, self.dist
        if self.cum:
            lows = (0.0, *self.cum[:-1])
            return [(lo + hi) / 2 for lo, hi in zip(lows, self.cum, strict=True) if hi > lo]
        if isinstance(dist, CategoricalDistribution):
            return list(dist.choices)
        if isinstance(dist, IntDistribution):
            return list(range(dist.low, dist.high + 1, dist.step))
        assert isinstance(dist, FloatDistribution) and spec.q is not None
        if dist.step is not None:
            n = round((dist.high - dist.low) / dist.step)
            return [min(dist.low + k * dist.step, dist.high) for k in range(n + 1)]
        ks = range(round(dist.low / spec.q), round(dist.high / spec.q) + 1)
        return [min(max(k * spec.q, dist.low), dist.high) for k in ks]


def _leaf(path: tuple[str, ...], spec: ParamSpec) -> _Leaf:
    dist = spec.distribution
    lo, hi = spec.min, spec.max
    if dist == "constant":
        return _Leaf(path, spec)
    if dist == "categorical":
        if spec.probabilities is not None:
            total = sum(spec.probabilities)
            cum = tuple(itertools.accumulate(p / total for p in spec.probabilities))
            return _Leaf(path, spec, FloatDistribution(0.0, 1.0), cum[:-1] + (1.0,))
        choices = [_encode(v) for v in spec.values or []]
        if len({(type(c), c) for c in choices}) != len(choices):
            raise ConfigError(f"parameter {'.'.join(path)}: two values encode to the same "
                              f"choice {choices}; make them distinct")
        return _Leaf(path, spec, CategoricalDistribution(choices))
    if dist in ("normal", "q_normal", "log_normal", "q_log_normal", "beta", "q_beta"):
        return _Leaf(path, spec, FloatDistribution(EPS, 1 - EPS))
    assert lo is not None and hi is not None
    if dist == "int_uniform":
        return _Leaf(path, spec, IntDistribution(int(lo), int(hi)))
    if dist in ("uniform", "q_uniform"):
        q = spec.q
        if dist == "q_uniform" and q is not None and _multiple(lo, q) and _multiple(hi, q):
            if isinstance(q, int):
                return _Leaf(path, spec, IntDistribution(round(lo), round(hi), step=q))
            return _Leaf(path, spec, FloatDistribution(float(lo), float(hi), step=float(q)))
        return _Leaf(path, spec, FloatDistribution(float(lo), float(hi)))
    if dist in ("log_uniform", "q_log_uniform"):
        lo, hi = math.exp(lo), math.exp(hi)
    elif dist == "inv_log_uniform":
        lo, hi = math.exp(-hi), math.exp(-lo)
    return _Leaf(path, spec, FloatDistribution(float(lo), float(hi), log=True))


def _multiple(x: float, q: float) -> bool:
    k = x / q
    if not math.isfinite(k):  # q below float resolution: not a usable step
        return False
    return math.isclose(k, round(k), rel_tol=0, abs_tol=1e-9)


def size_text(size: int | float) -> str:
    """A grid size for a message: ``1,000,001``, or ``about 10^40`` when it is huge."""
    if math.isinf(size):
        return "more than 10^308"
    if size < 10**15:
        return f"{int(size):,}"
    return f"about 10^{len(str(int(size))) - 1}"


def _count(span: float, step: float, extra: int) -> int | float:
    """``round(span / step) + extra``, or ``math.inf`` when that is beyond float range."""
    ratio = span / step
    return round(ratio) + extra if math.isfinite(ratio) else math.inf


def _suggest(trial: optuna.trial.BaseTrial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, FloatDistribution)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def _nest(pairs: list[tuple[tuple[str, ...], Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in pairs:
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


class SearchSpace:
    """A sweep's parameters as Optuna distributions (see the module docstring)."""

    def __init__(self, leaves: list[_Leaf]) -> None:
        self._leaves = leaves
        self._tuned = [leaf for leaf in leaves if leaf.dist is not None]
        self.names: list[str] = [leaf.name for leaf in self._tuned]
        if len(set(self.names)) != len(self.names):
            dup = next(n for n in self.names if self.names.count(n) > 1)
            raise ConfigError(f"parameter name {dup!r} is used twice once nested names are "
                              "joined with dots; rename one of them")

    @classmethod
    def from_config(cls, parameters: Mapping[str, ParamSpec]) -> SearchSpace:
        """Build the space from ``SweepConfig.parameters``."""
        return cls([_leaf(path, spec) for path, spec in iter_params(parameters)])

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        """Flat Optuna name -> distribution (constants excluded)."""
        return {leaf.name: leaf.dist for leaf in self._tuned if leaf.dist is not None}

    def suggest(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """Sample every parameter on ``trial``; the nested dict the trainer receives."""
        internal = {leaf.name: _suggest(trial, leaf.name, leaf.dist)
                    for leaf in self._tuned if leaf.dist is not None}
        return self.user_params(internal)

    def user_params(self, internal: Mapping[str, Any]) -> dict[str, Any]:
        """Optuna's params (``FrozenTrial.params``) -> the nested values ``suggest`` gave.

        Constants are always included; parameters missing from ``internal`` are left out.
        """
        pairs = [(leaf.path, leaf.to_user(internal.get(leaf.name)))
                 for leaf in self._leaves if leaf.dist is None or leaf.name in internal]
        return _nest(pairs)

    def is_finite(self) -> bool:
        """True when a grid can enumerate every parameter."""
        return all(leaf.spec.distribution in GRID_FINITE for leaf in self._leaves)

    def grid_size(self) -> int | float:
        """Points in the full grid, computed from each parameter's count alone (no list is
        built; ``math.inf`` beyond float range). Only meaningful when :meth:`is_finite`."""
        size: int | float = 1
        for leaf in self._tuned:
            n = leaf.grid_size()
            if n == 0:
                return 0
            size = math.inf if math.isinf(n) or size > 10**300 else size * n
        return size

    def grid_points(self) -> list[dict[str, Any]]:
        """Every grid point as Optuna-internal params, for ``study.enqueue_trial``."""
        for leaf in self._leaves:
            if leaf.spec.distribution not in GRID_FINITE:
                raise ConfigError(
                    f"grid search needs finite values; parameter {leaf.name} has distribution "
                    f"{leaf.spec.distribution}; use values: [...]")
        size = self.grid_size()
        if size > MAX_GRID:
            raise ConfigError(f"the grid has {size_text(size)} points (more than "
                              f"{MAX_GRID:,}); use fewer values, a larger q, or method: random")
        axes = [leaf.grid() for leaf in self._tuned]
        return [dict(zip(self.names, point, strict=True)) for point in itertools.product(*axes)]

    @staticmethod
    def flatten(params: Mapping[str, Any]) -> dict[str, Any]:
        """Nested params -> dotted keys (``{"opt": {"lr": 1}}`` -> ``{"opt.lr": 1}``)."""
        out: dict[str, Any] = {}
        for key, value in params.items():
            if isinstance(value, Mapping) and value:
                for sub, inner in SearchSpace.flatten(value).items():
                    out[f"{key}.{sub}"] = inner
            else:
                out[key] = value
        return out
