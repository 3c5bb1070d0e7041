"""Sweep files -> a validated :class:`SweepConfig` (pydantic v2).

A sweep file is a Weights & Biases sweep file, accepted unchanged, plus hpo's own keys
(``trainer``, ``trainer_args``, ``resources``, ``parallel``, ``backend``, ``storage``, ``seed``,
``budget``, ``max_retries``, ``mlflow``; methods ``tpe|gp|cmaes|qmc|bohb``; early_terminate types
``asha|median|none``). W&B semantics followed here (from W&B's sweep docs and the
``wandb/sweeps`` JSON schema):

* A parameter's distribution is inferred when absent: ``values`` -> categorical, ``value`` ->
  constant, integer ``min``/``max`` -> int_uniform, other ``min``/``max`` -> uniform, and (an
  hpo convenience) ``mu``/``sigma`` -> normal. ``q`` defaults to 1, ``mu`` 0, ``sigma`` 1, beta's
  ``a`` and ``b`` 1. ``distribution: categorical_w_probabilities`` is read as categorical.
* ``early_terminate: {type: hyperband}`` needs ``min_iter`` or ``max_iter`` + ``s``; ``eta``
  defaults to 3 and must be > 1; ``strict`` defaults to true, as in W&B's current schema.
* ``entity``, ``project``, ``controller``, ``description`` (and ``metric.impute*``) are read and
  ignored with a warning; ``name`` names the sweep.

PyYAML reads ``1e-5`` (no dot) as a string, so numeric strings are numbers wherever a number is
expected, and scientific-notation strings are numbers inside ``value``/``values``/
``trainer_args``. Every mistake becomes ONE :class:`~hpo.errors.ConfigError` naming the file,
the line, the key path, what was expected and what was found.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from hpo.errors import ConfigError
from hpo.storage_url import mask_text, mask_url

Number = int | float
MAX_INT = 2**53  # Optuna stores parameter values as floats: larger ints would lose digits
MAX_DEPTH = 64  # nesting of mappings/lists in a sweep file
MAX_ALIAS_EXPANSION = 100_000  # values YAML aliases (*name) may add to a sweep file
LOCAL_MAX_PARALLEL = max(256, 4 * (os.cpu_count() or 1))
CLUSTER_MAX_PARALLEL = 4096
MAX_PARALLEL_ENV = "HPO_MAX_PARALLEL"
_FILE_SUFFIXES = frozenset({".py", ".sh", ".bash", ".ipynb", ".r", ".jl", ".pl", ".rb", ".js"})

# distribution -> (required keys, optional keys); the W&B table plus beta/q_beta.
_BOUNDS = (frozenset({"min", "max"}), frozenset())
_QBOUNDS = (frozenset({"min", "max"}), frozenset({"q"}))
DISTRIBUTIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "constant": (frozenset({"value"}), frozenset()),
    "categorical": (frozenset({"values"}), frozenset({"probabilities"})),
    "int_uniform": _BOUNDS,
    "uniform": _BOUNDS,
    "q_uniform": _QBOUNDS,
    "log_uniform": _BOUNDS,
    "log_uniform_values": _BOUNDS,
    "q_log_uniform": _QBOUNDS,
    "q_log_uniform_values": _QBOUNDS,
    "inv_log_uniform": _BOUNDS,
    "inv_log_uniform_values": _BOUNDS,
    "normal": (frozenset(), frozenset({"mu", "sigma"})),
    "q_normal": (frozenset(), frozenset({"mu", "sigma", "q"})),
    "log_normal": (frozenset(), frozenset({"mu", "sigma"})),
    "q_log_normal": (frozenset(), frozenset({"mu", "sigma", "q"})),
    "beta": (frozenset(), frozenset({"a", "b"})),
    "q_beta": (frozenset(), frozenset({"a", "b", "q"})),
}
GRID_FINITE = frozenset({"constant", "categorical", "int_uniform", "q_uniform"})
_DEFAULTS: dict[str, Number] = {"q": 1, "mu": 0, "sigma": 1, "a": 1, "b": 1}
_NUMERIC = ("min", "max", "mu", "sigma", "q", "a", "b")
_PARAM_KEYS = ("distribution", "value", "values", "probabilities", *_NUMERIC, "parameters")
_WANDB_IGNORED = ("entity", "project", "controller", "description")
_METRIC_IGNORED = ("impute", "impute_while_running")
_SCI = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+$")
_ET_KEYS: dict[str, frozenset[str]] = {
    "hyperband": frozenset({"min_iter", "max_iter", "s", "eta", "strict"}),
    "asha": frozenset(
        {"min_resource", "min_iter", "max_iter", "reduction_factor", "eta",
         "min_early_stopping_rate", "strict", "pause"}
    ),
    "median": frozenset({"n_startup_trials", "n_warmup_steps", "interval_steps"}),
    "none": frozenset(),
}


def _fail(
    path: Any, expected: str, found: Any, hint: str = ""
) -> PydanticCustomError:
    """An error pydantic carries through with a sub-path (relative to the failing model)."""
    path = path if isinstance(path, tuple) else (path,)  # a key may be any YAML scalar
    return PydanticCustomError(
        "hpo", "expected {expected}, found {found}{hint}",
        {"expected": expected, "found": _show(found), "hint": hint, "path": path},
    )


class _Text(str):
    """A 'found' description shown as is (not repr'd)."""


def _show(value: Any, limit: int = 80) -> str:
    text = str(value) if isinstance(value, _Text) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _hint(key: Any, valid: Any) -> str:
    close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def fix_sci(value: Any) -> Any:
    """Turn scientific-notation strings (``"1e-5"``, which PyYAML leaves as str) into floats."""
    if isinstance(value, str) and _SCI.match(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [fix_sci(v) for v in value]
    if isinstance(value, dict):
        return {k: fix_sci(v) for k, v in value.items()}
    return value


def _number(key: str, value: Any) -> Number:
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise _fail(key, "a number", value) from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(key, "a finite number", value)
    if isinstance(value, int) and abs(value) > MAX_INT:
        raise _fail(key, "an integer between -2**53 and 2**53 (write a float such as 1.0e20 "
                    "for larger numbers)", value)
    return value


def _integral(key: str, value: Number) -> int:
    if isinstance(value, float) and not value.is_integer():
        raise _fail(key, "an integer", value)
    return int(value)


def _json_ok(key: str | tuple[Any, ...], value: Any) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except ValueError as exc:
        if "Out of range float" in str(exc):
            raise _fail(key, "finite numbers (.nan and .inf cannot be stored, compared or "
                        "sampled; remove them)", value) from None
        raise _fail(key, "a JSON-compatible value (number, string, bool, null, list, mapping)",
                    value) from None
    except (TypeError, RecursionError):
        raise _fail(key, "a JSON-compatible value (number, string, bool, null, list, mapping)",
                    value) from None


class ParamSpec(BaseModel):
    """One entry of ``parameters:`` (W&B schema). ``distribution`` is always resolved."""

    model_config = ConfigDict(extra="forbid")

    value: Any = None
    values: list[Any] | None = None
    probabilities: list[float] | None = None
    distribution: str | None = None
    min: Number | None = None
    max: Number | None = None
    mu: Number | None = None
    sigma: Number | None = None
    q: Number | None = None
    a: Number | None = None
    b: Number | None = None
    parameters: dict[str, ParamSpec] | None = None

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any) -> Any:
        if isinstance(data, ParamSpec):
            return data
        if not isinstance(data, Mapping):
            raise _fail((), "a mapping with value, values, distribution, min/max or parameters",
                        data)
        for key in data:
            if key not in _PARAM_KEYS:
                raise _fail(key, f"one of {', '.join(_PARAM_KEYS)}", _Text(f"unknown key {key!r}"),
                            _hint(key, _PARAM_KEYS))
        return _resolve_param(dict(data))

    def to_dict(self) -> dict[str, Any]:
        """The W&B form of this parameter: its distribution and the keys it uses."""
        if self.parameters is not None:
            return {"parameters": {k: v.to_dict() for k, v in self.parameters.items()}}
        assert self.distribution is not None
        required, optional = DISTRIBUTIONS[self.distribution]
        out: dict[str, Any] = {"distribution": self.distribution}
        for key in _PARAM_KEYS[1:-1]:
            if key in required or (key in optional and getattr(self, key) is not None):
                out[key] = getattr(self, key)
        return out


def _resolve_param(d: dict[str, Any]) -> dict[str, Any]:
    """Infer the distribution, convert numbers, check keys and ranges, fill W&B defaults."""
    given = set(d)
    dist = d.get("distribution")
    if "parameters" in d:
        extra = given - {"parameters", "distribution"}
        if extra or dist not in (None, "nested"):
            bad = sorted(extra)[0] if extra else "distribution"
            raise _fail(bad, "only `parameters:` in a nested parameter", d[bad])
        sub = d["parameters"]
        if not isinstance(sub, Mapping) or not sub:
            raise _fail("parameters", "a non-empty mapping of parameters", sub)
        return {"parameters": sub, "distribution": "nested"}
    for key in _NUMERIC:
        if key in d:
            d[key] = _number(key, d[key])
    if dist is None:
        if "values" in given:
            dist = "categorical"
        elif "value" in given:
            dist = "constant"
        elif {"min", "max"} <= given:
            ints = all(isinstance(d[k], int) for k in ("min", "max"))
            dist = "int_uniform" if ints else "uniform"
        elif given & {"mu", "sigma"} and not given & {"min", "max"}:
            dist = "normal"
        else:
            raise _fail("distribution", "`values`, `value`, `min` and `max`, or a `distribution`",
                        _Text(f"only {', '.join(sorted(given)) or 'nothing'}"))
    elif dist == "categorical_w_probabilities":
        dist = "categorical"
    elif not isinstance(dist, str) or dist not in DISTRIBUTIONS:
        raise _fail("distribution", "one of " + ", ".join(DISTRIBUTIONS), dist,
                    _hint(dist, DISTRIBUTIONS))
    d["distribution"] = dist
    required, optional = DISTRIBUTIONS[dist]
    extra = sorted(given - required - optional - {"distribution"})
    if extra:
        raise _fail(extra[0], f"only {', '.join(sorted(required | optional))} with distribution "
                    f"{dist}", _Text(f"{extra[0]}: {_show(d[extra[0]])}"))
    missing = sorted(required - given)
    if missing:
        raise _fail(missing[0], f"`{missing[0]}:` (required by distribution {dist})",
                    _Text("nothing"))
    for key in optional - given:
        if key in _DEFAULTS:
            d[key] = _DEFAULTS[key]
    _check_param(dist, d)
    return d


def _check_param(dist: str, d: dict[str, Any]) -> None:
    if dist == "constant":
        d["value"] = fix_sci(d["value"])
        _json_ok("value", d["value"])
    elif dist == "categorical":
        _check_values(d)
    if "min" in d:
        lo, hi = d["min"], d["max"]
        if dist == "int_uniform":
            lo, hi = d["min"], d["max"] = _integral("min", lo), _integral("max", hi)
        if hi < lo or (hi == lo and dist != "int_uniform"):
            raise _fail("max", f"a value greater than min ({lo})", hi)
        if dist.endswith("_values") and lo <= 0:
            raise _fail("min", f"a value > 0 (distribution {dist} takes the values themselves)", lo)
        if dist in ("log_uniform", "q_log_uniform", "inv_log_uniform"):
            for key in ("min", "max"):
                if abs(d[key]) > 700:
                    raise _fail(key, f"a natural-log exponent in [-700, 700] for {dist} (use "
                                f"{dist}_values to give the values themselves)", d[key])
    for key in ("sigma", "q", "a", "b"):
        if key in d and d[key] <= 0:
            raise _fail(key, "a value > 0", d[key])


def _check_values(d: dict[str, Any]) -> None:
    values = d["values"]
    if not isinstance(values, list) or not values:
        raise _fail("values", "a non-empty list", values)
    values = d["values"] = fix_sci(values)
    for i, v in enumerate(values):
        _json_ok(("values", i), v)
    probs = d.get("probabilities")
    if probs is not None:
        if not isinstance(probs, list) or len(probs) != len(values):
            raise _fail("probabilities", f"a list of {len(values)} numbers (one per value)",
                        probs)
        probs = d["probabilities"] = [_number("probabilities", p) for p in probs]
        if any(p < 0 for p in probs) or not math.isclose(sum(probs), 1.0, abs_tol=1e-6):
            raise _fail("probabilities", "non-negative numbers that sum to 1", probs)
    _merge_repeated_values(d)


def _merge_repeated_values(d: dict[str, Any]) -> None:
    """A value listed twice (W&B accepts it) is kept once, with a warning; its probabilities
    are added up, so random search draws it as often as W&B would."""
    values, probs = d["values"], d.get("probabilities")
    kept: list[Any] = []
    weights: list[float] = []
    repeated: list[Any] = []
    for i, v in enumerate(values):
        # 1 == 1.0 == True in Python: only the same type and value is a repeat
        j = next((k for k, w in enumerate(kept) if type(w) is type(v) and w == v), None)
        if j is None:
            kept.append(v)
            weights.append(probs[i] if probs is not None else 1.0)
        else:
            repeated.append(v)
            weights[j] += probs[i] if probs is not None else 1.0
    if not repeated:
        return
    d["values"] = kept
    if probs is not None:
        d["probabilities"] = weights
    how = ("its probabilities are added up" if probs is not None else
           "random search draws each value equally often; give probabilities: to weight one")
    warnings.warn(f"values {repeated!r} listed more than once in {values!r}: each is kept "
                  f"once ({how})", UserWarning, stacklevel=2)


class MetricSpec(BaseModel):
    """The metric to optimize."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None  # None: nothing optimized (W&B grid/random without metric:)
    goal: Literal["minimize", "maximize"] = "minimize"
    target: float | None = Field(None, allow_inf_nan=False)


class EarlyTerminate(BaseModel):
    """``early_terminate:``: W&B hyperband keys, plus hpo's asha/median/none."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["hyperband", "asha", "median", "none"]
    min_iter: int | None = Field(None, ge=1)
    max_iter: int | None = Field(None, ge=1)
    s: int | None = Field(None, ge=1)
    eta: float = 3
    strict: bool = True
    min_resource: int | None = Field(None, ge=1)
    reduction_factor: float | None = None
    min_early_stopping_rate: int = Field(0, ge=0)
    n_startup_trials: int = Field(5, ge=0)
    n_warmup_steps: int = Field(0, ge=0)
    interval_steps: int = Field(1, ge=1)
    pause: bool = False  # asha: pause trials at rungs and resume promoted ones (hpo.pause)

    @model_validator(mode="after")
    def _check(self) -> EarlyTerminate:
        extra = sorted(self.model_fields_set - {"type"} - _ET_KEYS[self.type])
        if extra:
            raise _fail(extra[0], f"only {', '.join(sorted(_ET_KEYS[self.type])) or 'type'} "
                        f"with type {self.type}", _Text(f"{extra[0]}: {getattr(self, extra[0])!r}"))
        if self.eta <= 1:
            raise _fail("eta", "a number > 1", self.eta)
        if self.reduction_factor is not None and self.reduction_factor <= 1:
            raise _fail("reduction_factor", "a number > 1", self.reduction_factor)
        if self.type == "hyperband":
            if self.min_iter is None and (self.max_iter is None or self.s is None):
                raise _fail("min_iter", "`min_iter`, or `max_iter` and `s` (hyperband)",
                            _Text("neither"))
            if self.min_iter is not None and self.max_iter is not None:
                if self.max_iter <= self.min_iter:
                    raise _fail("max_iter", f"a value greater than min_iter ({self.min_iter})",
                                self.max_iter)
        return self


class Budget(BaseModel):
    """How much to run: trials and/or wall-clock minutes (None = unlimited)."""

    model_config = ConfigDict(extra="forbid")

    trials: int | None = Field(None, ge=1)
    minutes: float | None = Field(None, gt=0, allow_inf_nan=False)


class Resources(BaseModel):
    """Per-trial resources; fractional GPUs allowed, or ``gpu: auto`` (packed by measured
    memory: hpo.backends.gpu_packing)."""

    model_config = ConfigDict(extra="forbid")

    cpu: float = Field(1, gt=0, allow_inf_nan=False)
    gpu: float | Literal["auto"] = 0.0

    @field_validator("gpu", mode="before")
    @classmethod
    def _gpu_amount(cls, value: Any) -> Any:
        """A number of GPUs >= 0, or ``auto``."""
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        try:
            amount = float(value)
        except (TypeError, ValueError, OverflowError):
            amount = math.nan
        if not math.isfinite(amount) or amount < 0:
            raise _fail((), "a number of GPUs greater than or equal to 0 (0.25, 1, 2) or auto "
                        "(packed by measured memory)", value)
        return amount


# ``register`` is also ABCMeta.register (a method of BaseModel's metaclass, not reachable from
# instances): pydantic's warning about the name is moot here.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

    class MlflowSpec(BaseModel):
        """``mlflow:``: mirror the sweep into an MLflow tracking server (hpo.mlflow_sync). A
        plain string is the tracking URI."""

        model_config = ConfigDict(extra="forbid")

        tracking_uri: str = Field(min_length=1)
        experiment: str | None = Field(None, min_length=1)
        register: str | None = Field(None, min_length=1)

        @model_validator(mode="before")
        @classmethod
        def _uri_only(cls, data: Any) -> Any:
            if isinstance(data, str):
                return {"tracking_uri": data.strip()}
            if not isinstance(data, Mapping | MlflowSpec):
                raise _fail((), "a tracking URI, or a mapping with tracking_uri (and optionally "
                            "experiment, register)", data)
            return data


class SweepConfig(BaseModel):
    """A validated sweep: W&B sweep keys plus hpo's extensions."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["grid", "random", "bayes", "tpe", "gp", "cmaes", "qmc", "bohb"]
    metric: MetricSpec = Field(default_factory=MetricSpec)
    parameters: dict[str, ParamSpec]
    early_terminate: EarlyTerminate | None = None
    run_cap: int | None = Field(None, ge=1)
    program: str | None = None
    command: list[str] | None = None
    trainer: str | None = None
    trainer_args: dict[str, Any] = {}
    resources: Resources = Resources()
    parallel: int = Field(1, ge=1)
    backend: Literal["local", "ray", "agents"] = "local"
    storage: str | None = None
    seed: int | None = None
    budget: Budget = Budget()
    name: str | None = None
    max_retries: int = Field(1, ge=0)
    timeout: float | None = Field(None, gt=0, allow_inf_nan=False)
    mlflow: MlflowSpec | None = None
    source: str | None = None
    text: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _numbers(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            data = dict(data)
            if isinstance(data.get("trainer_args"), Mapping):
                data["trainer_args"] = fix_sci(dict(data["trainer_args"]))
            if isinstance(data.get("command"), list):  # W&B allows any scalar in a command
                data["command"] = [str(c) if isinstance(c, int | float) else c
                                   for c in data["command"]]
            if isinstance(data.get("timeout"), bool):
                raise _fail("timeout", "a number of seconds > 0 per trial (or null)",
                            data["timeout"])
        return data

    @model_validator(mode="after")
    def _check(self) -> SweepConfig:
        if self.trainer and self.program:
            raise _fail("program", "either `trainer:` or `program:`, not both",
                        _Text(f"trainer: {self.trainer!r} and program: {self.program!r}"))
        # Neither trainer:, program: nor command: is a W&B file meant for
        # wandb.agent(sweep_id, function=train): it loads, and runs with an objective
        # (run_sweep(config, objective=fn), hpo agent); hpo.trainer_ref says what is missing
        # only when something has to run.
        if self.metric.name is None:
            stops = self.early_terminate is not None and self.early_terminate.type != "none"
            if self.method not in ("grid", "random") or stops:
                why = "early stopping" if stops else f"method {self.method}"
                raise _fail("metric", f"`metric: {{name: ..., goal: minimize|maximize}}` "
                            f"({why} needs a metric to optimize; only grid and random "
                            "sweeps without early_terminate can run without one)",
                            _Text("no metric"))
        if not self.parameters:
            raise _fail("parameters", "at least one parameter", {})
        seen: dict[str, tuple[str, ...]] = {}
        for path, spec in iter_params(self.parameters):
            flat = ".".join(path)
            if flat in seen:
                raise _fail(("parameters", *_spec_path(path)),
                            f"a parameter name distinct from {'.'.join(seen[flat])!r} "
                            "once nested names are joined with dots", flat)
            seen[flat] = path
            if self.method == "grid" and spec.distribution not in GRID_FINITE:
                raise _fail(("parameters", *_spec_path(path)),
                            f"finite values for method grid; parameter {flat} has distribution "
                            f"{spec.distribution}; use values: [...]", spec.distribution)
        if self.method == "grid":
            _check_grid(self.parameters)
        cap = max_parallel(self.backend)
        if self.parallel > cap:
            raise _fail("parallel", f"at most {cap} concurrent trials on backend {self.backend} "
                        f"({_PARALLEL_WHY[self.backend]})", self.parallel,
                        f"; set {MAX_PARALLEL_ENV}=N in the environment to allow up to N")
        if self.name is not None:
            _check_name(self.name)
        return self

    def trial_budget(self) -> int | None:
        """Trials to run: the smaller of ``budget.trials`` and ``run_cap`` (None = unlimited)."""
        caps = [c for c in (self.budget.trials, self.run_cap) if c is not None]
        return min(caps) if caps else None

    def with_overrides(self, **kw: Any) -> SweepConfig:
        """A copy with command-line style overrides (``trials`` sets ``budget.trials``,
        ``minutes`` sets ``budget.minutes``, ``timeout`` the per-trial timeout in seconds);
        None values are ignored; revalidated, so a bad value is a ConfigError here."""
        data = self._data(masked=False)
        given = []
        for key, value in kw.items():
            if value is None:
                continue
            if key in ("trials", "minutes"):
                data.setdefault("budget", {})[key] = value
            elif key == "mlflow" and isinstance(value, str):  # --mlflow URI: keep the rest
                data["mlflow"] = {**data.get("mlflow", {}), "tracking_uri": value}
            elif key in _TOP_KEYS:
                data[key] = value
            else:
                raise ConfigError(f"unknown override {key!r}" + _hint(key, ("trials", *_TOP_KEYS)))
            shown = mask_url(repr(value)) if key in ("storage", "mlflow") else repr(value)
            given.append(f"{key}={shown}")
        try:
            config = parse_config(data, source=self.source or "<overrides>")
        except ConfigError as exc:
            raise ConfigError(f"{exc}\n(with the overrides {', '.join(given)})" if given
                              else str(exc)) from None
        return config.model_copy(update={"text": self.text})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able W&B/hpo form, safe to store and show: ``storage`` has its password
        masked. ``parse_config(c.to_dict())`` gives the same config (but that masked URL)."""
        return self._data(masked=True)

    def _data(self, *, masked: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method,
            "metric": self.metric.model_dump(exclude_none=True),
            "parameters": {k: v.to_dict() for k, v in self.parameters.items()},
        }
        if self.early_terminate is not None:
            out["early_terminate"] = {
                "type": self.early_terminate.type,
                **self.early_terminate.model_dump(exclude_unset=True),
            }
        for key in ("run_cap", "program", "command", "trainer"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["trainer_args"] = json.loads(json.dumps(self.trainer_args, default=str))
        out["resources"] = self.resources.model_dump()
        out["parallel"] = self.parallel
        out["backend"] = self.backend
        if self.storage is not None:
            out["storage"] = mask_url(self.storage) if masked else self.storage
        for key in ("seed", "name"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["budget"] = self.budget.model_dump(exclude_none=True)
        out["max_retries"] = self.max_retries
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if self.mlflow is not None:
            out["mlflow"] = self.mlflow.model_dump(exclude_none=True)
            if masked:
                out["mlflow"]["tracking_uri"] = mask_url(self.mlflow.tracking_uri)
        return out


_PARALLEL_WHY = {
    "local": "one process per trial on this machine",
    "ray": "one Ray task per trial",
    "agents": "one running trial per agent",
}


def max_parallel(backend: str) -> int:
    """The most concurrent trials a sweep may ask of ``backend``; ``$HPO_MAX_PARALLEL`` (a
    positive integer) replaces the default cap."""
    env = os.environ.get(MAX_PARALLEL_ENV, "").strip()
    if env:
        try:
            cap = int(env)
        except ValueError:
            cap = 0
        if cap <= 0:
            raise ConfigError(f"${MAX_PARALLEL_ENV}={env!r}: expected a positive integer")
        return cap
    return LOCAL_MAX_PARALLEL if backend == "local" else CLUSTER_MAX_PARALLEL


def _check_name(name: str) -> None:
    """A sweep name names files (reports/NAME.html) and database rows: keep it plain."""
    bad = next((c for c in name if c in "/\\" or not c.isprintable()), None)
    if not name.strip() or bad is not None:
        raise _fail("name", "a sweep name without '/', '\\' or control characters (it names "
                    "the report file)", name)


def _check_grid(parameters: Mapping[str, ParamSpec]) -> None:
    """Refuse a grid too large to enumerate, from its size alone (no list is built)."""
    from hpo.space import MAX_GRID, SearchSpace, size_text  # hpo.space imports this module

    try:
        size = SearchSpace.from_config(parameters).grid_size()
    except ConfigError as exc:
        raise _fail("parameters", "parameters a grid can enumerate", _Text(str(exc))) from None
    if size > MAX_GRID:
        raise _fail("parameters", f"a grid of at most {MAX_GRID:,} points for method grid",
                    _Text(f"{size_text(size)} points"),
                    "; use fewer values, a larger q, or method: random")


_TOP_KEYS = tuple(k for k in SweepConfig.model_fields if k not in ("source", "text"))
_NESTED_MODELS: dict[str, type[BaseModel]] = {
    "metric": MetricSpec, "early_terminate": EarlyTerminate, "budget": Budget,
    "resources": Resources, "mlflow": MlflowSpec,
}


def iter_params(
    params: Mapping[str, ParamSpec], prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], ParamSpec]]:
    """Leaf parameters as (path, spec), depth first, in file order."""
    out: list[tuple[tuple[str, ...], ParamSpec]] = []
    for key, spec in params.items():
        if spec.parameters is not None:
            out += iter_params(spec.parameters, (*prefix, key))
        else:
            out.append(((*prefix, key), spec))
    return out


def _spec_path(path: tuple[str, ...]) -> tuple[str, ...]:
    """('opt', 'lr') -> ('opt', 'parameters', 'lr'): the key path inside the file."""
    out: list[str] = []
    for i, key in enumerate(path):
        out += [key] if i == 0 else ["parameters", key]
    return tuple(out)


# ---------------------------------------------------------------- loading and error reports


def load_config(path: str | os.PathLike[str]) -> SweepConfig:
    """Read and validate a sweep YAML file; every problem is one ConfigError.

    Files are not looked for here (the sweep may run on another machine): see
    :func:`check_program` for the ``program:`` check made before a sweep runs.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: sweep file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory; expected a sweep YAML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text; expected a sweep YAML file") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the sweep file ({exc.strerror})") from None
    except ValueError as exc:  # e.g. a NUL byte in the path
        raise ConfigError(f"{p!r}: not a usable file name ({exc})") from None
    data, lines = _load_yaml(text, str(p))
    return _parse(data, str(p), text, lines)


def parse_config(
    data: Mapping[str, Any], *, source: str = "<dict>", text: str | None = None
) -> SweepConfig:
    """Validate a sweep given as a mapping (``text``, when given, supplies line numbers).

    The config keeps ``text`` with every URL's password masked (it is shown and stored).
    """
    lines = _line_map(text, source) if text else {}
    return _parse(data, source, text, lines)


def _parse(data: Any, source: str, text: str | None,
           lines: dict[tuple[Any, ...], int]) -> SweepConfig:
    if not isinstance(data, Mapping):
        found = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{source}: expected a mapping of sweep keys (method:, metric:, "
                          f"parameters:, ...), found {found}")
    _check_shape(data, source)
    issues: list[tuple[tuple[Any, ...], str]] = []
    clean: dict[str, Any] = {}
    for key, value in data.items():
        if key in _WANDB_IGNORED:
            warnings.warn(f"{source}: W&B key {key!r} is ignored by hpo", UserWarning,
                          stacklevel=3)
        elif key not in _TOP_KEYS:
            issues.append(((key,), f"expected a sweep key ({', '.join(_TOP_KEYS)}), "
                           f"found unknown key {_show(key)}" + _hint(key, _TOP_KEYS)))
        else:
            clean[key] = value
    metric = clean.get("metric")
    if isinstance(metric, Mapping) and any(k in metric for k in _METRIC_IGNORED):
        clean["metric"] = {k: v for k, v in metric.items() if k not in _METRIC_IGNORED}
        warnings.warn(f"{source}: W&B keys metric.impute* are ignored by hpo", UserWarning,
                      stacklevel=3)
    storage = clean.get("storage")
    shown_text = mask_text(text, storage if isinstance(storage, str) else None) \
        if text is not None else None
    try:
        config = SweepConfig.model_validate({**clean, "source": source, "text": shown_text})
    except ValidationError as exc:
        issues += _issues(exc)
        config = None
    if issues or config is None:
        raise ConfigError(_render(issues, source, lines))
    return config


def _issues(exc: ValidationError) -> list[tuple[tuple[Any, ...], str]]:
    out = []
    for err in exc.errors(include_url=False):
        loc, ctx, kind = tuple(err["loc"]), err.get("ctx") or {}, err["type"]
        if kind == "hpo":
            out.append(((*loc, *ctx.get("path", ())), err["msg"]))
        elif kind == "extra_forbidden":
            model = _NESTED_MODELS.get(str(loc[0])) if len(loc) == 2 else None
            valid = list(model.model_fields) if model else []
            out.append((loc, f"expected one of {', '.join(valid) or 'no keys'}, found unknown "
                              f"key {loc[-1]!r}" + _hint(loc[-1], valid)))
        elif kind == "missing":
            out.append((loc, f"expected `{loc[-1]}:` (required), found nothing"))
        else:
            msg = err["msg"].removeprefix("Input should be ").removeprefix("Value error, ")
            msg = re.sub(r"a valid dictionary( or instance of \w+)?", "a mapping", msg)
            out.append((loc, f"expected {msg}, found {_show(err['input'])}"))
    return out


def _measure(root: Any, children: Any, where: Any) -> tuple[int, int]:
    """(values once expanded, values as written) of a tree whose nodes may be shared.

    ``children(node)`` lists a container's children (None for a leaf); ``where(node)`` is the
    message prefix for it. Refuses a cycle and nesting deeper than MAX_DEPTH. Iterative, and
    linear in the distinct containers, so a "billion laughs" is measured at once.
    """
    sizes: dict[int, int] = {}  # id(container) -> values in it once expanded
    written = 0
    active: set[int] = set()  # the containers on the current path
    stack: list[tuple[Any, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        kids = children(node)
        if done:
            active.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes.get(id(k), 1) for k in kids)
            continue
        if kids is None or id(node) in sizes:
            continue
        if id(node) in active:
            raise ConfigError(f"{where(node)}: a value contains itself (a YAML alias *name "
                              "inside its own &name); write the value out instead")
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where(node)}: nested more than {MAX_DEPTH} levels deep; "
                              "expected a sweep file (a few levels of mappings and lists)")
        written += 1 + len(kids)
        active.add(id(node))
        stack.append((node, depth, True))
        stack.extend((k, depth + 1, False) for k in kids)
    return sizes.get(id(root), 1), written


def _refuse_expansion(total: int, written: int, source: str) -> None:
    if total > written + MAX_ALIAS_EXPANSION:
        raise ConfigError(
            f"{source}: YAML aliases (*name) or shared values expand this sweep to {total:,} "
            f"values, more than {MAX_ALIAS_EXPANSION:,} beyond what is written; write the "
            "values out, or use fewer aliases")


def _data_children(node: Any) -> list[Any] | None:
    if isinstance(node, Mapping):
        return list(node.values())
    return node if isinstance(node, list) else None


def _check_shape(data: Any, source: str) -> None:
    """Refuse data nested deeper than MAX_DEPTH, holding a cycle, or whose shared parts
    (YAML aliases, or one list used twice) expand to more than MAX_ALIAS_EXPANSION values."""
    total, written = _measure(data, _data_children, lambda node: source)
    _refuse_expansion(total, written, source)


def _load_yaml(text: str, source: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """YAML text -> (data, line map), refusing alias bombs before building anything."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            lines = _walk_nodes(root, source) if root is not None else {}
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested more than {MAX_DEPTH} levels deep; expected a "
                          "sweep file (a few levels of mappings and lists)") from None
    except (ValueError, OverflowError) as exc:  # PyYAML: a bad \U escape, a 13th month, ...
        raise ConfigError(f"{source}: YAML value error: {exc}; fix or quote that value"
                          ) from None
    return data, lines


