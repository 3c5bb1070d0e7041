"""Checks every placement contract test shares: the budget, and study == tracking."""

from __future__ import annotations

import optuna

from hpo import study as studies
from hpo.tracking import TrackingStore

_ROW_STATE = {
    optuna.trial.TrialState.COMPLETE: {"complete"},
    optuna.trial.TrialState.PRUNED: {"pruned", "paused"},
    optuna.trial.TrialState.FAIL: {"failed", "interrupted"},
    optuna.trial.TrialState.RUNNING: {"running"},
}


def check_agreement(url: str, name: str) -> dict[str, int]:
    """Assert that the study and the tracking rows agree trial by trial, that nothing is
    left running, and return the tracking counts."""
    store = TrackingStore(url)
    study = studies.load(name, studies.open_storage(url, name, store))
    rows = {t.number: t for t in store.trials(name)}
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.WAITING:
            assert t.number not in rows, f"trial {t.number}: waiting in the study, has a row"
            continue
        row = rows.get(t.number)
        assert row is not None, f"trial {t.number} ({t.state.name}) has no tracking row"
        assert row.state in _ROW_STATE[t.state], (t.number, t.state.name, row.state, row.error)
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert row.value == t.value, (t.number, row.value, t.value)
        if row.state == "interrupted":
            assert t.user_attrs.get(studies.INTERRUPTED_ATTR), t.number
    counts = store.counts(name)
    assert counts["running"] == 0, counts
    assert not [t for t in study.get_trials(deepcopy=False)
                if t.state == optuna.trial.TrialState.RUNNING]
    return counts


def counted(url: str, name: str) -> int:
    """Trials that count toward the budget (retried and interrupted ones do not)."""
    store = TrackingStore(url)
    study = studies.load(name, studies.open_storage(url, name, store))
    return studies.counted_trials(study)
