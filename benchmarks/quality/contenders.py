"""The optimizers compared, each run on one problem with one seed and one budget.

Budget is counted in full-fidelity evaluations: a trial that ran to step ``s`` of a problem with
``max_fidelity`` steps costs ``s / max_fidelity``. A run stops asking for trials once it has spent
its budget; trials that end past the budget are dropped from the record.

Contenders (same problems, same budget, same seeds):

* ``hpo``: hpo's defaults, i.e. a sweep file that sets only ``method: tpe``, the metric and the
  parameters: ``hpo.strategy``'s TPESampler(multivariate, group, constant_liar,
  n_startup_trials=10) and no early stopping (hpo, like W&B, stops trials early only when the
  sweep sets ``early_terminate``). On multi-fidelity problems the trainer still reports at
  fidelities 1..max; every trial runs to the end. Runs hpo's own study/sampler/pruner/space/
  TrialContext code on an Optuna in-memory storage (see ``hpo_sweep`` for why and for the
  check that it is the same search). Until 2026-11-24 this contender ran with
  ``early_terminate: asha`` on multi-fidelity problems; those rows are now ``hpo_asha``, and
  the rows of the former ``hpo_nopruner`` ablation (the same configuration as today's ``hpo``:
  ``early_terminate: {type: none}``) are ``hpo`` (``results/relabel.txt``).
* ``hpo_asha``: hpo's defaults plus ``early_terminate: {type: asha}`` (what a user who turns
  early stopping on with no settings gets): ``hpo.strategy.AshaPruner``,
  SuccessiveHalvingPruner(reduction_factor 3) whose first rung is two rungs below the longest
  trial, min_resource = max(1, max_step // 9), max_step = the last step of the first completed
  trial (before that nothing is pruned).
* ``hpo_sweep``: the same, through ``hpo.run_sweep`` (SQLite storage on /dev/shm, tracking
  store, in-process backend). About 0.2-0.5 s of storage work per trial on this machine, so the
  full grid uses ``hpo``; ``run.py --check-sweep`` shows both give the same trials.
* ``optuna_median``: Optuna's defaults, TPESampler() + MedianPruner().
* ``optuna_hyperband``: TPESampler() + HyperbandPruner(). (On single-fidelity problems both
  Optuna contenders are the same algorithm, so only ``optuna_median`` runs there.)
* ``random``: RandomSampler, every trial at full fidelity.
* ``ray_asha_random`` / ``ray_asha_optuna``: Ray Tune ``Tuner`` + ASHAScheduler(grace_period 1,
  reduction_factor 3, max_t = max fidelity) with random search / OptunaSearch (TPE), local Ray
  with 2 CPUs, ``max_concurrent_trials=2``, ``reuse_actors=True``.
* ablations of hpo's defaults (for deciding whether they should change): ``hpo_indep``
  (multivariate=False, group=False), ``hpo_startup20`` / ``hpo_startup5`` (n_startup_trials),
  ``hpo_hyperband`` (``early_terminate: hyperband``
  min_iter 1, eta 3), ``hpo_asha_eta2`` (``asha`` with eta 2), ``hpo_asha_minres`` (``asha``
  with min_resource = round(max fidelity / 9), i.e. the first rung two rungs below the top, set
  from the start; hpo's default now does nearly the same: max // 9 once a trial completed).

Archived rows (in ``results/trials.csv.gz``, never re-run because the code that made them is
gone): ``hpo_v0_auto100``, hpo's *previous* default on the multi-fidelity families,
``early_terminate: asha`` -> SuccessiveHalvingPruner(min_resource "auto", i.e. Optuna's
max_step // 100 = step 1 here, reduction_factor 3). See ``run.py``'s ``ARCHIVED``.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.quality.problems import REPO, Problem, get_problem

METRIC = "value"


def _quiet() -> None:
    import logging

    import optuna

    optuna.logging.set_verbosity(logging.WARNING)



@dataclass
class Trial:
    """One trial of a run: what it cost and, if it ran to full fidelity, what it scored."""

    cost: float  # fidelity consumed / max fidelity
    observed: float | None = None  # observed value at full fidelity (None: pruned or failed)
    true: float | None = None  # noiseless value at full fidelity


@dataclass
class Run:
    contender: str
    problem: str
    seed: int
    budget: float
    trials: list[Trial] = field(default_factory=list)

    def curve(self, problem: Problem, grid: np.ndarray) -> np.ndarray:
        """Normalized regret of the incumbent (best observed full-fidelity trial) at each
        budget in ``grid``; the incumbent is scored on its true value."""
        spent, best_obs, best_true = 0.0, math.inf, None
        points: list[tuple[float, float]] = []
        for t in self.trials:
            spent += t.cost
            if spent > self.budget + 1e-9:
                break
            if t.observed is not None and t.observed < best_obs:
                best_obs, best_true = t.observed, t.true
            points.append((spent, problem.regret(best_true)))
        out = np.ones(len(grid))
        j, current = 0, 1.0
        for i, b in enumerate(grid):
            while j < len(points) and points[j][0] <= b + 1e-9:
                current = points[j][1]
                j += 1
            out[i] = current
        return out


def _sweep_config(problem: Problem, seed: int, variant: str = "hpo") -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "method": "tpe", "metric": {"name": METRIC, "goal": "minimize"},
        "parameters": problem.parameters, "seed": seed,
    }
    if problem.multi_fidelity:  # hpo's default: no early stopping unless the sweep asks
        if variant == "hpo_asha":
            cfg["early_terminate"] = {"type": "asha"}
        elif variant == "hpo_hyperband":
            cfg["early_terminate"] = {"type": "hyperband", "min_iter": 1, "eta": 3}
        elif variant == "hpo_asha_eta2":
            cfg["early_terminate"] = {"type": "asha", "eta": 2}
        elif variant == "hpo_asha_minres":  # first rung at max/9 instead of "auto" (max/100)
            cfg["early_terminate"] = {"type": "asha",
                                      "min_resource": max(1, round(problem.max_fidelity / 9))}
    return cfg


class _Spend:
    """Shared trainer for the in-process contenders: records cost and outcome per trial."""

    def __init__(self, problem: Problem, seed: int, budget: float) -> None:
        self.problem, self.budget = problem, budget
        self.rng = np.random.default_rng([seed, 7])
        self.trials: list[Trial] = []
        self.spent = 0.0

    def trainer(self, report: Callable[[float, int], None]) -> Callable[[dict], float]:
        p = self.problem

        def run(params: dict[str, Any]) -> float:
            curve = p.curve(params, self.rng)
            rec = Trial(cost=0.0)
            self.trials.append(rec)
            try:
                if p.multi_fidelity:
                    for step in range(1, p.max_fidelity + 1):
                        rec.cost = step / p.max_fidelity
                        report(curve[step - 1], step)
                rec.cost = 1.0
                rec.observed, rec.true = curve[-1], p.true_value(params)
                return curve[-1]
            finally:
                self.spent += rec.cost

        return run

    @property
    def done(self) -> bool:
        return self.spent >= self.budget - 1e-9


# -- hpo ---------------------------------------------------------------------------------------
class _NullTracking:
    """Stands in for hpo's TrackingStore in the in-memory path (nothing to record)."""

    def log_metrics(self, *a: Any, **k: Any) -> None:
        pass

    def set_trial_attrs(self, *a: Any, **k: Any) -> None:
        pass


