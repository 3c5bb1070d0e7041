"""Load a sweep for the report and shape it into plain, plot-ready data.

Everything here is pandas-free: :class:`TrialFrame` holds one row per trial with the params
flattened to dotted names (``opt.lr``), and numpy columns built from it on demand. The
downsampling that keeps a 5,000-trial report small happens here too, and every step of it
is written down as a sentence (:attr:`ReportData.notes`) that the page shows verbatim.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from hpo.reporting.metrics import final_metrics, finite, metric_names
from hpo.tracking.records import (
    COMPLETE,
    FAILED,
    INTERRUPTED,
    PAUSED,
    PRUNED,
    RUNNING,
    TRIAL_STATES,
    MetricRecord,
    SweepRecord,
    TrialRecord,
)

# --------------------------------------------------------------------------- limits
LEADERBOARD_ROWS = 50  # rows of the leaderboard table
FAILED_ROWS = 50  # failed trials listed with their error text
ERROR_CHARS = 4000  # characters of one error text kept (the tail: tracebacks end there)
CURVES_TOP = 10  # best complete trials: their curves always drawn, each in its own colour
CURVES_MAX = 400  # curves drawn in all (the top ones + a deterministic sample of the rest)
CURVE_POINTS = 100  # points per curve at most (steps rounded onto a grid of this many bins)
CURVE_METRICS = 12  # metrics with their own learning curves (the objective first)
TRIAL_ROWS = 500  # rows of the all-trials table (the latest trials by number)
PARCOORDS_MAX = 3000  # lines in the parallel-coordinates plot
SLICE_MAX = 2000  # points per parameter in the slice plots
IMPORTANCE_SAMPLE = 300  # complete trials fANOVA is fitted on
IMPORTANCE_TREES = 64
CONTOUR_POINTS = 2000  # trial markers drawn over the contour
STALE_S = 3600.0  # a "running" sweep silent this long is drawn up to its last sign of life

STATE_ORDER = (COMPLETE, PRUNED, PAUSED, FAILED, RUNNING, INTERRUPTED)

_LOG_DISTRIBUTIONS = {
    "log_uniform",
    "log_uniform_values",
    "inv_log_uniform",
    "inv_log_uniform_values",
    "q_log_uniform",
    "q_log_uniform_values",
    "log_normal",
    "q_log_normal",
}


# --------------------------------------------------------------------------- helpers
def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"opt": {"lr": 1e-3}}`` -> ``{"opt.lr": 1e-3}`` (nested dicts only; lists stay)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def category_label(value: Any) -> str:
    """How a categorical value is shown: strings as they are, the rest as compact JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return str(value)


