"""``method: bohb``: TPE fit on the trials' values at one budget (report step), chosen as BOHB does.

The values trials reported at their steps (``trial.intermediate_values``; pruned and running
trials included) are observations of the objective at lower fidelities. Each ask:

1. Budgets: the pruner's rung steps when the study prunes with successive halving or
   Hyperband (``first_rung * eta**k``), else every step trials reported; plus the last step
   of each complete trial (its full budget).
2. Observations at a budget ``b``: a complete trial counts at its last step with its
   objective value, and at each lower budget it reported with the value reported there; a
   pruned or running trial counts at each budget it reported. NaN values do not count, nor
   failed trials, nor complete trials that never reported.
3. BOHB's rule (Falkner et al. 2018): model the largest budget with at least
   ``N_min + 2`` observations, ``N_min = d + 1`` for ``d`` searched parameters.
4. Fit hpo's TPE (multivariate, group, constant liar) on a view of the study in which each
   trial observed at ``b`` is COMPLETE with its value at ``b``; each other complete or pruned
   trial that reported below ``b`` is PRUNED with those values (TPE ranks it after every trial
   observed at ``b``: it stopped earlier, so it lost at a lower rung); unfinished trials stay
   RUNNING (constant liar: parallel workers do not pile onto one point). BOHB leaves trials
   that stopped below ``b`` out of the model; kept as pruned they still tell TPE where not to
   look. The view is bounded as hpo's ``tpe`` bounds its history (hpo.history).

A running trial that already reported at ``b`` counts as an observation there, not as a
lie: BOHB models a configuration's result at a budget as soon as that budget is done.

Until ``n_startup_trials`` trials are complete or pruned, or while no budget has enough
observations (or the study has several objectives), it is hpo's ``tpe``: the ``fallback``
sampler, random for the first 10 trials.

Optuna internals: :func:`rung_ladder` reads the pruners' private ``_min_resource``,
``_reduction_factor`` and ``_min_early_stopping_rate`` (and hpo's ``AshaPruner._inner``);
nowhere else here reads them. As in hpo.history (whose study view and ``bounded`` this
reuses), trial lists come from ``Study._get_trials`` and values and ids are read from
``FrozenTrial._values`` and ``_trial_id``.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.pruners import BasePruner, HyperbandPruner, SuccessiveHalvingPruner
from optuna.samplers import BaseSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpo.history import KEEP_BEST, MAX_TRIALS, _StudyView, bounded

Ladder = tuple[int, int]  # (first rung step, reduction factor): rungs first * factor**k


def rung_ladder(pruner: BasePruner | None) -> Ladder | None:
    """The rungs of a successive-halving or Hyperband pruner as ``(first, factor)``.

    Unwraps hpo's ``BestSoFarPruner`` and ``AshaPruner``. None for any other pruner, and
    while the rungs are not known yet (``min_resource="auto"``, AshaPruner before a trial
    completed). Hyperband's brackets start at ``min_resource * eta**bracket``, so the union of
    their rungs is ``min_resource * eta**k``.
    """
    from hpo.strategy import AshaPruner, BestSoFarPruner  # hpo.strategy imports this module

    while isinstance(pruner, (BestSoFarPruner, AshaPruner)):
        pruner = pruner.pruner if isinstance(pruner, BestSoFarPruner) else pruner._inner
    if isinstance(pruner, HyperbandPruner):
        return int(pruner._min_resource), int(pruner._reduction_factor)
    if isinstance(pruner, SuccessiveHalvingPruner) and pruner._min_resource is not None:
        factor = int(pruner._reduction_factor)
        first = int(pruner._min_resource) * factor ** int(pruner._min_early_stopping_rate)
        return first, factor
    return None


def rungs(ladder: Ladder, last: int) -> list[int]:
    """The ladder's rung steps up to ``last``."""
    first, factor = ladder
    out, step = [], max(1, first)
    while step <= last:
        out.append(step)
        step *= max(2, factor)
    return out


def observations(trial: FrozenTrial, ladder: Ladder | None) -> dict[int, float]:
    """``trial``'s observations, budget -> value (see the module doc, step 2).

    With a ladder, only rung steps (and a complete trial's last step) are budgets; without
    one, every step the trial reported.
    """
    reported = trial.intermediate_values
    if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
        return {}
    if not reported:
        return {}
    last = max(reported)
    steps: Iterable[int] = reported if ladder is None else rungs(ladder, last)
    out = {s: reported[s] for s in steps if s in reported and not math.isnan(reported[s])}
    if trial.state == TrialState.COMPLETE:
        out.pop(last, None)
        value = trial._values[0] if trial._values else math.nan
        if not math.isnan(value):
            out[last] = value
    return out


def choose_budget(counts: Mapping[int, int], n_dims: int) -> int | None:
    """BOHB's rule: the largest budget with at least ``n_dims + 3`` observations
    (``N_min + 2``, ``N_min = n_dims + 1``); None when no budget has that many."""
    enough = [b for b, n in counts.items() if n >= n_dims + 3]
    return max(enough) if enough else None


def at_budget(trial: FrozenTrial, value: float) -> FrozenTrial:
    """A shallow copy of ``trial``, COMPLETE with ``value``."""
    view = copy.copy(trial)
    view.state = TrialState.COMPLETE
    view._values = [value]
    return view


def below_budget(trial: FrozenTrial, budget: int) -> FrozenTrial:
    """A shallow copy of ``trial``, PRUNED with only its values reported below ``budget``."""
    view = copy.copy(trial)
    view.state = TrialState.PRUNED
    view._values = None
    view.intermediate_values = {s: v for s, v in trial.intermediate_values.items() if s < budget}
    return view


