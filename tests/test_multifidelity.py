"""hpo.multifidelity (``method: bohb``): BOHB's budget rule, TPE on the values at that budget."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.pruners import BasePruner, HyperbandPruner, NopPruner
from optuna.samplers import RandomSampler
from optuna.trial import TrialState, create_trial

import hpo
from hpo import study as studies
from hpo.config import SweepConfig, parse_config
from hpo.errors import ConfigError
from hpo.multifidelity import BohbSampler, choose_budget, observations, rung_ladder, rungs
from hpo.strategy import describe, make_pruner, make_sampler

optuna.logging.set_verbosity(optuna.logging.ERROR)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

HYPERBAND = {"type": "hyperband", "min_iter": 1, "max_iter": 9}
OPT = np.array([0.7, 0.2, 0.6, 0.4])
DISTS = {f"x{i}": FloatDistribution(0.0, 1.0) for i in range(4)}


def config(method: str = "bohb", seed: int | None = 0,
           early_terminate: dict[str, Any] | None = HYPERBAND,
           parameters: dict[str, Any] | None = None) -> SweepConfig:
    data: dict[str, Any] = {
        "program": "t.py", "method": method, "seed": seed, "metric": {"name": "loss"},
        "parameters": parameters or {f"x{i}": {"min": 0.0, "max": 1.0} for i in range(4)}}
    if early_terminate is not None:
        data["early_terminate"] = early_terminate
    return parse_config(data)


def make_study(cfg: SweepConfig, sampler: optuna.samplers.BaseSampler | None = None
               ) -> optuna.Study:
    # a fixed name: Hyperband assigns brackets by hashing the study name
    return optuna.create_study(study_name="toy", sampler=sampler or make_sampler(cfg),
                               pruner=make_pruner(cfg))


# --- the rule -----------------------------------------------------------------------------
def test_choose_budget_is_the_largest_with_n_min_plus_2() -> None:
    assert choose_budget({1: 30, 3: 12, 9: 4}, 4) == 3  # N_min + 2 = 4 + 1 + 2 = 7
    assert choose_budget({1: 30, 3: 7, 9: 6}, 4) == 3
    assert choose_budget({1: 30, 3: 12, 9: 7}, 4) == 9
    assert choose_budget({1: 6, 3: 2}, 4) is None
    assert choose_budget({}, 1) is None


def fake(study: optuna.Study, number: int, last: int, state: TrialState,
         nan_at: int | None = None) -> None:
    """A trial that reported steps 1..last: value at step s = (distance to OPT) + 1/s."""
    rng = np.random.default_rng(number)
    params = {f"x{i}": float(rng.random()) for i in range(4)}
    base = float(np.linalg.norm(np.array(list(params.values())) - OPT))
    iv = {s: base + 1 / s for s in range(1, last + 1)}
    if nan_at is not None:
        iv[nan_at] = math.nan
    value = base - 0.5 if state == TrialState.COMPLETE else None
    study.add_trial(create_trial(state=state, value=value, params=params, distributions=DISTS,
                                 intermediate_values=iv))


def rung_study(pruner: BasePruner, n_complete: int = 4) -> optuna.Study:
    study = optuna.create_study(study_name="rungs", sampler=make_sampler(config()),
                                pruner=pruner)
    for k in range(18):
        fake(study, k, 1, TrialState.PRUNED)  # lost at rung 1
    for k in range(18, 26):
        fake(study, k, 5, TrialState.PRUNED)  # passed rung 3
    for k in range(26, 26 + n_complete):
        fake(study, k, 9, TrialState.COMPLETE)
    return study


def test_fake_rungs_30_12_4_in_4_dims_pick_the_middle_rung() -> None:
    study = rung_study(HyperbandPruner(min_resource=1, max_resource=9, reduction_factor=3))
    sampler = study.sampler
    assert isinstance(sampler, BohbSampler)
    budget, view = sampler.plan(study)
    assert budget == 3  # rungs 1, 3, 9 have 30, 12, 4 observations; 4 dims need 7
    trials = {t.number: t for t in study.trials}
    observed = [t for t in view if t.state == TrialState.COMPLETE]
    assert sorted(t.number for t in observed) == list(range(18, 30))
    assert all(t.value == trials[t.number].intermediate_values[3] for t in observed)
    lower = [t for t in view if t.state == TrialState.PRUNED]  # lost below the budget
    assert sorted(t.number for t in lower) == list(range(18))
    assert study.trials[0].state == TrialState.PRUNED and study.trials[26].value is not None

    # without a successive-halving pruner every reported step is a budget: steps 4 and 5
    # have 12 observations too
    plain = rung_study(NopPruner())
    assert plain.sampler.plan(plain)[0] == 5

    # 7 complete trials: the full budget, at their objective values (not the step-9 report)
    study = rung_study(HyperbandPruner(min_resource=1, max_resource=9), n_complete=7)
    budget, view = study.sampler.plan(study)
    assert budget == 9
    complete = {t.number: t.value for t in study.trials if t.state == TrialState.COMPLETE}
    assert {t.number: t.value for t in view if t.state == TrialState.COMPLETE} == complete


@pytest.mark.parametrize(("method", "near"), [("bohb", 0.9), ("tpe", 0.1)])
def test_the_model_is_fit_at_the_chosen_budget(method: str, near: float) -> None:
    """At rung 3 the best trials are near x = 0.9, at their last step (5) near 0.1: bohb
    models rung 3 (12 observations), hpo's tpe ranks pruned trials at their last step."""
    cfg = config(method, parameters={"x": {"min": 0.0, "max": 1.0}})
    study = optuna.create_study(study_name="budget", sampler=make_sampler(cfg),
                                pruner=HyperbandPruner(min_resource=1, max_resource=9))
    dist = {"x": FloatDistribution(0.0, 1.0)}
    rng = np.random.default_rng(0)
    for k in range(32):
        x = float(rng.random())
        iv = {1: 1.0} if k < 20 else {1: 1.0, 2: 1.0, 3: (x - 0.9) ** 2, 4: 1.0,
                                       5: (x - 0.1) ** 2}
        study.add_trial(create_trial(state=TrialState.PRUNED, params={"x": x},
                                     distributions=dist, intermediate_values=iv))
    xs = []
    for _ in range(10):
        trial = study.ask(dist)
        xs.append(trial.params["x"])
        study.tell(trial, state=TrialState.FAIL)  # failed trials are not observations
    assert abs(float(np.median(xs)) - near) < 0.25


