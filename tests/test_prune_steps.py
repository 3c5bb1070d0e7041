"""hpo.prune_steps: skipping the pruner where it cannot decide gives the same decisions.

For every pruner hpo builds, two identical studies run the same trials: one asks the pruner
after every report (the unbatched behaviour), the other only where ``can_prune`` says it may
decide (False: the answer is "go on" without asking). The decisions, the step each trial
stops at and the rung attributes the pruner writes must be identical.
"""

from __future__ import annotations

import warnings

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.pruners import HyperbandPruner, MedianPruner, SuccessiveHalvingPruner

from hpo.prune_steps import can_prune
from hpo.strategy import AshaPruner, BestSoFarPruner

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _pruners(kind: str, a: int, b: int, c: int):
    """A fresh pruner of ``kind`` (two calls give two equal pruners)."""
    if kind == "sha":
        return SuccessiveHalvingPruner(min_resource=a, reduction_factor=b + 1,
                                       min_early_stopping_rate=c % 2)
    if kind == "hyperband":
        return HyperbandPruner(min_resource=a, max_resource=a * (b + 1) ** 3,
                               reduction_factor=b + 1)
    if kind == "hyperband_auto":
        return HyperbandPruner(min_resource=1, reduction_factor=b + 1)
    if kind == "median":
        return MedianPruner(n_startup_trials=c, n_warmup_steps=a - 1, interval_steps=b)
    if kind == "asha":
        return AshaPruner(reduction_factor=b + 1)
    if kind == "asha_max":
        return AshaPruner(reduction_factor=b + 1, max_resource=a * 9)
    assert kind == "lenient_sha"
    return BestSoFarPruner(SuccessiveHalvingPruner(min_resource=a, reduction_factor=b + 1))


def _run(pruner, curves, steps, gated: bool):
    """Run every curve as a trial, asking the pruner at every step or only when gated."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(pruner=pruner, study_name="s")
    out = []
    for curve in curves:
        trial = study.ask()
        seen: set[int] = set()
        stopped = None
        for step in steps:
            trial.report(curve[step % len(curve)], step)
            seen.add(step)
            frozen = study._storage.get_trial(trial._trial_id)
            if gated:
                due = can_prune(pruner, study, frozen, seen, frozen.system_attrs)
                if due is False:
                    continue
            if pruner.prune(study, study._storage.get_trial(trial._trial_id)):
                stopped = step
                break
        if stopped is None:
            study.tell(trial, curve[-1])
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        attrs = {k: v for k, v in study._storage.get_trial(trial._trial_id).system_attrs.items()
                 if k.startswith("completed_rung")}
        out.append((stopped, attrs))
    return out


KINDS = ["sha", "hyperband", "median", "asha_max", "lenient_sha"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(KINDS),
    a=st.integers(1, 4), b=st.integers(1, 3), c=st.integers(0, 3),
    curves=st.lists(st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=8),
                    min_size=2, max_size=10),
    steps=st.one_of(
        st.integers(3, 40).map(lambda n: list(range(1, n + 1))),      # 1..n
        st.integers(3, 40).map(lambda n: list(range(0, n, 3))),       # sparse reports
        st.lists(st.integers(0, 40), min_size=1, max_size=25),        # any order, repeats
    ),
)
def test_gated_decisions_equal_decisions_at_every_step(kind, a, b, c, curves, steps):
    every = _run(_pruners(kind, a, b, c), curves, steps, gated=False)
    gated = _run(_pruners(kind, a, b, c), curves, steps, gated=True)
    assert gated == every


@pytest.mark.parametrize("kind", ["asha", "hyperband_auto"])
def test_pruners_learning_their_rungs_are_asked_at_flushes(kind):
    """Before a trial completed, hpo's AshaPruner and Hyperband("auto") cannot say their
    rungs: None (ask at the next flush), never False; known afterwards."""
    pruner = _pruners(kind, 1, 2, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(pruner=pruner)
    first = study.ask()
    first.report(1.0, 1)
    frozen = study._storage.get_trial(first._trial_id)
    assert can_prune(pruner, study, frozen, {1}, {}) is None
    for step in range(2, 28):
        first.report(1.0, step)
    study.tell(first, 1.0)
    second = study.ask()
    second.report(2.0, 1)
    pruner.prune(study, study._storage.get_trial(second._trial_id))  # learns max_resource 27
    frozen = study._storage.get_trial(second._trial_id)
    assert can_prune(pruner, study, frozen, {1}, frozen.system_attrs) in (True, False)


def test_sha_rungs_are_the_only_decision_steps():
    pruner = SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    study = optuna.create_study(pruner=pruner)
    trial = study.ask()
    frozen = study._storage.get_trial(trial._trial_id)
    due = []
    attrs: dict[str, float] = {}
    for step in range(1, 28):
        if can_prune(pruner, study, frozen, set(range(1, step + 1)), attrs):
            due.append(step)
            attrs[f"completed_rung_{len(attrs)}"] = 0.0  # what prune writes when it passes
    assert due == [1, 3, 9, 27]


def test_unknown_pruners_decide_at_every_report():
    class Mine(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return False

    study = optuna.create_study(pruner=Mine())
    trial = study.ask()
    frozen = study._storage.get_trial(trial._trial_id)
    assert all(can_prune(study.pruner, study, frozen, {s}, {}) is True for s in range(5))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pattern", ["dense", "sparse", "shuffled"])
@pytest.mark.parametrize("seed", range(3))
def test_gated_decisions_on_longer_sweeps(kind, pattern, seed):
    """Bigger cases than hypothesis tends to draw: 12 trials x up to 30 reports."""
    import random

    rng = random.Random(seed)
    curves = [[rng.uniform(-10, 10) for _ in range(rng.randint(3, 9))] for _ in range(12)]
    steps = {"dense": list(range(1, 31)), "sparse": list(range(0, 30, 4)),
             "shuffled": rng.sample(range(30), 20)}[pattern]
    a, b, c = rng.randint(1, 3), rng.randint(1, 3), rng.randint(0, 3)
    every = _run(_pruners(kind, a, b, c), curves, steps, gated=False)
    assert any(stopped is not None for stopped, _ in every) or kind == "asha_max"
    assert _run(_pruners(kind, a, b, c), curves, steps, gated=True) == every