def fmt_value(value: Any) -> str:
    """Short text for a number or parameter value (tables, hover labels)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.6g}"
    if isinstance(value, int | np.integer):
        return str(int(value))
    return category_label(value)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return ""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h {minutes} min"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {sec} s"


def _scramble(number: int) -> int:
    """A deterministic pseudo-random key per trial number (the sample order)."""
    return (int(number) * 2654435761 + 0x9E3779B9) % 2**32


def deterministic_sample(numbers: Iterable[int], k: int) -> list[int]:
    """``k`` of ``numbers`` chosen by a fixed hash: the same trials on every build."""
    ordered = sorted(numbers, key=_scramble)
    return sorted(ordered[: max(0, k)])


# --------------------------------------------------------------------------- the frame
@dataclass(frozen=True)
class TrialRow:
    """One trial as the report sees it."""

    number: int
    state: str
    value: float | None  # finite objective value, else None
    value_note: str  # "" or why there is no finite value ("no value or NaN", "inf", "-inf")
    params: dict[str, Any]  # flattened, dotted names
    started: datetime | None
    ended: datetime | None
    duration_s: float | None
    worker: str
    device: str
    steps: int | None
    error: str | None
    retry_of: int | None
    metrics: dict[str, float | None] = field(default_factory=dict)  # final value of each


@dataclass(frozen=True)
class ParamInfo:
    """One flattened parameter: numeric (with an optional log axis) or categorical."""

    name: str
    numeric: bool
    log: bool
    categories: tuple[str, ...]  # categorical: the labels in first-seen order
    present: int  # trials that have it

    def encode(self, values: Sequence[Any]) -> np.ndarray:
        """Column as floats: numbers as they are, categories as 0..n-1; missing -> NaN."""
        out = np.full(len(values), np.nan)
        if self.numeric:
            for i, v in enumerate(values):
                x = finite(v)
                if x is not None and (not self.log or x > 0):
                    out[i] = x
        else:
            index = {c: i for i, c in enumerate(self.categories)}
            for i, v in enumerate(values):
                if v is not None:
                    out[i] = index.get(category_label(v), np.nan)
        return out


def worker_label(rec: TrialRecord) -> str:
    if rec.worker:
        return str(rec.worker)
    if rec.host or rec.pid:
        return f"{rec.host or '?'}:{rec.pid if rec.pid is not None else '?'}"
    return "unknown"


def _row(rec: TrialRecord, metrics: Mapping[str, float | None] | None = None) -> TrialRow:
    raw = rec.value
    value = finite(raw)
    note = ""
    if value is None:
        if raw is None:
            note = "no value or NaN"
        elif isinstance(raw, float) and math.isnan(raw):
            note = "NaN"
        else:
            note = fmt_value(raw)
    return TrialRow(
        number=int(rec.number),
        state=str(rec.state),
        value=value,
        value_note=note,
        params=flatten(rec.params or {}),
        started=rec.started,
        ended=rec.ended,
        duration_s=rec.duration_s,
        worker=worker_label(rec),
        device=rec.device or "",
        steps=rec.steps,
        error=rec.error,
        retry_of=rec.retry_of,
        metrics=dict(metrics or {}),
    )


class TrialFrame:
    """Trials as rows plus numpy columns: ``number``, ``value`` (NaN if none), ``state``."""

    def __init__(self, rows: Sequence[TrialRow], params: Sequence[ParamInfo]) -> None:
        self.rows = list(rows)
        self.params = list(params)
        self.number = np.array([r.number for r in self.rows], dtype=np.int64)
        self.value = np.array(
            [np.nan if r.value is None else r.value for r in self.rows], dtype=np.float64
        )
        self.state = np.array([r.state for r in self.rows], dtype=object)
        self._columns: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def param(self, name: str) -> ParamInfo:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def column(self, name: str) -> np.ndarray:
        """Encoded float column of parameter ``name`` (see :meth:`ParamInfo.encode`)."""
        if name not in self._columns:
            info = self.param(name)
            self._columns[name] = info.encode([r.params.get(name) for r in self.rows])
        return self._columns[name]

    def mask(self, *states: str, with_value: bool = False) -> np.ndarray:
        m = np.isin(self.state, list(states)) if states else np.ones(len(self), dtype=bool)
        if with_value:
            m &= np.isfinite(self.value)
        return m


def param_infos(rows: Sequence[TrialRow], config: Mapping[str, Any] | None) -> list[ParamInfo]:
    """Kinds of every flattened parameter, in first-seen order; constants are left out."""
    seen: dict[str, list[Any]] = {}
    for r in rows:
        for k, v in r.params.items():
            seen.setdefault(k, []).append(v)
    spec_log = _log_params(config or {})
    out: list[ParamInfo] = []
    for name, values in seen.items():
        present = [v for v in values if v is not None]
        if not present:
            continue
        numeric = all(is_number(v) for v in present)
        if numeric:
            nums = [x for x in (finite(v) for v in present) if x is not None]
            if not nums:
                numeric = False
            else:
                lo, hi = min(nums), max(nums)
                if lo == hi and len(set(map(category_label, present))) <= 1:
                    continue  # a constant: nothing to plot
                log = spec_log.get(name)
                if log is None:
                    log = lo > 0 and hi / lo >= 1000
                out.append(ParamInfo(name, True, bool(log and lo > 0), (), len(present)))
                continue
        cats = tuple(dict.fromkeys(category_label(v) for v in present))
        if len(cats) <= 1:
            continue
        out.append(ParamInfo(name, False, False, cats, len(present)))
    return out


def _log_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, bool]:
    """Dotted name -> whether the sweep config samples it on a log scale."""
    params = config.get("parameters") if isinstance(config, Mapping) else None
    out: dict[str, bool] = {}
    if not isinstance(params, Mapping):
        return out
    for key, spec in params.items():
        if not isinstance(spec, Mapping):
            continue
        name = f"{prefix}{key}"
        if isinstance(spec.get("parameters"), Mapping):
            out.update(_log_params(spec, f"{name}."))
        elif "distribution" in spec:
            out[name] = str(spec["distribution"]) in _LOG_DISTRIBUTIONS
        elif "values" in spec:
            out[name] = False
    return out


# --------------------------------------------------------------------------- curves
@dataclass(frozen=True)
class Curve:
    number: int
    state: str
    steps: np.ndarray  # int
    values: np.ndarray  # float (NaN where a report had no finite value)


@dataclass(frozen=True)
class CurveSet:
    """Learning curves to draw, what was left out, and where pruned trials stopped."""

    curves: list[Curve]  # sorted by number
    highlight: list[int]  # the best trials, drawn each in its own colour
    stops: list[tuple[int, int, float]]  # (number, last step, last value) of every pruned trial
    total: int  # trials that reported the objective at least once
    points_before: int
    points_after: int
    bin_width: int  # 1 = every step kept
    note: str


def shape_curves(
    records: Iterable[MetricRecord],
    objective: str,
    frame: TrialFrame,
    goal: str,
    *,
    top: int = CURVES_TOP,
    max_curves: int = CURVES_MAX,
    max_points: int = CURVE_POINTS,
) -> CurveSet:
    """Objective-per-step curves; downsampled as :data:`CURVES_MAX`/:data:`CURVE_POINTS` say."""
    by_trial: dict[int, tuple[list[int], list[float]]] = {}
    for m in records:
        if m.name != objective:
            continue
        steps, values = by_trial.setdefault(int(m.number), ([], []))
        steps.append(int(m.step))
        x = finite(m.value)
        values.append(np.nan if x is None else x)
    state_of = {r.number: r.state for r in frame.rows}
    all_curves: dict[int, Curve] = {}
    for number, (steps, values) in by_trial.items():
        s = np.asarray(steps, dtype=np.int64)
        v = np.asarray(values, dtype=np.float64)
        order = np.argsort(s, kind="stable")
        all_curves[number] = Curve(number, state_of.get(number, COMPLETE), s[order], v[order])

    stops = []
    for number, c in sorted(all_curves.items()):
        if c.state == PRUNED and len(c.steps):
            ok = np.flatnonzero(np.isfinite(c.values))
            if len(ok):
                stops.append((number, int(c.steps[ok[-1]]), float(c.values[ok[-1]])))

    ranked = _ranked(frame, goal)
    highlight = [n for n in ranked if n in all_curves][:top]
    rest = [n for n in all_curves if n not in set(highlight)]
    room = max(0, max_curves - len(highlight))
    chosen = set(highlight) | set(deterministic_sample(rest, room) if len(rest) > room else rest)

    max_step = max((int(c.steps[-1]) for c in all_curves.values() if len(c.steps)), default=0)
    width = max(1, math.ceil((max_step + 1) / max_points)) if max_points else 1
    before = sum(len(c.steps) for c in all_curves.values())
    kept: list[Curve] = []
    for number in sorted(chosen):
        kept.append(_thin(all_curves[number], width))
    after = sum(len(c.steps) for c in kept)

    parts = []
    total = len(all_curves)
    if total > len(kept):
        parts.append(
            f"{len(kept):,} of {total:,} learning curves drawn: the {len(highlight)} best "
            f"complete trials, plus a fixed (hash-of-trial-number) sample of "
            f"{len(kept) - len(highlight):,} of the other {len(rest):,}."
        )
    if width > 1:
        parts.append(
            f"Steps rounded onto a grid of {width} steps (one point per grid cell, the last "
            f"reported in it; a curve's first and last points always kept): {after:,} of "
            f"{before:,} points drawn."
        )
    if stops and total > len(kept):
        parts.append(
            f"Every pruned trial's stop is marked ({len(stops):,} markers), its curve drawn or not."
        )
    return CurveSet(kept, highlight, stops, total, before, after, width, " ".join(parts))


def _thin(curve: Curve, width: int) -> Curve:
    if width <= 1 or len(curve.steps) <= 2:
        return curve
    cells = curve.steps // width
    last_in_cell = np.r_[cells[1:] != cells[:-1], True]
    last_in_cell[0] = True  # keep the first point too
    return Curve(curve.number, curve.state, curve.steps[last_in_cell], curve.values[last_in_cell])


def _ranked(frame: TrialFrame, goal: str) -> list[int]:
    """Complete trials with a value, best first (ties: lower number)."""
    m = frame.mask(COMPLETE, with_value=True)
    numbers, values = frame.number[m], frame.value[m]
    sign = -1.0 if goal == "maximize" else 1.0
    order = np.lexsort((numbers, sign * values))
    return [int(n) for n in numbers[order]]


# --------------------------------------------------------------------------- rungs
@dataclass(frozen=True)
class Rungs:
    steps: list[int]
    note: str


def rungs(config: Mapping[str, Any] | None, max_step: int) -> Rungs:
    """Where ASHA/Hyperband judge trials: ``min_iter * eta**k`` (see hpo.strategy)."""
    et = (config or {}).get("early_terminate") or {}
    kind = str(et.get("type") or "none").lower()
    if kind in ("none", ""):
        return Rungs([], "No early termination configured: no rungs.")
    if kind == "median":
        return Rungs(
            [],
            "Median pruning compares a trial with the median of the others at every step "
            f"(after {et.get('n_warmup_steps', 0)} warm-up steps): no rungs to draw.",
        )
    if kind not in ("asha", "hyperband"):
        return Rungs([], f"Early termination {kind!r}: no rungs known.")
    eta_raw = et.get("reduction_factor") if kind == "asha" else None
    eta_raw = eta_raw or et.get("eta") or 3
    eta = max(2, int(round(float(eta_raw))))
    if kind == "asha":
        base = et.get("min_resource") or et.get("min_iter")
        rate = int(et.get("min_early_stopping_rate") or 0)
        if not base:
            return Rungs(
                [],
                "ASHA with min_resource 'auto' (set by Optuna at run time): rungs "
                "are not known to the report.",
            )
        start = int(base) * eta**rate
        what = f"ASHA rungs at min_iter·eta^k = {int(base)}·{eta}^k" + (
            f" from k = {rate} (min_early_stopping_rate)" if rate else ""
        )
    else:
        base = et.get("min_iter")
        if not base and et.get("max_iter") and et.get("s"):
            base = max(1, round(int(et["max_iter"]) / eta ** int(et["s"])))
        if not base:
            return Rungs([], "Hyperband without min_iter: rungs are not known to the report.")
        start = int(base)
        what = (
            f"Hyperband rungs of bracket 0 at min_iter·eta^k = {int(base)}·{eta}^k "
            f"(bracket b judges from rung b on, i.e. from {int(base)}·{eta}^b; bracket 0 "
            "has every rung)"
        )
    limit = et.get("max_iter") or et.get("max_resource")
    limit = int(limit) if limit and str(limit) != "auto" else max_step
    out = []
    r = start
    while r <= max(limit, start) and len(out) < 50:
        out.append(int(r))
        r *= eta
    shown = ", ".join(str(s) for s in out)
    return Rungs(out, f"{what}: {shown}." if out else f"{what}.")


# --------------------------------------------------------------------------- timeline
@dataclass(frozen=True)
class WorkerUsage:
    worker: str
    trials: int
    busy_s: float  # union of its trials' intervals
    first: datetime
    last: datetime
    utilization: float  # busy / sweep wall time (0..1)
    longest_gap_s: float


def worker_usage(rows: Sequence[TrialRow], start: datetime, end: datetime) -> list[WorkerUsage]:
    """Busy time, utilization (busy / sweep wall time) and longest idle gap per worker."""
    wall = max((end - start).total_seconds(), 1e-9)
    spans: dict[str, list[tuple[datetime, datetime]]] = {}
    for r in rows:
        if r.started is None:
            continue
        stop = r.ended or end
        spans.setdefault(r.worker, []).append((r.started, max(stop, r.started)))
    out = []
    for worker, items in spans.items():
        items.sort()
        busy = 0.0
        gap = 0.0
        cur_start, cur_end = items[0]
        for s, e in items[1:]:
            if s > cur_end:
                busy += (cur_end - cur_start).total_seconds()
                gap = max(gap, (s - cur_end).total_seconds())
                cur_start, cur_end = s, e
            else:
                cur_end = max(cur_end, e)
        busy += (cur_end - cur_start).total_seconds()
        last = max(e for _, e in items)
        out.append(
            WorkerUsage(worker, len(items), busy, items[0][0], last, min(1.0, busy / wall), gap)
        )
    out.sort(key=lambda u: natural_key(u.worker))
    return out


def natural_key(text: str) -> list[Any]:
    """Sort key that orders ``w2`` before ``w10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


