"""Pause and resume: ASHA's promotion rule over paused trials.

With ``early_terminate: {type: asha, pause: true}`` a trial the successive-halving pruner
would stop at rung ``k`` is *paused* instead (state ``paused``, its checkpoint kept, its slot
freed). Whenever a loop claims a trial (hpo.lifecycle), it first looks for a paused trial to
promote: one whose value at its rung is now among the best ``1/eta`` of all values recorded at
that rung (the pool grows as more trials reach it), highest rung first, best value first. A
promoted trial is resumed as a new trial with the same parameters and ``resume_of`` set; its
context loads the paused trial's checkpoint (``ctx.load_checkpoint()``) and inherits its rung
values, so the pruner judges it next at rung ``k + 1``. Resumed trials do not count toward the
trial budget (they are not new configurations); promotions go on after the budget is spent,
until no paused trial is promotable.

A trainer without checkpoints still works: its resumed trial starts again from step 0.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpo.prune_steps import ladder
from hpo.study import RESUME_OF_ATTR  # user attr of a resumed trial: the number it continues

PAUSED_ATTR = "hpo_paused"  # user attr of a paused trial (Optuna state PRUNED)
RUNGS_ATTR = "hpo_rungs"  # user attr of a resumed trial: {rung: value} it inherited


def rung_values(trial: FrozenTrial) -> dict[int, float]:
    """Rung -> value of ``trial``: those it inherited and those it reached itself."""
    out = {int(k): float(v) for k, v in (trial.user_attrs.get(RUNGS_ATTR) or {}).items()}
    for key, value in trial.system_attrs.items():
        if key.startswith("completed_rung_"):
            out[int(key.removeprefix("completed_rung_"))] = float(value)
    return out


def inherited_attrs(trial: FrozenTrial) -> dict[str, float]:
    """The ``completed_rung_k`` system attributes a resumed trial carries over (for pruners)."""
    return {f"completed_rung_{k}": float(v)
            for k, v in (trial.user_attrs.get(RUNGS_ATTR) or {}).items()}


def _top(value: float, values: list[float], eta: int, maximize: bool) -> bool:
    """In the best ``len(values) // eta`` (at least the best one) of ``values``."""
    ordered = sorted(values, reverse=maximize)
    keep = max(1, len(ordered) // eta)
    cut = ordered[keep - 1]
    return value >= cut if maximize else value <= cut


def next_resume(study: optuna.Study) -> tuple[FrozenTrial, dict[int, float]] | None:
    """The paused trial to resume now and its rung values, or None."""
    sha = ladder(study.pruner, study)
    if sha is None:
        return None
    trials = study.get_trials(deepcopy=False)
    resumed = {t.user_attrs.get(RESUME_OF_ATTR) for t in trials}
    at_rung: dict[int, list[float]] = {}
    rungs: dict[int, dict[int, float]] = {}
    for t in trials:
        # a resumed trial's inherited rungs are its parent's values: counted once, there
        own = {int(k.removeprefix("completed_rung_")): float(v)
               for k, v in t.system_attrs.items() if k.startswith("completed_rung_")}
        for k, v in own.items():
            at_rung.setdefault(k, []).append(v)
        rungs[t.number] = {**rung_values(t), **own}
    maximize = study.direction == StudyDirection.MAXIMIZE
    best: tuple[Any, ...] | None = None
    for t in trials:
        if (t.state != TrialState.PRUNED or not t.user_attrs.get(PAUSED_ATTR)
                or t.number in resumed or not rungs[t.number]):
            continue
        k = max(rungs[t.number])
        value = rungs[t.number][k]
        if not _top(value, at_rung.get(k, [value]), sha._reduction_factor, maximize):
            continue
        key = (k, value if maximize else -value)
        if best is None or key > best[0]:
            best = (key, t)
    if best is None:
        return None
    return best[1], rungs[best[1].number]

