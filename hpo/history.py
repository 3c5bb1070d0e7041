"""Bound the trial history a sampler reads, so asking stays fast in studies of 10,000+ trials.

Optuna's TPE reads every trial on every ask: about 30 ms at 1,000 trials and 300 ms at 10,000
on a 2-core machine, all of it in the sampler (the journal storage hands the trials over from
memory). :class:`BoundedHistorySampler` gives the wrapped sampler a view of the study that
holds, once the study is larger than ``max_trials``:

- the ``keep_best`` best complete trials (TPE's "good" group is at most 25 trials, so with
  the default 50 it is exactly what it would be with the whole history);
- every trial that is not finished (constant liar: running trials stay visible);
- an evenly spaced subset of the rest (every k-th trial, in trial order), up to
  ``max_trials`` in all: a thinned sample of the same "bad" distribution, with TPE's own
  age weighting kept on it.

Below ``max_trials`` the sampler sees the study unchanged, so sweeps of up to 1,000 trials
(every search-quality benchmark in benchmarks/quality) behave exactly as plain Optuna TPE.
"""

from __future__ import annotations

import heapq
from collections.abc import Container, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

MAX_TRIALS = 1000
KEEP_BEST = 50


def bounded(
    trials: Sequence[FrozenTrial], max_trials: int, keep_best: int, maximize: bool
) -> list[FrozenTrial]:
    """The trials a bounded sampler sees (all of them when there are at most ``max_trials``)."""
    if len(trials) <= max_trials:
        return list(trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    sign = -1.0 if maximize else 1.0
    best = heapq.nsmallest(keep_best, complete, key=lambda t: sign * t.value)
    keep = {t.number for t in best}
    keep.update(t.number for t in trials if not t.state.is_finished())
    rest = [t for t in trials if t.number not in keep]
    room = max(0, max_trials - len(keep))
    if len(rest) <= room:
        keep.update(t.number for t in rest)
    elif room:
        stride = len(rest) / room
        picked = {rest[min(len(rest) - 1, int(len(rest) - 1 - i * stride))].number
                  for i in range(min(room, len(rest)))}  # always includes the newest
        keep.update(picked)
    return [t for t in trials if t.number in keep]


class _StudyView:
    """A study whose trial lists are bounded; everything else is the real study."""

    def __init__(self, study: optuna.Study, max_trials: int, keep_best: int) -> None:
        self._study = study
        self._max, self._best = max_trials, keep_best

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _bound(self, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        maximize = self._study.directions[0] == StudyDirection.MAXIMIZE
        return bounded(trials, self._max, self._best, maximize)

    def _get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        return self._bound(self._study._get_trials(deepcopy, states, use_cache=use_cache))

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        return self._bound(self._study.get_trials(deepcopy=deepcopy, states=states))

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


class BoundedHistorySampler(BaseSampler):
    """``sampler`` on a bounded view of the study (see the module docstring)."""

    def __init__(
        self, sampler: BaseSampler, max_trials: int = MAX_TRIALS, keep_best: int = KEEP_BEST
    ) -> None:
        self.sampler = sampler
        self.max_trials = max_trials
        self.keep_best = keep_best

    def _view(self, study: optuna.Study) -> Any:
        return _StudyView(study, self.max_trials, self.keep_best)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.sampler.infer_relative_search_space(self._view(study), trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.sampler.sample_relative(self._view(study), trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self.sampler.sample_independent(
            self._view(study), trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.sampler.before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()

    def __repr__(self) -> str:
        return f"BoundedHistorySampler({self.sampler!r}, max_trials={self.max_trials})"


__all__ = ["BoundedHistorySampler", "bounded"]
