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

import copy
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
    # FrozenTrial's public accessors are properties with checks; at 10,000 trials x 3 calls per
    # ask they cost more than the sampling, so read the fields behind them.
    complete, keep = [], set()
    for i, t in enumerate(trials):
        state = t.state  # a plain attribute; value and number are properties
        if state == TrialState.COMPLETE and t._values:
            complete.append((-t._values[0] if maximize else t._values[0], i))
        elif not state.is_finished():
            keep.add(i)
    keep.update(i for _, i in heapq.nsmallest(keep_best, complete))
    rest = [i for i in range(len(trials)) if i not in keep]
    room = max(0, max_trials - len(keep))
    if len(rest) <= room:
        keep.update(rest)
    elif room:
        stride = len(rest) / room  # > 1: every k-th of the rest, counting back from the newest
        keep.update(rest[int(len(rest) - 1 - j * stride)] for j in range(room))
    return [trials[i] for i in sorted(keep)]


class _StudyView:
    """A study whose trial lists come from ``trials`` (bounded); the rest is the real study."""

    def __init__(self, study: optuna.Study, trials: list[FrozenTrial] | None) -> None:
        self._study = study
        self._bounded = trials  # None: the study is small, pass every call through

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        if self._bounded is None:
            return self._study._get_trials(deepcopy, states, use_cache=use_cache)
        out = [t for t in self._bounded if states is None or t.state in states]
        return copy.deepcopy(out) if deepcopy else out

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        return self._get_trials(deepcopy, states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


class BoundedHistorySampler(BaseSampler):
    """``sampler`` on a bounded view of the study (see the module docstring).

    The bounded list is built once per asked trial (from all trials, whatever their state)
    and filtered for each of the sampler's reads of that ask.
    """

    def __init__(
        self, sampler: BaseSampler, max_trials: int = MAX_TRIALS, keep_best: int = KEEP_BEST
    ) -> None:
        self.sampler = sampler
        self.max_trials = max_trials
        self.keep_best = keep_best
        self._memo: tuple[Any, list[FrozenTrial] | None] | None = None

    def _view(self, study: optuna.Study, trial: FrozenTrial) -> Any:
        key = (study.study_name, id(study), trial.number)
        if self._memo is None or self._memo[0] != key:
            every = study._get_trials(deepcopy=False, states=None, use_cache=False)
            trials = None
            if len(every) > self.max_trials:
                maximize = study.directions[0] == StudyDirection.MAXIMIZE
                trials = bounded(every, self.max_trials, self.keep_best, maximize)
            self._memo = (key, trials)
        return _StudyView(study, self._memo[1])

    def reset(self) -> None:
        """Forget the memoized view (the study's replica was replayed again)."""
        self._memo = None

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.sampler.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.sampler.infer_relative_search_space(self._view(study, trial), trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.sampler.sample_relative(self._view(study, trial), trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self.sampler.sample_independent(
            self._view(study, trial), trial, param_name, param_distribution)

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
