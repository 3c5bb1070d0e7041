"""At which report steps can a pruner stop a trial? (What lets reports be written in batches.)

A pruner reads other trials' values only when it decides, and Optuna's pruners decide only at
some steps: successive halving at its rung steps (``min_resource * eta**(rate + rung)``),
Hyperband at the rung steps of the trial's bracket, the median/percentile pruner past its
warm-up at the first report of each ``interval_steps``. At every other step their ``prune``
returns False without looking at the study. :func:`can_prune` says that from the trial's own
steps alone, so :class:`hpo.report_buffer.ReportBuffer` writes the reports before a step where
the pruner can decide and keeps the others in memory; the decisions are the same as with every
report written at once (tests/test_prune_steps.py checks that against Optuna's own ``prune``).

``can_prune`` returns True (decide now) for a pruner it does not know, and None for one whose
rungs are not known yet: successive halving with ``min_resource="auto"``, hpo's AshaPruner or
Hyperband with ``max_resource="auto"`` before any trial completed learn their rungs from the
study, so only a read of the study can tell; the buffer asks them at each flush (at least every
second) instead of at every report.

This module reads Optuna pruners' private attributes (``_min_resource``, ``_reduction_factor``,
``_min_early_stopping_rate``, ``_pruners``, ``_n_warmup_steps``, ``_interval_steps``,
``_get_bracket_id``), like hpo.study does for the storage; the tests pin them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import optuna
from optuna.pruners import (
    HyperbandPruner,
    MedianPruner,
    NopPruner,
    PercentilePruner,
    SuccessiveHalvingPruner,
)

from hpo.strategy import AshaPruner, BestSoFarPruner


def can_prune(
    pruner: optuna.pruners.BasePruner,
    study: optuna.Study,
    trial: optuna.trial.FrozenTrial,
    steps: Collection[int],
    system_attrs: Mapping[str, Any],
) -> bool | None:
    """Whether ``pruner.prune(study, trial)`` may answer True once ``trial`` reported ``steps``.

    ``steps``: every step the trial reported its objective at (written or not); the pruner
    judges the largest (Optuna's ``last_step``). ``system_attrs``: the trial's system
    attributes as stored (the rungs it passed). Only ``trial.number`` is read from ``trial``.
    None: the pruner's rungs are not known yet (see the module doc).
    """
    if isinstance(pruner, BestSoFarPruner):  # same steps, other values
        return can_prune(pruner.pruner, study, trial, steps, system_attrs)
    if isinstance(pruner, NopPruner):
        return False
    if not steps:
        return not isinstance(pruner, (AshaPruner, SuccessiveHalvingPruner, HyperbandPruner,
                                       PercentilePruner))
    step = max(steps)
    if isinstance(pruner, AshaPruner):
        return None if pruner._inner is None else _rung_due(pruner._inner, step, system_attrs)
    if isinstance(pruner, SuccessiveHalvingPruner):
        return _rung_due(pruner, step, system_attrs)
    if isinstance(pruner, HyperbandPruner):
        if not pruner._pruners:  # max_resource "auto": rungs unknown until a trial completes
            return None
        bracket = pruner._get_bracket_id(study, trial)
        return _rung_due(pruner._pruners[bracket], step, system_attrs)
    if isinstance(pruner, PercentilePruner):  # MedianPruner is one
        return _interval_due(pruner, step, steps)
    return True


def _rung_due(pruner: SuccessiveHalvingPruner, step: int,
              system_attrs: Mapping[str, Any]) -> bool | None:
    if pruner._min_resource is None:  # "auto": estimated from the study's trials
        return None
    rung = 0
    while f"completed_rung_{rung}" in system_attrs:
        rung += 1
    due = pruner._min_resource * pruner._reduction_factor ** (
        pruner._min_early_stopping_rate + rung)
    return step >= due


def _interval_due(pruner: PercentilePruner | MedianPruner, step: int,
                  steps: Collection[int]) -> bool:
    warmup, interval = pruner._n_warmup_steps, pruner._interval_steps
    if step < warmup:
        return False
    nearest = (step - warmup) // interval * interval + warmup
    previous = max((s for s in steps if s != step), default=-1)
    return previous < nearest


def ladder(pruner: optuna.pruners.BasePruner,
           study: optuna.Study | None = None) -> SuccessiveHalvingPruner | None:
    """The successive-halving ladder behind ``pruner`` (asha, lenient or not), once its rungs
    are known (with ``study``: hpo's AshaPruner learns them from it first); None for other
    pruners or before then."""
    if isinstance(pruner, BestSoFarPruner):
        return ladder(pruner.pruner, study)
    if isinstance(pruner, AshaPruner):
        pruner = pruner._inner if study is None else pruner.learn(study)
    if isinstance(pruner, SuccessiveHalvingPruner) and pruner._min_resource is not None:
        return pruner
    return None