def _parse(cfg: dict[str, Any]) -> Any:
    from hpo.config import parse_config
    from hpo.trainer_ref import PYTHON_TRAINER

    return parse_config({**cfg, "trainer": PYTHON_TRAINER})


def _hpo_config(problem: Problem, seed: int, variant: str) -> Any:
    return _parse(_sweep_config(problem, seed, variant))


def _tpe_override(config: Any, variant: str) -> Any:
    """hpo's sampler with one default changed (ablations); None = hpo's own."""
    from hpo import strategy

    if variant == "hpo_indep":
        kw = {"multivariate": False, "group": False}
    elif variant == "hpo_startup20":
        kw = {"n_startup_trials": 20}
    elif variant == "hpo_startup5":
        kw = {"n_startup_trials": 5}
    else:
        return None
    cls, args = strategy._sampler_spec(config)
    if isinstance(args.get("sampler"), tuple):  # hpo.history's bounded wrapper around TPE
        inner_cls, inner_args = args["sampler"]
        return strategy._build((cls, {**args, "sampler": (inner_cls, {**inner_args, **kw})}))
    return strategy._build((cls, {**args, **kw}))


def run_hpo(problem: Problem, seed: int, budget: float, variant: str = "hpo") -> list[Trial]:
    """hpo's study + sampler + pruner + search space + StudyTrialContext, in memory."""
    import optuna

    from hpo.errors import TrialPruned
    from hpo.space import SearchSpace
    from hpo.study import create_or_load
    from hpo.trial import StudyTrialContext

    config = _hpo_config(problem, seed, variant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = create_or_load(config, "bench", optuna.storages.InMemoryStorage())
        sampler = _tpe_override(config, variant)
        if sampler is not None:
            study.sampler = sampler
    space = SearchSpace.from_config(config.parameters)
    spend = _Spend(problem, seed, budget)
    while not spend.done:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = study.ask()
            params = space.suggest(trial)
        ctx = StudyTrialContext(trial, _NullTracking(), params, objective=METRIC,
                                goal="minimize", sweep="bench", device="cpu")
        run = spend.trainer(lambda v, s, ctx=ctx: ctx.report({METRIC: v}, s))
        try:
            value = run(params)
        except TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
    return spend.trials


def run_hpo_sweep(problem: Problem, seed: int, budget: float) -> list[Trial]:
    """hpo's defaults through ``hpo.run_sweep`` (SQLite on /dev/shm when there is one).

    A pruned trial costs less than one evaluation, so a multi-fidelity run resumes the sweep
    until the budget is spent (trials = what is left, rounded up); each resume gets seed
    ``seed + 1000 * round`` so the sampler's random start does not replay the first round's.
    """
    import hpo

    spend = _Spend(problem, seed, budget)

    def objective(params: dict[str, Any], ctx: Any) -> dict[str, float]:
        run = spend.trainer(lambda v, s: ctx.report({METRIC: v}, s))
        return {METRIC: run(params)}

    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="hpo-quality-", dir=base) as tmp:
        os.chdir(tmp)
        try:
            cfg = _sweep_config(problem, seed)
            cfg.update(name="bench", storage=f"sqlite:///{tmp}/bench.db")
            done, rnd = 0, 0
            while not spend.done:
                more = max(1, math.ceil(budget - spend.spent - 1e-9))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    hpo.run_sweep(cfg, objective=objective, trials=done + more,
                                  seed=seed + 1000 * rnd)
                done += more
                rnd += 1
        finally:
            os.chdir(cwd)
    return spend.trials


