"""``method`` -> Optuna sampler, ``early_terminate`` -> Optuna pruner.

Samplers: ``bayes`` and ``gp`` -> GPSampler; ``tpe`` -> multivariate, grouped TPE with the
constant liar (parallel workers do not pile onto one point), reading a bounded history past
1,000 trials (hpo.history); ``random`` -> RandomSampler;
``grid`` -> RandomSampler (the sweep enqueues every grid point once, so the sampler only sees
fixed values); ``cmaes`` -> CmaEsSampler with TPE for what CMA-ES cannot model (categoricals);
``qmc`` -> scrambled Sobol QMCSampler; ``bohb`` -> hpo.multifidelity.BohbSampler: the same TPE
fit on the values trials reported at one budget (step), the largest with enough observations
(BOHB's rule; rung steps when the pruner is successive halving or Hyperband), and plain ``tpe``
until a budget has enough. All take ``seed``.

Pruners:

* ``median`` -> MedianPruner(n_startup_trials, n_warmup_steps, interval_steps).
* ``asha`` -> SuccessiveHalvingPruner(min_resource = min_resource or min_iter,
  reduction_factor = reduction_factor or eta, min_early_stopping_rate). Without min_resource
  and min_iter: :class:`AshaPruner`, whose first rung is two rungs below the longest trial
  (``max_iter``, else the last step a trainer declares with ``ctx.set_max_step``, else the
  first completed trial's last step): max(1, max // eta**2).
* ``hyperband`` (W&B) -> HyperbandPruner(min_resource = min_iter, max_resource = max_iter or
  "auto", reduction_factor = eta). W&B's ``max_iter`` + ``s`` (bands at max_iter/eta^k,
  k = 1..s) gives min_iter = max(1, round(max_iter / eta**s)).

How W&B's hyperband maps, and where it is not exact:

* W&B checks a run at bands min_iter * eta^k and stops it when its metric is worse than the
  best 1/eta of all runs' values at that band. Optuna's successive halving does the same at
  rungs min_resource * eta^k (promoting the top 1/eta). Optuna's HyperbandPruner runs several
  such ladders (brackets) with later first rungs and gives each trial one bracket, so some
  trials are first judged later than W&B would judge them; ``type: asha`` is W&B's single ladder.
* W&B counts bands in logged iterations; hpo uses the ``step`` passed to ``report``.
* ``strict: true`` (W&B's default) compares the run's value *at* the band, which is what
  Optuna's pruners do. ``strict: false`` (W&B's older, lenient rule) compares the run's *best
  value so far*: :class:`BestSoFarPruner` feeds the Optuna pruner each trial's running best
  instead of its latest value. The other trials' values at the rung are then running bests too
  (W&B takes their raw values there), so lenient mode is slightly more lenient than W&B's.
  ``strict`` also applies to ``asha``.
* ``eta`` may be any number > 1 in W&B; Optuna needs an integer reduction factor >= 2, so eta
  is rounded (with a warning when that changes it).
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import optuna
from optuna.pruners import (
    BasePruner,
    HyperbandPruner,
    MedianPruner,
    NopPruner,
    SuccessiveHalvingPruner,
)
from optuna.samplers import (
    BaseSampler,
    CmaEsSampler,
    GPSampler,
    QMCSampler,
    RandomSampler,
    TPESampler,
)
from optuna.study import StudyDirection
from optuna.trial import TrialState

from hpo.config import EarlyTerminate, SweepConfig
from hpo.history import BoundedHistorySampler
from hpo.multifidelity import BohbSampler

Spec = tuple[type, dict[str, Any]]


class BestSoFarPruner(BasePruner):
    """Run ``pruner`` on each trial's best intermediate value so far (W&B ``strict: false``)."""

    def __init__(self, pruner: BasePruner) -> None:
        self.pruner = pruner

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        better = max if study.direction == StudyDirection.MAXIMIZE else min
        best: dict[int, float] = {}
        current = math.nan
        for step in sorted(trial.intermediate_values):
            value = trial.intermediate_values[step]
            current = value if math.isnan(current) else better(current, value)
            best[step] = current
        view = copy.copy(trial)
        view.intermediate_values = best
        return self.pruner.prune(study, view)

    def __repr__(self) -> str:
        return f"BestSoFarPruner({type(self.pruner).__name__})"


MAX_STEP_ATTR = "hpo_max_step"  # a trial's user attr: the last step its trainer declared