def test_fallback_before_enough_trials_and_observations() -> None:
    study = optuna.create_study(sampler=make_sampler(config()),
                                pruner=HyperbandPruner(min_resource=1, max_resource=9))
    for k in range(9):
        fake(study, k, 9, TrialState.COMPLETE)
    assert study.sampler.plan(study) == (None, [])  # 9 < n_startup_trials = 10
    fake(study, 9, 9, TrialState.COMPLETE)
    assert study.sampler.plan(study)[0] == 9
    few = optuna.create_study(sampler=make_sampler(config()),
                              pruner=HyperbandPruner(min_resource=1, max_resource=9))
    for k in range(12):
        fake(few, k, 1 + k % 2, TrialState.PRUNED)  # 12 at step 1 only: rung 3 empty
    assert few.sampler.plan(few)[0] == 1


@pytest.mark.parametrize(
    ("early_terminate", "ladder"),
    [
        (HYPERBAND, (1, 3)),
        ({"type": "hyperband", "min_iter": 2, "max_iter": 16, "eta": 2}, (2, 2)),
        ({"type": "asha", "min_iter": 1}, (1, 3)),
        ({"type": "asha", "min_iter": 1, "min_early_stopping_rate": 1}, (3, 3)),
        ({"type": "asha", "min_iter": 2, "strict": False}, (2, 3)),  # BestSoFarPruner
        ({"type": "asha", "max_iter": 27}, (3, 3)),  # AshaPruner: two rungs below 27
        ({"type": "asha"}, None),  # AshaPruner before a trial completed
        ({"type": "median"}, None),
        (None, None),
    ],
)
def test_rung_ladder_of_each_pruner(early_terminate: dict[str, Any] | None,
                                    ladder: tuple[int, int] | None) -> None:
    assert rung_ladder(make_pruner(config(early_terminate=early_terminate))) == ladder