# -- Optuna ------------------------------------------------------------------------------------
def run_optuna(problem: Problem, seed: int, budget: float, pruner: str) -> list[Trial]:
    import optuna

    from hpo.space import SearchSpace

    cfg = _sweep_config(problem, seed)
    cfg.pop("early_terminate", None)
    space = SearchSpace.from_config(_parse(cfg).parameters)
    if pruner == "random":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.RandomSampler(seed=seed)
        prune: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    else:
        sampler = optuna.samplers.TPESampler(seed=seed)
        prune = (optuna.pruners.HyperbandPruner() if pruner == "hyperband"
                 else optuna.pruners.MedianPruner())
    study = optuna.create_study(sampler=sampler, pruner=prune, direction="minimize")
    spend = _Spend(problem, seed, budget)
    if pruner == "random":  # random search runs every trial to full fidelity
        problem_full = Problem(**{**problem.__dict__, "max_fidelity": 1,
                                  "curve_fn": lambda c, r: problem.curve(c, r)[-1:]})
        spend.problem = problem_full

    def objective(trial: optuna.Trial) -> float:
        params = space.suggest(trial)

        def report(v: float, step: int) -> None:
            trial.report(v, step)
            if trial.should_prune():
                raise optuna.TrialPruned()

        return spend.trainer(report)(params)

    def stop(study: optuna.Study, _: Any) -> None:
        if spend.done:
            study.stop()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(objective, callbacks=[stop], n_trials=100000)
    return spend.trials


# -- Ray Tune ----------------------------------------------------------------------------------
def _ray_space(problem: Problem) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Ray Tune param_space, Optuna distributions) for the problem's flat parameters."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from ray import tune

    from hpo.space import SearchSpace

    cfg = _sweep_config(problem, 0)
    cfg.pop("early_terminate", None)
    dists = SearchSpace.from_config(_parse(cfg).parameters).distributions
    space: dict[str, Any] = {}
    for k, d in dists.items():
        if isinstance(d, CategoricalDistribution):
            space[k] = tune.choice(list(d.choices))
        elif isinstance(d, IntDistribution):
            space[k] = (tune.lograndint(d.low, d.high + 1) if d.log
                        else tune.randint(d.low, d.high + 1))
        else:
            assert isinstance(d, FloatDistribution)
            space[k] = tune.loguniform(d.low, d.high) if d.log else tune.uniform(d.low, d.high)
    return space, dists


def _ray_trainable(config: dict[str, Any], problem: str, seed: int) -> None:
    from ray import tune

    p = get_problem(problem)
    key = zlib.crc32(repr(sorted(config.items())).encode())
    curve = p.curve(config, np.random.default_rng([seed, key]))
    for step in range(1, p.max_fidelity + 1):
        out = {METRIC: curve[step - 1]}
        if step == p.max_fidelity:
            out["true"] = p.true_value(config)
        tune.report(out)


