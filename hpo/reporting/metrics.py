"""Every metric a trainer reports, not only the objective: the final value of each metric per
trial, the metric names in a stable order, and step histories as plain rows.

Used by the report's tables and curves and by ``hpo trials`` / ``hpo metrics``. Only the
tracking store's public reads (``trials``, ``metrics``) are needed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hpo.tracking.records import MetricRecord, TrialRecord, iso

__all__ = ["final_metrics", "finite", "history_rows", "metric_names"]


def finite(value: Any) -> float | None:
    """``value`` as a finite float, else None (None, NaN, inf, strings): a metric value as
    stored in JSON."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def final_metrics(
    records: Iterable[TrialRecord], history: Iterable[MetricRecord]
) -> dict[int, dict[str, float | None]]:
    """Per trial number, the final value of every metric it reported: the value at the
    metric's last reported step, overridden by the trial's final metrics (what the trainer
    returned), which win. Non-finite values are None."""
    last: dict[int, dict[str, tuple[int, float | None]]] = {}
    for m in history:
        seen = last.setdefault(int(m.number), {})
        prev = seen.get(m.name)
        if prev is None or int(m.step) >= prev[0]:
            seen[m.name] = (int(m.step), finite(m.value))
    out: dict[int, dict[str, float | None]] = {
        number: {name: value for name, (_, value) in seen.items()}
        for number, seen in last.items()
    }
    for rec in records:
        values = out.setdefault(int(rec.number), {})
        for name, value in (rec.metrics or {}).items():
            if value is None or isinstance(value, int | float) and not isinstance(value, bool):
                values[str(name)] = finite(value)
    return out


def metric_names(
    finals: Mapping[int, Mapping[str, Any]], objective: str | None = None
) -> list[str]:
    """Every metric name in ``finals``: the objective first (when reported), then the others
    alphabetically."""
    names = sorted({name for values in finals.values() for name in values})
    if objective in names:
        names.remove(objective)
        names.insert(0, objective)
    return names


def history_rows(
    history: Iterable[MetricRecord], metrics: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Step histories as rows ``{trial, step, metric, value, logged_at}`` (value None when it
    was not a finite number), in the store's order (trial, step, metric); only the ``metrics``
    named, when given."""
    wanted = None if metrics is None else set(metrics)
    return [
        {
            "trial": int(m.number),
            "step": int(m.step),
            "metric": m.name,
            "value": finite(m.value),
            "logged_at": iso(m.logged_at),
        }
        for m in history
        if wanted is None or m.name in wanted
    ]