# --------------------------------------------------------------------------- everything
@dataclass
class ReportData:
    name: str
    sweep: SweepRecord
    objective: str
    goal: str
    frame: TrialFrame
    counts: dict[str, int]
    best: TrialRow | None
    curves: CurveSet
    rungs: Rungs
    generated: datetime
    running: bool  # the sweep is still going (partial report)
    end: datetime  # sweep end, or now while running
    importances: dict[str, float] | None = None
    importance_note: str = ""
    notes: dict[str, str] = field(default_factory=dict)
    # every metric reported (final values or steps), the objective first
    metric_names: list[str] = field(default_factory=list)
    # learning curves per metric reported at some step (the objective first when it was)
    curve_sets: dict[str, CurveSet] = field(default_factory=dict)
    curve_metrics_note: str = ""  # which metrics have curves, when some were left out

    @property
    def extra_metrics(self) -> list[str]:
        """The metrics other than the objective (table columns next to the objective)."""
        return [m for m in self.metric_names if m != self.objective]

    @property
    def wall_s(self) -> float | None:
        if self.sweep.started is None:
            return None
        return (self.end - self.sweep.started).total_seconds()

    last_activity: datetime | None = None  # latest trial start/end or metric report

    @property
    def quiet_s(self) -> float | None:
        """Seconds between the last sign of life and this report (None without any)."""
        if self.last_activity is None:
            return None
        return max(0.0, (self.generated - self.last_activity).total_seconds())

    @property
    def stale(self) -> bool:
        """Marked running, but silent for more than :data:`STALE_S`."""
        return self.running and (self.quiet_s or 0.0) > STALE_S

    def ranked(self) -> list[int]:
        return _ranked(self.frame, self.goal)