def ray_init(num_cpus: int = 2) -> None:
    """Local Ray for the Tune contenders, once per process (``num_cpus`` only counts on the
    first call)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = f"{REPO}{os.pathsep}{path}" if path else str(REPO)
    ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}})


def run_ray(problem: Problem, seed: int, budget: float, searcher: str) -> list[Trial]:
    import optuna
    from ray import tune
    from ray.tune import Stopper
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    ray_init()
    space, dists = _ray_space(problem)
    max_fid = problem.max_fidelity
    steps_budget = budget * max_fid
    steps: set[tuple[str, int]] = set()
    last: dict[str, tuple[int, int, dict]] = {}  # trial -> (order, iteration, result)

    class Budget(Stopper):
        """Counts steps and keeps each trial's latest result (the record of the run).

        Ray sends a function trainable's last result twice (the second with done=True), so
        steps are distinct (trial, iteration) pairs, not calls."""

        def __call__(self, trial_id: str, result: dict) -> bool:
            it = int(result.get("training_iteration", 0))
            if (trial_id, it) not in steps and METRIC in result:
                steps.add((trial_id, it))
                last[trial_id] = (len(steps), it, result)
            return False

        def stop_all(self) -> bool:
            return len(steps) >= steps_budget

    if searcher == "optuna":
        search: Any = OptunaSearch(space=dists, metric=METRIC, mode="min",
                                   sampler=optuna.samplers.TPESampler(seed=seed))
        param_space: dict[str, Any] = {}
    else:
        search = BasicVariantGenerator(random_state=seed)
        param_space = space
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=max_fid, grace_period=1,
                               reduction_factor=3)
                 if max_fid > 1 else FIFOScheduler())
    with tempfile.TemporaryDirectory(prefix="tune-quality-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tuner = tune.Tuner(
            tune.with_parameters(_ray_trainable, problem=problem.name, seed=seed),
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=METRIC, mode="min", num_samples=int(budget * max_fid) + 10,
                max_concurrent_trials=2, search_alg=search, scheduler=scheduler,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(storage_path=tmp, verbose=0, stop=Budget()),
        )
        tuner.fit()
    record = []
    for _, it, r in sorted(last.values(), key=lambda x: x[0]):  # in the order trials ended
        if it >= max_fid:
            record.append(Trial(1.0, float(r[METRIC]), float(r["true"])))
        else:
            record.append(Trial(it / max_fid))
    return record


# -- dispatch -----------------------------------------------------------------------------------
CONTENDERS: dict[str, Callable[[Problem, int, float], list[Trial]]] = {
    "hpo": lambda p, s, b: run_hpo(p, s, b),
    "hpo_sweep": run_hpo_sweep,
    "optuna_median": lambda p, s, b: run_optuna(p, s, b, "median"),
    "optuna_hyperband": lambda p, s, b: run_optuna(p, s, b, "hyperband"),
    "random": lambda p, s, b: run_optuna(p, s, b, "random"),
    "ray_asha_random": lambda p, s, b: run_ray(p, s, b, "random"),
    "ray_asha_optuna": lambda p, s, b: run_ray(p, s, b, "optuna"),
    "hpo_indep": lambda p, s, b: run_hpo(p, s, b, "hpo_indep"),
    "hpo_startup20": lambda p, s, b: run_hpo(p, s, b, "hpo_startup20"),
    "hpo_startup5": lambda p, s, b: run_hpo(p, s, b, "hpo_startup5"),
    "hpo_asha": lambda p, s, b: run_hpo(p, s, b, "hpo_asha"),
    "hpo_hyperband": lambda p, s, b: run_hpo(p, s, b, "hpo_hyperband"),
    "hpo_asha_eta2": lambda p, s, b: run_hpo(p, s, b, "hpo_asha_eta2"),
    "hpo_asha_minres": lambda p, s, b: run_hpo(p, s, b, "hpo_asha_minres"),
}
MF_ONLY = {"optuna_hyperband", "hpo_asha", "hpo_hyperband", "hpo_asha_eta2",
           "hpo_asha_minres"}


def applies(contender: str, problem: Problem) -> bool:
    """MF_ONLY contenders differ from another one only in pruning: skip them when nothing
    can be pruned."""
    return problem.multi_fidelity or contender not in MF_ONLY


def run_one(contender: str, problem_name: str, seed: int, budget: float | None = None) -> Run:
    _quiet()
    problem = get_problem(problem_name)
    budget = float(budget if budget is not None else problem.budget)
    trials = CONTENDERS[contender](problem, seed, budget)
    return Run(contender, problem_name, seed, budget, trials)
