"""What the tracking store hands back: frozen dataclasses, plus the state names.

Trial states and sweep statuses are defined in :mod:`hpo.states` (re-exported here).

Non-finite numbers: a trial value or metric value of NaN is stored (and read back) as
``None``; +/-inf is stored as a float. Inside dict fields (params, metrics, attrs, config),
which are JSON columns, every non-finite float becomes ``None`` because JSON has no NaN/inf.
``TrialRecord.to_json()`` and ``SweepRecord.to_dict()`` return strict JSON (non-finite -> None).
All timestamps are timezone-aware UTC datetimes; the JSON forms use ISO-8601 with ``+00:00``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from hpo.states import (  # noqa: E402 - re-exported
    COMPLETE,
    FAILED,
    INTERRUPTED,
    PAUSED,
    PRUNED,
    RUNNING,
    SWEEP_STATUSES,
    TRIAL_STATES,
    SweepStatus,
    TrialState,
)

__all__ = [
    "COMPLETE", "FAILED", "INTERRUPTED", "PAUSED", "PRUNED", "RUNNING", "SWEEP_STATUSES",
    "TRIAL_STATES",
    "MetricRecord", "SweepRecord", "SweepStatus", "TrialRecord", "TrialState", "iso", "jsonable",
]


def iso(value: datetime | None) -> str | None:
    """ISO-8601 text of a UTC datetime (or None)."""
    return value.isoformat() if value is not None else None


def jsonable(value: Any) -> Any:
    """A strict-JSON copy of ``value``: non-finite floats -> None, tuples/sets -> lists,
    numpy-like scalars -> Python numbers, datetimes -> ISO text, anything else -> str."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item):
        try:
            return jsonable(item())
        except Exception:  # noqa: BLE001 - arrays with more than one element, odd types
            pass
    return str(value)


@dataclass(frozen=True)
class SweepRecord:
    """One sweep as recorded by ``TrackingStore.create_sweep`` / ``end_sweep``."""

    name: str
    config: dict[str, Any] = field(default_factory=dict)
    config_yaml: str | None = None
    objective: str | None = None
    goal: str | None = None
    method: str | None = None
    pruner: str | None = None
    storage: str | None = None  # masked URL, never a password
    status: str = SweepStatus.RUNNING.value
    started: datetime | None = None
    ended: datetime | None = None
    host: str | None = None
    git_commit: str | None = None
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field (timestamps as ISO-8601 UTC text)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = iso(value) if isinstance(value, datetime) else jsonable(value)
        return out


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a sweep. ``metrics`` is the final metrics dict, ``steps`` the last
    reported step (None when nothing was reported)."""

    sweep: str
    number: int
    state: str
    value: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    steps: int | None = None
    started: datetime | None = None
    ended: datetime | None = None
    duration_s: float | None = None
    host: str | None = None
    pid: int | None = None
    worker: str | None = None
    device: str | None = None
    error: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    retry_of: int | None = None

    def to_json(self) -> dict[str, Any]:
        """A strict-JSON dict: ``number, state, value, params, steps, started, ended, worker``
        first (the keys scripts rely on), then every other field."""
        keys = ["number", "state", "value", "params", "steps", "started", "ended", "worker"]
        keys += [f.name for f in fields(self) if f.name not in keys]
        out: dict[str, Any] = {}
        for key in keys:
            value = getattr(self, key)
            out[key] = iso(value) if isinstance(value, datetime) else jsonable(value)
        return out


@dataclass(frozen=True)
class MetricRecord:
    """One metric value of one trial at one step."""

    number: int
    step: int
    name: str
    value: float | None
    logged_at: datetime | None = None