def load(store: Any, name: str, *, now: datetime | None = None) -> ReportData:
    """Read a sweep from a :class:`hpo.tracking.TrackingStore` and shape it."""
    sweep: SweepRecord = store.get_sweep(name)
    records: list[TrialRecord] = store.trials(name)
    metrics: list[MetricRecord] = store.metrics(name)
    return shape(sweep, records, metrics, now=now)


def shape(
    sweep: SweepRecord,
    records: Sequence[TrialRecord],
    metrics: Iterable[MetricRecord],
    *,
    now: datetime | None = None,
) -> ReportData:
    """Build :class:`ReportData` from records (no database needed)."""
    now = now or datetime.now(UTC)
    config = sweep.config or {}
    metric_cfg = config.get("metric") if isinstance(config.get("metric"), Mapping) else {}
    objective = sweep.objective or metric_cfg.get("name") or "objective"
    goal = str(sweep.goal or metric_cfg.get("goal") or "minimize").lower()
    goal = "maximize" if goal.startswith("max") else "minimize"
    metrics = list(metrics)
    finals = final_metrics(records, metrics)
    rows = sorted((_row(r, finals.get(int(r.number))) for r in records), key=lambda r: r.number)
    frame = TrialFrame(rows, param_infos(rows, config))
    counts = dict.fromkeys(TRIAL_STATES, 0)
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    ranked = _ranked(frame, goal)
    by_number = {r.number: r for r in rows}
    best = by_number[ranked[0]] if ranked else None
    running = str(sweep.status) == RUNNING or counts.get(RUNNING, 0) > 0
    times = [t for r in rows for t in (r.started, r.ended) if t is not None]
    times += [m.logged_at for m in metrics if m.logged_at is not None]
    last_activity = max(times) if times else None
    if sweep.ended is not None and not running:
        end = sweep.ended
    elif running:
        # live: up to now; silent for long (a dead coordinator): up to the last sign of life
        quiet = (now - last_activity).total_seconds() if last_activity else 0.0
        end = now if quiet <= STALE_S or last_activity is None else last_activity
    else:
        end = max([r.ended for r in rows if r.ended], default=now)
    curve_sets, curve_note = _curve_sets(metrics, objective, frame, goal)
    curves = curve_sets.get(objective) or shape_curves((), objective, frame, goal)
    max_step = max((int(c.steps[-1]) for c in curves.curves if len(c.steps)), default=0)
    max_step = max([max_step] + [s for _, s, _ in curves.stops])
    return ReportData(
        name=sweep.name,
        sweep=sweep,
        objective=objective,
        goal=goal,
        frame=frame,
        counts=counts,
        best=best,
        curves=curves,
        rungs=rungs(config, max_step),
        generated=now,
        running=running,
        end=end,
        last_activity=last_activity,
        metric_names=metric_names(finals, objective),
        curve_sets=curve_sets,
        curve_metrics_note=curve_note,
    )