class _Finished:
    """What the finished trials of a study contribute, computed once per trial."""

    def __init__(self, ladder: Ladder | None) -> None:
        self.ladder = ladder
        self.obs: dict[int, dict[int, float]] = {}  # trial id -> observations
        self.copies: dict[tuple[int, int], FrozenTrial | None] = {}  # (trial id, budget) -> view
        self.counts: Counter[int] = Counter()
        self.names: set[str] = set()  # searched parameters (not single-valued)
        self.n_done = 0  # complete + pruned


class BohbSampler(BaseSampler):
    """TPE on the trials' values at the budget BOHB's rule picks (see the module doc).

    ``fallback``: hpo's ``tpe`` (used before there is a budget to model). ``model``: a
    TPESampler with the same options and ``n_startup_trials=0`` (this sampler gates the
    start). The view of the study ``model`` sees is built once per asked trial; the
    observations of finished trials are computed once.
    """

    def __init__(
        self, fallback: BaseSampler, model: BaseSampler, n_startup_trials: int = 10,
        max_trials: int = MAX_TRIALS, keep_best: int = KEEP_BEST,
    ) -> None:
        self.fallback = fallback
        self.model = model
        self.n_startup_trials = n_startup_trials
        self.max_trials = max_trials
        self.keep_best = keep_best
        self.last_budget: int | None = None  # the budget of the latest ask (None: fallback)
        self._memo: tuple[Any, BaseSampler, Any] | None = None
        self._done: _Finished | None = None
        self._study_key: Any = None

    def plan(self, study: optuna.Study) -> tuple[int | None, list[FrozenTrial]]:
        """The budget the next ask models from and the trials the model sees there
        (None and []: it asks the fallback sampler)."""
        return self._plan(study, study._get_trials(deepcopy=False, use_cache=False))

    def _finished(self, study: optuna.Study, every: list[FrozenTrial]) -> _Finished:
        ladder = rung_ladder(study.pruner)
        key = (study._study_id, study.study_name)
        done = self._done
        if done is None or done.ladder != ladder or self._study_key != key:
            done = self._done = _Finished(ladder)
            self._study_key = key
        finished = [t for t in every if t.state.is_finished()]
        if sum(t._trial_id in done.obs for t in finished) != len(done.obs):
            done = self._done = _Finished(ladder)  # trials went away: a replayed replica
        for t in finished:
            if t._trial_id in done.obs:
                continue
            obs = observations(t, ladder)
            done.obs[t._trial_id] = obs
            done.counts.update(obs.keys())
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
                done.n_done += 1
                done.names.update(n for n, d in t.distributions.items() if not d.single())
        return done

    def _plan(
        self, study: optuna.Study, every: list[FrozenTrial]
    ) -> tuple[int | None, list[FrozenTrial]]:
        done = self._finished(study, every)
        if done.n_done < self.n_startup_trials or len(study.directions) > 1:
            return None, []
        counts = Counter(done.counts)
        running: dict[int, dict[int, float]] = {}
        for t in every:
            if t.state == TrialState.RUNNING and t.intermediate_values:
                running[t._trial_id] = obs = observations(t, done.ladder)
                counts.update(obs.keys())
        budget = choose_budget(counts, len(done.names))
        if budget is None:
            return None, []
        view = []
        for t in every:
            tid = t._trial_id
            obs = done.obs.get(tid)
            if obs is not None:  # finished
                if (tid, budget) not in done.copies:
                    if budget in obs:
                        done.copies[tid, budget] = at_budget(t, obs[budget])
                    elif t.state in (TrialState.COMPLETE, TrialState.PRUNED) and any(
                            s < budget for s in t.intermediate_values):
                        done.copies[tid, budget] = below_budget(t, budget)
                    else:
                        done.copies[tid, budget] = None
                if done.copies[tid, budget] is not None:
                    view.append(done.copies[tid, budget])
            elif t.state == TrialState.RUNNING:
                obs = running.get(tid, {})
                view.append(at_budget(t, obs[budget]) if budget in obs else t)
        maximize = study.directions[0] == StudyDirection.MAXIMIZE
        return budget, bounded(view, self.max_trials, self.keep_best, maximize)

    def _delegate(self, study: optuna.Study, trial: FrozenTrial) -> tuple[BaseSampler, Any]:
        key = (study.study_name, id(study), trial.number)
        if self._memo is None or self._memo[0] != key:
            every = study._get_trials(deepcopy=False, states=None, use_cache=False)
            budget, view = self._plan(study, every)
            self.last_budget = budget
            if budget is None:
                self._memo = (key, self.fallback, study)
            else:
                self._memo = (key, self.model, _StudyView(study, view))
        return self._memo[1], self._memo[2]

    def reset(self) -> None:
        """Forget what was memoized (the study's replica was replayed again)."""
        self._memo = None
        self._done = None
        reset = getattr(self.fallback, "reset", None)
        if callable(reset):
            reset()

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.fallback.before_trial(study, trial)
        self.model.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        sampler, view = self._delegate(study, trial)
        return sampler.infer_relative_search_space(view, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        sampler, view = self._delegate(study, trial)
        return sampler.sample_relative(view, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        sampler, view = self._delegate(study, trial)
        return sampler.sample_independent(view, trial, param_name, param_distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.fallback.after_trial(study, trial, state, values)
        self.model.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.fallback.reseed_rng()
        self.model.reseed_rng()

    def __repr__(self) -> str:
        return f"BohbSampler({self.fallback!r}, model={self.model!r})"


__all__ = ["BohbSampler", "at_budget", "below_budget", "choose_budget", "observations",
           "rung_ladder", "rungs"]
