"""Assemble the report page: run the figure builders on :class:`ReportData`, then render
``page.html.j2`` into one self-contained HTML file.

plotly.js is embedded once, inline (no CDN, no server). Each figure is stored as JSON (plotly's
base64 typed arrays for big numeric columns) in one ``application/json`` block, without its
template; the page adds the one shared template and calls ``Plotly.newPlot`` per figure.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2
import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from hpo.reporting import figures as figs
from hpo.reporting.data import (
    COMPLETE,
    ERROR_CHARS,
    FAILED,
    FAILED_ROWS,
    INTERRUPTED,
    LEADERBOARD_ROWS,
    PARCOORDS_MAX,
    PRUNED,
    RUNNING,
    SLICE_MAX,
    STATE_ORDER,
    TRIAL_ROWS,
    ReportData,
    fmt_duration,
    fmt_value,
    pick_rows,
    worker_usage,
)
from hpo.storage_url import mask_text, mask_url

MAX_PARALLEL_DIMS = 12
MAX_SLICES = 24


@dataclass
class Section:
    """One plot section: a figure, or the reason there is none, and what was left out."""

    id: str
    title: str
    intro: str = ""
    figure: go.Figure | None = None
    missing: str = ""
    notes: list[str] = field(default_factory=list)  # how to read it
    sampled: list[str] = field(default_factory=list)  # what was downsampled


@lru_cache(maxsize=1)
def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().replace("</script", "<\\/script")


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(
            lambda name: resources.files("hpo.reporting").joinpath(name).read_text("utf-8")
        ),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["num"] = fmt_value
    env.filters["cell"] = _cell
    env.filters["dur"] = fmt_duration
    env.filters["when"] = _when
    return env.get_template("page.html.j2")


def _cell(value: Any, n: int = 60) -> str:
    text = fmt_value(value)
    return text if len(text) <= n else text[: n - 1] + "…"


def _when(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC") if t else ""


def _script_json(text: str) -> str:
    """JSON text made safe inside <script>: every '<' escaped (valid JSON still)."""
    return text.replace("<", "\\u003c")


# ------------------------------------------------------------------------------- sections
def _param_order(data: ReportData) -> list[str]:
    """Parameter names, most important first (then in the order the sweep defines them)."""
    names = [p.name for p in data.frame.params]
    imp = data.importances or {}
    position = {n: i for i, n in enumerate(names)}
    return sorted(names, key=lambda n: (-imp.get(n, -1.0), position[n]))


def history_section(data: ReportData) -> Section:
    s = Section(
        "history",
        "Optimization history",
        f"{data.objective} of every trial by trial number, coloured by state; the line is "
        f"the best complete value so far ({data.goal}).",
    )
    f = data.frame
    if not np.isfinite(f.value).any():
        s.missing = "No trial has a finite objective value yet" + (
            " (the sweep is still running)." if data.running else "."
        )
        return s
    s.figure = figs.history_figure(
        f.number, f.value, f.state, objective=data.objective, goal=data.goal
    )
    why: dict[str, int] = {}
    for r in f.rows:
        if r.state in (COMPLETE, PRUNED) and r.value is None:
            why[r.value_note] = why.get(r.value_note, 0) + 1
    if why:
        n = sum(why.values())
        detail = ", ".join(f"{k}: {v:,}" for k, v in sorted(why.items()))
        s.notes.append(
            f"{n:,} complete/pruned trial{'s have' if n > 1 else ' has'} no finite "
            f"value ({detail}) and {'are' if n > 1 else 'is'} not drawn."
        )
    return s


def curves_section(data: ReportData) -> Section:
    sets = data.curve_sets or ({data.objective: data.curves} if data.curves.total else {})
    first = next(iter(sets), data.objective)
    s = Section(
        "curves",
        "Learning curves",
        f"{first} as reported at each step; the {len(sets[first].highlight) if sets else 0} "
        f"best complete trials (by {data.objective}) in colour, ✕ where a pruned trial was "
        "stopped.",
    )
    if not sets:
        s.missing = (
            f"No trial reported {data.objective!r} (or any other metric) at any step "
            "(ctx.report(...)), so there are no learning curves."
        )
        return s
    if len(sets) > 1:
        s.intro += (f" The menu above the plot switches between the {len(sets)} metrics "
                    f"reported per step ({', '.join(sets)}).")
    values: dict[str, dict[int, float | None]] = {
        m: {r.number: r.metrics.get(m) for r in data.frame.rows} for m in sets
    }
    values[data.objective] = {r.number: r.value for r in data.frame.rows}
    s.figure = figs.metric_curves_figure(sets, data.rungs.steps, goal=data.goal,
                                         values_by_metric=values)
    s.notes.append(data.rungs.note)
    if first != data.objective:
        s.notes.append(f"No trial reported the objective {data.objective!r} per step; the "
                       "other metrics are drawn.")
    if data.curve_metrics_note:
        s.sampled.append(data.curve_metrics_note)
    for m, cs in sets.items():
        if cs.note:
            s.sampled.append(cs.note if len(sets) == 1 else f"{m}: {cs.note}")
    return s


def parallel_section(data: ReportData) -> Section:
    s = Section(
        "parallel",
        "Parallel coordinates",
        "Each line is a completed trial: its parameters and, on the right, its "
        f"{data.objective}. Drag along an axis to filter.",
    )
    f = data.frame
    if not f.params:
        s.missing = "The sweep has no varying parameters."
        return s
    idx, note = pick_rows(f, PARCOORDS_MAX, data.goal)
    if len(idx) < 2:
        s.missing = (
            f"Needs at least 2 completed trials with a finite value; this sweep has {len(idx)}."
        )
        return s
    names = _param_order(data)
    if len(names) > MAX_PARALLEL_DIMS:
        s.sampled.append(
            f"{MAX_PARALLEL_DIMS} of {len(names)} parameters shown (the most important first)."
        )
        names = names[:MAX_PARALLEL_DIMS]
    cols = [(f.param(n), f.column(n)[idx]) for n in names]
    s.figure = figs.parallel_figure(cols, f.value[idx], objective=data.objective, goal=data.goal)
    if note:
        s.sampled.append(note)
    if any(not f.param(n).numeric for n in names):
        s.notes.append("Categorical parameters are drawn as evenly spaced categories.")
    if any(np.isnan(c).any() for _, c in cols):
        s.notes.append("'n/a' marks trials without a (conditional) parameter.")
    return s


def importance_section(data: ReportData) -> Section:
    s = Section(
        "importance",
        "Parameter importances",
        f"How much of the variance of {data.objective} each parameter explains.",
    )
    if not data.importances:
        s.missing = data.importance_note or "No parameter importances."
        return s
    s.figure = figs.importance_figure(data.importances)
    s.notes.append(data.importance_note)
    if "sample" in data.importance_note:
        s.sampled.append(data.importance_note.split(";")[0] + ".")
    return s


def slice_section(data: ReportData) -> Section:
    s = Section(
        "slice",
        "Slice plots",
        f"{data.objective} against each parameter (completed trials), coloured by trial "
        "number; most important parameter first.",
    )
    f = data.frame
    if not f.params:
        s.missing = "The sweep has no varying parameters."
        return s
    idx, note = pick_rows(f, SLICE_MAX, data.goal)
    if len(idx) < 1:
        s.missing = "No completed trial with a finite value yet."
        return s
    names = _param_order(data)
    if len(names) > MAX_SLICES:
        s.sampled.append(f"{MAX_SLICES} of {len(names)} parameters shown (most important first).")
        names = names[:MAX_SLICES]
    cols = [(f.param(n), f.column(n)[idx]) for n in names]
    s.figure = figs.slice_figure(
        cols, f.value[idx], f.number[idx], objective=data.objective, goal=data.goal
    )
    if note:
        s.sampled.append(note)
    if len(idx) == 1:
        s.notes.append("Only one completed trial: each panel has a single point.")
    return s


def contour_section(data: ReportData) -> Section:
    s = Section("contour", "Contour of the two most important parameters")
    f = data.frame
    names = _param_order(data)
    if len(names) < 2:
        s.missing = f"Needs two varying parameters; this sweep has {len(names)}."
        return s
    m = f.mask(COMPLETE, with_value=True)
    x_name, y_name = names[0], names[1]
    both = m & np.isfinite(f.column(x_name)) & np.isfinite(f.column(y_name))
    if both.sum() < 3:
        s.missing = (
            f"Needs at least 3 completed trials with {x_name} and {y_name}; this sweep "
            f"has {int(both.sum())}."
        )
        return s
    how = (
        "by importance"
        if data.importances and x_name in data.importances and y_name in data.importances
        else "the first two parameters (no importances)"
    )
    s.intro = f"{x_name} × {y_name} ({how})."
    s.figure, note = figs.contour_figure(
        f.param(x_name),
        f.column(x_name)[m],
        f.param(y_name),
        f.column(y_name)[m],
        f.value[m],
        objective=data.objective,
        goal=data.goal,
    )
    s.sampled.append(note)
    return s


def timeline_section(data: ReportData) -> tuple[Section, list[dict[str, str]]]:
    s = Section(
        "timeline",
        "Timeline",
        "Trials as bars per worker over time; the thin grey line is idle time. "
        "Utilization = busy time / sweep wall time.",
    )
    rows = [r for r in data.frame.rows if r.started is not None]
    if not rows:
        s.missing = "No trial has a start time yet."
        return s, []
    start = data.sweep.started or min(r.started for r in rows)  # type: ignore[type-var]
    start = min([start, *(r.started for r in rows)])  # type: ignore[type-var]
    usage = worker_usage(rows, start, data.end)
    s.figure = figs.timeline_figure(rows, usage, end=data.end)
    if data.stale:
        s.notes.append(
            f"Running trials are drawn up to the sweep's last sign of life "
            f"({_when(data.last_activity)})."
        )
    elif data.running:
        s.notes.append("Running trials are drawn up to the time of this report.")
    return s, figs.usage_rows(usage)


# ------------------------------------------------------------------------------- tables
def _leaderboard(data: ReportData) -> tuple[list[str], list[dict[str, Any]], str]:
    names = [p.name for p in data.frame.params]
    by_number = {r.number: r for r in data.frame.rows}
    ranked = data.ranked()
    rows = []
    for rank, number in enumerate(ranked[:LEADERBOARD_ROWS], start=1):
        r = by_number[number]
        rows.append(
            dict(
                rank=rank,
                number=r.number,
                value=r.value,
                state=r.state,
                duration=r.duration_s,
                steps=r.steps,
                device=r.device,
                worker=r.worker,
                metrics=[r.metrics.get(m) for m in data.extra_metrics],
                params=[(r.params.get(n), _sort_key(r.params.get(n))) for n in names],
            )
        )
    note = ""
    if len(ranked) > LEADERBOARD_ROWS:
        note = f"Top {LEADERBOARD_ROWS} of {len(ranked):,} completed trials."
    return names, rows, note


def _trial_table(data: ReportData) -> tuple[list[dict[str, Any]], str]:
    """Rows of the all-trials table: every trial, or the latest :data:`TRIAL_ROWS` by
    number; and a note when some were left out."""
    names = [p.name for p in data.frame.params]
    rows = data.frame.rows
    shown = rows[-TRIAL_ROWS:]
    out = [
        dict(
            number=r.number,
            state=r.state,
            value=r.value,
            value_note=r.value_note if r.state in (COMPLETE, PRUNED) else "",
            duration=r.duration_s,
            steps=r.steps,
            worker=r.worker,
            metrics=[r.metrics.get(m) for m in data.extra_metrics],
            params=[(r.params.get(n), _sort_key(r.params.get(n))) for n in names],
        )
        for r in shown
    ]
    note = ""
    if len(rows) > len(shown):
        note = (f"The last {len(shown):,} of {len(rows):,} trials (by number) listed; "
                f"`hpo trials {data.name} --format csv` lists every one.")
    return out, note


def _sort_key(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return repr(float(value))
    return fmt_value(value)


def _failures(data: ReportData) -> tuple[list[dict[str, Any]], int]:
    bad = [r for r in data.frame.rows if r.state in (FAILED, INTERRUPTED)]
    out = []
    for r in bad[-FAILED_ROWS:]:
        text = mask_url(r.error or "(no error text recorded)")  # tracebacks may quote a URL
        if len(text) > ERROR_CHARS:
            text = f"… ({len(text) - ERROR_CHARS:,} characters cut)\n" + text[-ERROR_CHARS:]
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        summary = lines[-1] if lines else ""
        out.append(
            dict(
                number=r.number,
                state=r.state,
                worker=r.worker,
                device=r.device,
                when=r.ended or r.started,
                duration=r.duration_s,
                summary=summary[:200],
                error=text,
                params=r.params,
            )
        )
    return out, len(bad)


# ------------------------------------------------------------------------------- page
def figure_json(fig: go.Figure) -> str:
    """The figure as JSON, without its template (the page adds one shared copy)."""
    fig.layout.template = None
    return pio.to_json(fig, validate=False, remove_uids=True)


def render(data: ReportData) -> str:
    """The whole HTML page for ``data``."""
    sections = [
        history_section(data),
        curves_section(data),
        parallel_section(data),
        importance_section(data),
        slice_section(data),
        contour_section(data),
    ]
    timeline, usage = timeline_section(data)
    sections.append(timeline)
    plots = [s for s in sections if s.figure is not None]
    template = pio.templates[figs.TEMPLATE].to_plotly_json()
    blob = (
        "{"
        + ",".join(
            [
                f'"template":{json.dumps(template)}',
                '"figures":{'
                + ",".join(
                    f'"fig-{s.id}":{figure_json(s.figure)}'
                    for s in plots  # type: ignore[arg-type]
                )
                + "}",
                '"order":' + json.dumps([f"fig-{s.id}" for s in plots]),
            ]
        )
        + "}"
    )
    lb_params, lb_rows, lb_note = _leaderboard(data)
    trial_rows, trials_note = _trial_table(data)
    failures, n_failures = _failures(data)
    counts = [(st, data.counts.get(st, 0)) for st in STATE_ORDER]
    counts += [(st, n) for st, n in data.counts.items() if st not in STATE_ORDER]
    sweep = data.sweep
    downsampled = [(s.title, n) for s in sections if s.figure is not None for n in s.sampled]
    if len(lb_rows) and lb_note:
        downsampled.append(("Leaderboard", lb_note))
    if trials_note:
        downsampled.append(("Trials", trials_note))
    if n_failures > len(failures):
        downsampled.append(
            (
                "Failed trials",
                f"The last {len(failures)} of {n_failures:,} failed/interrupted trials listed.",
            )
        )
    html = _template().render(
        data=data,
        sweep=sweep,
        storage=mask_url(sweep.storage) if sweep.storage else "",
        counts=counts,
        total=len(data.frame),
        best=data.best,
        sections=sections,
        lb_params=lb_params,
        lb_rows=lb_rows,
        lb_note=lb_note,
        metric_cols=data.extra_metrics,
        trial_rows=trial_rows,
        trials_note=trials_note,
        failures=failures,
        n_failures=n_failures,
        usage=usage,
        downsampled=downsampled,
        config_text=config_text(sweep.config_yaml, sweep.config),
        versions=", ".join(f"{k} {v}" for k, v in (sweep.versions or {}).items()),
        figures_json=_markup(_script_json(blob)),
        plotly_js=_markup(plotly_js()),
        state_colors=figs.STATE_COLORS,
        running_state=RUNNING,
    )
    return html


def config_text(config_yaml: str | None, config: Any) -> str:
    """The sweep file as the report shows it: the stored text (else the stored config as
    JSON), with the password of every URL in it masked (sweeps recorded before hpo masked
    them may hold one)."""
    text = config_yaml or json.dumps(config, indent=2, default=str)
    storage = config.get("storage") if isinstance(config, dict) else None
    return mask_text(text, storage if isinstance(storage, str) else None)


def _markup(text: str) -> Any:
    from markupsafe import Markup

    return Markup(text)
