"""Tracking store: every sweep, trial and metric, in the same database as the Optuna study.

``TrackingStore(url)`` writes and reads it; records are frozen dataclasses (see
``hpo.tracking.records`` for the trial states and how NaN/inf are stored).
"""

from hpo.tracking.records import (
    COMPLETE,
    FAILED,
    INTERRUPTED,
    PRUNED,
    RUNNING,
    SWEEP_STATUSES,
    TRIAL_STATES,
    MetricRecord,
    SweepRecord,
    SweepStatus,
    TrialRecord,
    TrialState,
)
from hpo.tracking.schema import SCHEMA_VERSION
from hpo.tracking.store import TrackingStore

__all__ = [
    "COMPLETE",
    "FAILED",
    "INTERRUPTED",
    "PRUNED",
    "RUNNING",
    "SCHEMA_VERSION",
    "SWEEP_STATUSES",
    "TRIAL_STATES",
    "MetricRecord",
    "SweepRecord",
    "SweepStatus",
    "TrackingStore",
    "TrialRecord",
    "TrialState",
]