def _curve_sets(
    records: Sequence[MetricRecord], objective: str, frame: TrialFrame, goal: str
) -> tuple[dict[str, CurveSet], str]:
    """Learning curves of every metric reported at some step, at most :data:`CURVE_METRICS`
    of them (the objective first, then alphabetically); a note when some were left out."""
    by_name: dict[str, list[MetricRecord]] = {}
    for m in records:
        by_name.setdefault(m.name, []).append(m)
    names = sorted(by_name)
    if objective in by_name:
        names.remove(objective)
        names.insert(0, objective)
    note = ""
    if len(names) > CURVE_METRICS:
        note = (f"Learning curves of {CURVE_METRICS} of the {len(names)} metrics reported per "
                f"step (the objective first, then alphabetically): "
                f"{', '.join(names[CURVE_METRICS:])} left out.")
        names = names[:CURVE_METRICS]
    sets = {name: shape_curves(by_name[name], name, frame, goal) for name in names}
    return {name: cs for name, cs in sets.items() if cs.total}, note


# --------------------------------------------------------------------------- importances
def importances(data: ReportData, storage_url: str | None) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances (Optuna's FanovaImportanceEvaluator) of the sweep's parameters.

    Fitted on a fixed random sample of at most :data:`IMPORTANCE_SAMPLE` complete trials
    (fANOVA's cost grows faster than linearly: ~18 s for 1,000 trials x 20 params on 2 cores,
    ~6 min for 5,000). The sample is drawn from the tracking store's complete trials; those
    trials are then read from the Optuna study of the same name (its real distributions) when
    ``storage_url`` holds one, else
    built with distributions inferred from the tracking store.
    """
    import optuna

    complete = [r.number for r in data.frame.rows if r.state == COMPLETE and r.value is not None]
    total = len(complete)
    pick = complete
    if total > IMPORTANCE_SAMPLE:
        rng = np.random.default_rng(0)
        pick = sorted(int(n) for n in rng.choice(complete, IMPORTANCE_SAMPLE, replace=False))
    frozen, source = _study_trials(data.name, storage_url, pick)
    if frozen is None:
        frozen = _inferred_trials(data, set(pick))
        source = (
            "no Optuna study found, so distributions were inferred from the tracking "
            "store (min/max of the values seen; log scale where the config says so)"
        )
    if len(frozen) < 2:
        return None, (
            f"Parameter importances need at least 2 completed trials with a finite "
            f"value; this sweep has {len(frozen)}."
        )
    direction = "maximize" if data.goal == "maximize" else "minimize"
    evaluator = optuna.importance.FanovaImportanceEvaluator(
        n_trees=IMPORTANCE_TREES, max_depth=64, seed=0
    )
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction=direction)
        study.add_trials(frozen)
        result = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except Exception as exc:  # noqa: BLE001 - dynamic spaces, single-valued params, ...
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, f"Parameter importances could not be computed: {first}"
    finally:
        optuna.logging.set_verbosity(verbosity)
    out = {str(k): float(v) for k, v in result.items() if math.isfinite(float(v))}
    if not out:
        return None, (
            "Parameter importances: no parameter varies across every completed "
            "trial (conditional parameters are left out by fANOVA)."
        )
    sample = (
        f"a fixed random sample (seed 0) of {len(frozen):,} of {total:,} completed trials"
        if total > len(pick)
        else f"all {len(frozen):,} completed trials"
    )
    note = (
        f"fANOVA (Optuna FanovaImportanceEvaluator, {IMPORTANCE_TREES} trees, seed 0) "
        f"fitted on {sample}; {source}. Only parameters present in every one of those "
        "trials are scored."
    )
    return out, note


def _study_trials(
    name: str, storage_url: str | None, numbers: Sequence[int]
) -> tuple[list[Any] | None, str]:
    """Trials ``numbers`` of the Optuna study ``name`` that are complete with a finite value;
    None when there is no such study."""
    if not storage_url:
        return None, ""
    from optuna.trial import TrialState

    from hpo.study import open_storage

    try:
        storage = open_storage(storage_url, name)
        study_id = storage.get_study_id_from_name(name)
        wanted = set(numbers)
        complete = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,))
        trials = [t for t in complete if t.number in wanted]
    except Exception:  # noqa: BLE001 - no such study, unreadable database, ...
        return None, ""
    trials = [
        t
        for t in trials
        if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)
    ]
    return trials, "distributions from the Optuna study"


def _inferred_trials(data: ReportData, numbers: set[int]) -> list[Any]:
    import optuna
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    frame = data.frame
    rows = [
        r for r in frame.rows if r.state == COMPLETE and r.value is not None and r.number in numbers
    ]
    dists: dict[str, Any] = {}
    for p in frame.params:
        values = [r.params.get(p.name) for r in rows]
        if any(v is None for v in values) or not values:
            continue
        if p.numeric:
            nums = [finite(v) for v in values]
            if any(x is None for x in nums) or (p.log and min(nums) <= 0):  # type: ignore[type-var]
                continue
            lo, hi = min(nums), max(nums)  # type: ignore[type-var]
            if lo == hi:
                continue
            if all(isinstance(v, int | np.integer) for v in values):
                dists[p.name] = IntDistribution(int(lo), int(hi), log=p.log)
            else:
                dists[p.name] = FloatDistribution(float(lo), float(hi), log=p.log)
        else:
            dists[p.name] = CategoricalDistribution(list(p.categories))
    out = []
    for r in rows:
        params = {}
        for name, d in dists.items():
            v = r.params[name]
            if isinstance(d, CategoricalDistribution):
                v = category_label(v)
            elif isinstance(d, IntDistribution):
                v = int(v)
            else:
                v = float(v)
            params[name] = v
        out.append(optuna.trial.create_trial(params=params, distributions=dists, value=r.value))
    return out


# --------------------------------------------------------------------------- row picking
def pick_rows(frame: TrialFrame, limit: int, goal: str) -> tuple[np.ndarray, str]:
    """Indices of the complete trials with a value to plot: all of them up to ``limit``,
    else the best quarter of ``limit`` plus a fixed sample of the rest. Returns a note."""
    idx = np.flatnonzero(frame.mask(COMPLETE, with_value=True))
    if len(idx) <= limit:
        return idx, ""
    sign = -1.0 if goal == "maximize" else 1.0
    order = idx[np.lexsort((frame.number[idx], sign * frame.value[idx]))]
    n_top = limit // 4
    top = order[:n_top]
    rest = order[n_top:]
    by_number = {int(frame.number[i]): int(i) for i in rest}
    sample = [by_number[n] for n in deterministic_sample(by_number, limit - n_top)]
    chosen = np.sort(np.r_[top, np.asarray(sample, dtype=np.int64)]).astype(np.int64)
    note = (
        f"{len(chosen):,} of {len(idx):,} completed trials drawn: the {n_top:,} best plus a "
        f"fixed (hash-of-trial-number) sample of {len(chosen) - n_top:,} of the rest."
    )
    return chosen, note