def _render(issues: list[tuple[tuple[Any, ...], str]], source: str,
            lines: dict[tuple[Any, ...], int]) -> str:
    rendered = []
    for path, message in issues:
        line = next((lines[path[:n]] for n in range(len(path), 0, -1) if path[:n] in lines),
                    None)
        where = f"{source}:{line}" if line else source
        key = ".".join(str(p) for p in path) or "(top level)"
        rendered.append(f"{where}: {key}: {message}")
    if len(rendered) == 1:
        return rendered[0]
    return f"{source}: {len(rendered)} problems:\n" + "\n".join("  " + r for r in rendered)


def _line_map(text: str, source: str) -> dict[tuple[Any, ...], int]:
    """Key path -> 1-based line of that key (or list item) in the YAML text."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError, ValueError, OverflowError):
        return {}  # no line numbers; the data itself is what gets validated
    with warnings.catch_warnings():  # told once, when the text was loaded
        warnings.simplefilter("ignore")
        return _walk_nodes(root, source) if root is not None else {}


def _walk_nodes(root: yaml.Node, source: str) -> dict[tuple[Any, ...], int]:
    """The line map of a composed document; warns of duplicate keys (the last one wins, as
    in PyYAML and so W&B), refuses nesting deeper than MAX_DEPTH and aliases that expand
    beyond MAX_ALIAS_EXPANSION (each alias's content is walked once: lines are those of the
    anchored text)."""
    _check_node_shape(root, source)
    lines: dict[tuple[Any, ...], int] = {}
    duplicates: list[str] = []
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[Any, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:  # an alias: its keys' lines are where the anchor is
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = (*path, key_node.value)
                if key in lines:  # YAML (and W&B, through yaml.safe_load): the last wins
                    duplicates.append(f"{source}:{key_node.start_mark.line + 1}: "
                                      f"{'.'.join(map(str, key))}: duplicate key (first on line "
                                      f"{lines[key]}); this later one is used, as W&B does: "
                                      f"delete the one you did not mean")
                lines[key] = key_node.start_mark.line + 1
                stack.append((value_node, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*path, i)] = item.start_mark.line + 1
                stack.append((item, (*path, i)))
    for text in duplicates[:3]:
        warnings.warn(text, UserWarning, stacklevel=3)
    if len(duplicates) > 3:
        warnings.warn(f"{source}: {len(duplicates) - 3} more duplicate keys (the last of each "
                      "is used)", UserWarning, stacklevel=3)
    return lines


def _node_children(node: yaml.Node) -> list[yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else None


def _check_node_shape(root: yaml.Node, source: str) -> None:
    """:func:`_check_shape` on YAML nodes, so a bomb is refused before it is constructed."""
    total, written = _measure(root, _node_children,
                              lambda node: f"{source}:{node.start_mark.line + 1}")
    _refuse_expansion(total, written, source)


def check_program(config: SweepConfig, sweep_file: str | os.PathLike[str] | None = None) -> None:
    """Refuse a ``program:`` naming a file (``train.py``, ``src/train``) that the trials will
    not find: the program runner starts it from the working directory (as ``wandb agent``
    does), so a relative path must exist there. When the file is next to the sweep file
    instead, the message says how to run it. Bare command names and commands that do not run
    ``${program}`` are left alone. Call it where the trials will run, before anything is
    created."""
    program = config.program
    if not program:
        return
    if config.command is not None and not any("${program}" in c for c in config.command):
        return  # the command does not run the program
    if "/" not in program and Path(program).suffix.lower() not in _FILE_SUFFIXES:
        return  # a command name (found on PATH, or the command's business)
    here = Path.cwd()
    if sweep_file is None and config.source and not config.source.startswith("<"):
        sweep_file = config.source
    beside = Path(sweep_file).parent / program if sweep_file is not None else None
    try:
        if (here / program).is_file():  # an absolute program ignores `here`
            return
        found_beside = beside is not None and beside.is_file()
    except (OSError, ValueError):  # a name the OS cannot even look up
        found_beside = False
    line = _line_map(config.text, "").get(("program",)) if config.text else None
    source = str(sweep_file or config.source or "<config>")
    where = f"{source}:{line}" if line else source
    if found_beside and beside is not None:
        folder = beside.parent.resolve()
        raise ConfigError(
            f"{where}: program: {program!r} is next to the sweep file, in {folder}, but "
            f"trials start it from the working directory {here}; run hpo from {folder}, or "
            f"write program: {os.path.relpath(beside.resolve(), here)}")
    place = program if Path(program).is_absolute() else f"{program!r} in {here}"
    raise ConfigError(f"{where}: program: expected a training script that exists, found no "
                      f"{place}; fix the path (relative to the folder you run hpo from)")