def test_observations_of_one_trial() -> None:
    iv = {s: 10.0 - s for s in range(1, 11)}
    iv[3] = math.nan
    done = create_trial(state=TrialState.COMPLETE, value=0.25, params={"x0": 0.5},
                        distributions={"x0": DISTS["x0"]}, intermediate_values=iv)
    assert rungs((1, 3), 30) == [1, 3, 9, 27]
    assert observations(done, (1, 3)) == {1: 9.0, 9: 1.0, 10: 0.25}  # NaN at 3 left out
    assert observations(done, None) == {**{s: 10.0 - s for s in range(1, 10) if s != 3},
                                        10: 0.25}
    failed = create_trial(state=TrialState.FAIL, params={}, distributions={},
                          intermediate_values={1: 1.0})
    assert observations(failed, None) == {}


def test_registered_as_method_bohb() -> None:
    cfg = config(seed=3)
    assert isinstance(make_sampler(cfg), BohbSampler)
    assert describe(cfg)["sampler"] == (
        "BohbSampler(fallback=BoundedHistorySampler(sampler=TPESampler(multivariate=True, "
        "group=True, constant_liar=True, n_startup_trials=10, seed=3)), model=TPESampler("
        "multivariate=True, group=True, constant_liar=True, n_startup_trials=0, seed=4), "
        "n_startup_trials=10)")
    with pytest.raises(ConfigError, match="'qmc' or 'bohb', found 'bohbb'"):
        config(method="bohbb")


# --- search -------------------------------------------------------------------------------
def toy(trial: optuna.Trial) -> float:
    """Distance to OPT, blurred at low steps by a term that fades by step 9."""
    x = np.array([trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(4)])
    value = math.inf
    for step in range(1, 10):
        value = float(np.sum((x - OPT) ** 2) + (9 - step) / 9 * 0.1 * math.sin(5 * x.sum()))
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return value