class AshaPruner(BasePruner):
    """ASHA (Optuna's SuccessiveHalvingPruner) whose first rung sits ``rungs`` rungs below the
    longest trial: ``min_resource = max(1, max_resource // eta**rungs)``.

    ``max_resource`` is ``early_terminate.max_iter`` when given, else the last step a trainer
    declares (:func:`declare_max_step`), else the last step of the first trial that completes
    (nothing is pruned before one of these is known). Optuna's own "auto"
    (``max_steps // 100``) judges most trainers at step 1; on the multi-fidelity benchmarks
    (benchmarks/quality) that made hpo rank last among the pruning contenders.
    """

    def __init__(
        self, reduction_factor: int = 3, *, max_resource: int | None = None, rungs: int = 2,
        min_early_stopping_rate: int = 0,
    ) -> None:
        self.reduction_factor = reduction_factor
        self.rungs = rungs
        self.min_early_stopping_rate = min_early_stopping_rate
        self._inner: SuccessiveHalvingPruner | None = None
        self.learns_max = max_resource is None  # from declared steps or completed trials
        if max_resource is not None:
            self._inner = self._make(max_resource)

    def _make(self, max_resource: int) -> SuccessiveHalvingPruner:
        self.max_resource = int(max_resource)
        return SuccessiveHalvingPruner(
            min_resource=max(1, self.max_resource // self.reduction_factor**self.rungs),
            reduction_factor=self.reduction_factor,
            min_early_stopping_rate=self.min_early_stopping_rate,
        )

    def learn(self, study: optuna.Study) -> SuccessiveHalvingPruner | None:
        """The ladder, set from the study if not known yet: the last step a trial declared
        (``MAX_STEP_ATTR``, written by ``ctx.set_max_step`` in whichever process ran it), else
        the last step of its completed trials (None: neither yet). Any process can ask, not
        only one that judges trials (hpo.pause claims)."""
        if self._inner is None:
            declared, done = [], []
            for t in study.get_trials(deepcopy=False):
                step = t.user_attrs.get(MAX_STEP_ATTR)
                if isinstance(step, int) and step >= 1:
                    declared.append(step)
                elif t.state == TrialState.COMPLETE and t.last_step is not None:
                    done.append(t.last_step)
            steps = declared or done
            if steps:
                self._inner = self._make(max(steps))
        return self._inner

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        inner = self.learn(study)
        return False if inner is None else inner.prune(study, trial)

    def __repr__(self) -> str:
        return f"AshaPruner(reduction_factor={self.reduction_factor}, rungs={self.rungs})"


def reads_declared_step(pruner: BasePruner) -> bool:
    """True when ``pruner`` learns its rungs from a declared step stored on the study's trials
    (``MAX_STEP_ATTR``: hpo's AshaPruner without ``max_iter``, wrapped or not)."""
    if isinstance(pruner, BestSoFarPruner):
        pruner = pruner.pruner
    return isinstance(pruner, AshaPruner) and pruner.learns_max


def declare_max_step(pruner: BasePruner, step: int) -> bool:
    """Give a pruner that waits for a completed trial to learn its rungs the trainer's last
    step instead (hpo's AshaPruner without ``max_iter``, Hyperband with ``max_resource="auto"``),
    as ``early_terminate.max_iter`` would, so it prunes from the first trials on.

    Does nothing once the rungs are known (the first declared or completed step wins, per
    process) or for other pruners. True when it set them.
    """
    step = int(step)
    if isinstance(pruner, BestSoFarPruner):
        return declare_max_step(pruner.pruner, step)
    if isinstance(pruner, AshaPruner):
        if pruner._inner is None and step >= 1:
            pruner._inner = pruner._make(step)
            return True
        return False
    # Optuna's private state (pinned in tests/test_strategy.py): brackets are built from
    # _max_resource at the first prune() once it is an int
    if (isinstance(pruner, HyperbandPruner) and pruner._max_resource == "auto"
            and not pruner._pruners and step > pruner._min_resource):
        pruner._max_resource = step
        return True
    return False


def _tpe(seed: int | None, n_startup_trials: int = 10) -> Spec:
    return TPESampler, {"multivariate": True, "group": True, "constant_liar": True,
                        "n_startup_trials": n_startup_trials, "seed": seed}


def _sampler_spec(config: SweepConfig) -> Spec:
    seed, method = config.seed, config.method
    if method in ("bayes", "gp"):
        return GPSampler, {"seed": seed, "n_startup_trials": 10, "deterministic_objective": False}
    if method == "tpe":  # bounded history: asks stay fast past 1,000 trials (hpo.history)
        return BoundedHistorySampler, {"sampler": _tpe(seed)}
    if method == "bohb":  # hpo's tpe until a budget has enough observations, then TPE there
        return BohbSampler, {"fallback": (BoundedHistorySampler, {"sampler": _tpe(seed)}),
                             "model": _tpe(None if seed is None else seed + 1, 0),
                             "n_startup_trials": 10}
    if method == "cmaes":
        return CmaEsSampler, {"seed": seed, "warn_independent_sampling": False,
                              "independent_sampler": _tpe(seed)}
    if method == "qmc":
        return QMCSampler, {"seed": seed, "scramble": True, "warn_independent_sampling": False}
    return RandomSampler, {"seed": seed}  # random, grid


def _eta(value: float, key: str) -> int:
    factor = max(2, round(value))
    if factor != value:
        warnings.warn(f"early_terminate.{key} {value:g} is used as {factor}: Optuna needs an "
                      "integer reduction factor >= 2", UserWarning, stacklevel=3)
    return factor


def hyperband_min_iter(et: EarlyTerminate) -> int:
    """First band: ``min_iter``, or W&B's ``max_iter / eta**s`` (at least 1)."""
    if et.min_iter is not None:
        return et.min_iter
    assert et.max_iter is not None and et.s is not None
    return max(1, round(et.max_iter / et.eta**et.s))


def _pruner_spec(config: SweepConfig) -> tuple[Spec, bool]:
    """The pruner class and arguments, and whether to wrap it in BestSoFarPruner."""
    et = config.early_terminate
    if et is None or et.type == "none":
        return (NopPruner, {}), False
    if et.type == "median":
        return (MedianPruner, {"n_startup_trials": et.n_startup_trials,
                               "n_warmup_steps": et.n_warmup_steps,
                               "interval_steps": et.interval_steps}), False
    if et.type == "asha":
        factor = _eta(et.reduction_factor or et.eta,
                      "reduction_factor" if et.reduction_factor else "eta")
        if et.min_resource or et.min_iter:
            return (SuccessiveHalvingPruner, {
                "min_resource": et.min_resource or et.min_iter,
                "reduction_factor": factor,
                "min_early_stopping_rate": et.min_early_stopping_rate}), not et.strict
        return (AshaPruner, {"reduction_factor": factor, "max_resource": et.max_iter,
                             "min_early_stopping_rate": et.min_early_stopping_rate}), not et.strict
    return (HyperbandPruner, {"min_resource": hyperband_min_iter(et),
                              "max_resource": et.max_iter or "auto",
                              "reduction_factor": _eta(et.eta, "eta")}), not et.strict


def _build(spec: Spec) -> Any:
    cls, kwargs = spec
    kwargs = {k: _build(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(**kwargs)


def _show(spec: Spec) -> str:
    cls, kwargs = spec
    args = ", ".join(f"{k}={_show(v) if isinstance(v, tuple) else repr(v)}"
                     for k, v in kwargs.items())
    return f"{cls.__name__}({args})"


def make_sampler(config: SweepConfig) -> BaseSampler:
    """The Optuna sampler for ``config.method``."""
    return _build(_sampler_spec(config))


def make_pruner(config: SweepConfig) -> BasePruner:
    """The Optuna pruner for ``config.early_terminate``."""
    spec, best_so_far = _pruner_spec(config)
    pruner = _build(spec)
    return BestSoFarPruner(pruner) if best_so_far else pruner


def _ladder(first: int, eta: int, stop: int | None) -> str:
    steps, step = [], first
    while (stop is None and len(steps) < 4) or (stop is not None and step < stop):
        steps.append(str(step))
        step *= eta
    return ", ".join(steps) + (", ..." if stop is None else f" (last step {stop})")


def rungs_text(config: SweepConfig) -> str | None:
    """Where the pruner judges trials, in words; None without asha or hyperband.

    Says so when the rungs wait for the first trial to complete (no ``max_iter``): nothing is
    pruned before then, which costs a whole trial's time on every slot at the start.
    """
    et = config.early_terminate
    if et is None or et.type not in ("asha", "hyperband"):
        return None
    wait = ("nothing is pruned until the first trial completes (its last step sets the "
            "rungs) or the trainer declares its last step (ctx.set_max_step, as the built-in "
            "trainers do); set early_terminate.max_iter to prune from the start")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = _build(_pruner_spec(config)[0])  # read the rungs off the pruner a sweep runs
    # Optuna's private state (pinned in tests/test_strategy.py)
    if isinstance(pruner, HyperbandPruner):
        first, eta, last = pruner._min_resource, pruner._reduction_factor, pruner._max_resource
        if last == "auto":
            return f"brackets from step {first}, eta {eta}; {wait}"
        return f"brackets from step {first} to {last}, eta {eta}"
    if isinstance(pruner, AshaPruner):
        pruner = pruner._inner
    if pruner is None:
        return wait
    eta = pruner._reduction_factor
    first = pruner._min_resource * eta**pruner._min_early_stopping_rate
    return f"steps {_ladder(first, eta, et.max_iter)}"


def describe(config: SweepConfig) -> dict[str, Any]:
    """What searches and what prunes, as plain strings, for reports and logs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec, best_so_far = _pruner_spec(config)
    pruner = _show(spec)
    et = config.early_terminate
    return {
        "method": config.method,
        "sampler": _show(_sampler_spec(config)),
        "pruner": f"BestSoFarPruner({pruner})" if best_so_far else pruner,
        "early_terminate": et.type if et else "none",
        "seed": config.seed,
        "direction": config.metric.goal,
        "metric": config.metric.name,
    }