def spread(study: optuna.Study, start: int) -> float:
    return float(np.median([np.linalg.norm([t.params[f"x{i}"] for i in range(4)] - OPT)
                            for t in study.trials[start:]]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_concentrates_near_the_optimum_unlike_random(seed: int) -> None:
    cfg = config(seed=seed)
    bohb = make_study(cfg)
    bohb.optimize(toy, n_trials=60)
    random = make_study(cfg, RandomSampler(seed=seed))
    random.optimize(toy, n_trials=60)
    assert bohb.sampler.last_budget in (1, 3, 9)  # the model was used
    assert spread(bohb, 30) < 0.6 * spread(random, 30)
    assert bohb.best_value < random.best_value


def test_parallel_asks_see_each_other_as_running() -> None:
    grid = {"a": {"min": 0, "max": 7}, "b": {"min": 0, "max": 7}}  # 64 points

    def objective(trial: optuna.Trial) -> float:
        a, b = trial.suggest_int("a", 0, 7), trial.suggest_int("b", 0, 7)
        value = math.inf
        for step in range(1, 10):
            value = (a - 2) ** 2 + (b - 2) ** 2 + 3 / step
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    for seed in range(3):
        study = make_study(config(seed=seed, parameters=grid))
        study.optimize(objective, n_trials=40)
        asked: list[optuna.Trial] = []
        for _ in range(8):  # 8 workers ask before any of them reports
            budget, view = study.sampler.plan(study)
            assert budget is not None
            running = {t.number for t in view if t.state == TrialState.RUNNING}
            assert running == {t.number for t in asked}
            asked.append(study.ask({"a": optuna.distributions.IntDistribution(0, 7),
                                    "b": optuna.distributions.IntDistribution(0, 7)}))
        points = {(t.params["a"], t.params["b"]) for t in asked}
        assert len(points) >= 7  # TPE without the liar repeats points here (3 to 6 distinct)


def test_a_running_trial_past_the_budget_counts_there() -> None:
    study = rung_study(HyperbandPruner(min_resource=1, max_resource=9))
    trial = study.ask(DISTS)
    trial.report(0.125, 1)
    trial.report(0.5, 3)
    budget, view = study.sampler.plan(study)
    assert budget == 3
    (seen,) = [t for t in view if t.number == trial.number]
    assert seen.state == TrialState.COMPLETE and seen.value == 0.5


def test_deterministic_given_the_seed_and_tpe_until_the_model_starts() -> None:
    def run(method: str, seed: int) -> list[dict[str, Any]]:
        study = make_study(config(method, seed=seed))
        study.optimize(toy, n_trials=30)
        return [t.params for t in study.trials]

    first = run("bohb", 5)
    assert run("bohb", 5) == first
    assert run("bohb", 6) != first
    assert run("tpe", 5)[:10] == first[:10]  # random start, as hpo's tpe


def test_history_is_bounded() -> None:
    fallback, model = make_sampler(config()).fallback, make_sampler(config()).model
    sampler = BohbSampler(fallback, model, max_trials=60, keep_best=10)
    study = optuna.create_study(sampler=sampler,
                                pruner=HyperbandPruner(min_resource=1, max_resource=9))
    for k in range(300):
        fake(study, k, (1, 3, 9)[k % 3], TrialState.COMPLETE if k % 3 == 2 else TrialState.PRUNED)
    running = study.ask(DISTS)
    budget, view = sampler.plan(study)
    assert budget == 9 and len(view) == 60
    assert running.number in {t.number for t in view if t.state == TrialState.RUNNING}
    best = sorted((t for t in study.trials if t.state == TrialState.COMPLETE),
                  key=lambda t: t.value)[:10]
    assert {t.number for t in best} <= {t.number for t in view}
    study.tell(running, 1.0)
    sampler.reset()  # a replayed replica: computed again, same answer
    assert sampler.plan(study)[0] == 9


# --- end to end ---------------------------------------------------------------------------
def test_run_sweep_with_bohb_and_hyperband_on_sqlite(sqlite_url: str) -> None:
    def train(params: dict[str, Any], ctx: Any) -> dict[str, float]:
        loss = math.inf
        for step in range(1, 10):
            loss = (params["x"] - 0.3) ** 2 + (params["y"] + 0.5) ** 2 + 1 / step
            ctx.report({"loss": loss}, step=step)
        return {"loss": loss}

    cfg = {"name": "bohb", "method": "bohb", "metric": {"name": "loss", "goal": "minimize"},
           "parameters": {"x": {"min": -1.0, "max": 1.0}, "y": {"min": -1.0, "max": 1.0}},
           "early_terminate": {"type": "hyperband", "min_iter": 1, "max_iter": 9},
           "storage": sqlite_url, "seed": 2, "budget": {"trials": 24}}
    result = hpo.run_sweep(cfg, objective=train)
    assert result.counts["complete"] + result.counts["pruned"] == 24
    assert result.counts["pruned"] > 0 and result.counts["failed"] == 0
    assert result.best_value is not None and result.best_value < 1 / 9 + 0.5
    study = studies.load("bohb", sqlite_url)
    assert isinstance(study.sampler, BohbSampler)
    budget, view = study.sampler.plan(study)
    assert budget in (1, 3, 9) and len(view) >= 5  # the next ask models a rung
