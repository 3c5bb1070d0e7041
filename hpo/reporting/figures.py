"""One function per figure of the report. Each takes plain data (numpy arrays, lists, the
small dataclasses of :mod:`hpo.reporting.data`) and returns a ``plotly.graph_objects.Figure``.

Big traces use WebGL (``scattergl``) and float32 arrays, which plotly serializes as compact
base64 typed arrays; the page swaps ``scattergl`` for SVG ``scatter`` where WebGL is missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hpo.reporting.data import (
    COMPLETE,
    FAILED,
    INTERRUPTED,
    PAUSED,
    PRUNED,
    RUNNING,
    STATE_ORDER,
    CurveSet,
    ParamInfo,
    TrialRow,
    WorkerUsage,
    fmt_duration,
)

STATE_COLORS = {
    COMPLETE: "#1f77b4",
    PRUNED: "#ff7f0e",
    FAILED: "#d62728",
    RUNNING: "#2ca02c",
    INTERRUPTED: "#7f7f7f",
    PAUSED: "#bcbd22",
}
STATE_SYMBOLS = {
    COMPLETE: "circle",
    PRUNED: "x",
    FAILED: "triangle-down",
    RUNNING: "star",
    INTERRUPTED: "diamond",
    PAUSED: "square",
}
PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#ff7f0e",
    "#393b79",
)
GL_POINTS = 1000  # traces with more points than this are drawn with WebGL
TEMPLATE = "plotly_white"
FONT = dict(family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size=12)


def _layout(fig: go.Figure, height: int = 420, **kw: object) -> go.Figure:
    settings: dict[str, object] = dict(
        template=TEMPLATE,
        height=height,
        margin=dict(l=60, r=20, t=30, b=50),
        font=FONT,
        hovermode="closest",
        legend=dict(orientation="h", yanchor="bottom", y=1.01, xanchor="left", x=0),
    )
    settings.update(kw)
    fig.update_layout(**settings)
    return fig


def _scatter(n: int) -> type[go.Scatter] | type[go.Scattergl]:
    return go.Scattergl if n > GL_POINTS else go.Scatter


def _f32(values: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def wants_log(values: np.ndarray) -> bool:
    """A log axis for positive values spread over 3+ decades (losses, perplexities)."""
    v = values[np.isfinite(values)]
    return bool(len(v) > 1 and v.min() > 0 and v.max() / v.min() >= 1000)


def _objective_title(objective: str, goal: str) -> str:
    return f"{objective} ({'higher' if goal == 'maximize' else 'lower'} is better)"


# ---------------------------------------------------------------------------- history
def history_figure(
    numbers: np.ndarray,
    values: np.ndarray,
    states: np.ndarray,
    *,
    objective: str,
    goal: str,
) -> go.Figure:
    """Objective per trial number, coloured by state, with the best-so-far line."""
    fig = go.Figure()
    ok = np.isfinite(values)
    for state in STATE_ORDER:
        m = ok & (states == state)
        if not m.any():
            continue
        n = int(m.sum())
        cls = _scatter(n)
        fig.add_trace(
            cls(
                x=numbers[m].astype(np.int32),
                y=values[m],
                mode="markers",
                name=f"{state} ({n:,})",
                marker=dict(
                    color=STATE_COLORS.get(state, "#555"),
                    size=6 if n < 2000 else 4,
                    symbol=STATE_SYMBOLS.get(state, "circle"),
                    opacity=0.85 if state == COMPLETE else 0.6,
                ),
                hovertemplate=f"trial #%{{x}}<br>{objective} %{{y:.6g}}<extra>{state}</extra>",
            )
        )
    m = ok & (states == COMPLETE)
    if m.any():
        order = np.argsort(numbers[m], kind="stable")
        xs, ys = numbers[m][order], values[m][order]
        best = np.maximum.accumulate(ys) if goal == "maximize" else np.minimum.accumulate(ys)
        keep = np.r_[True, best[1:] != best[:-1]]  # only where the best changes
        xb, yb = list(xs[keep]), list(best[keep])
        last = int(numbers.max()) if len(numbers) else int(xs[-1])
        if xb[-1] != last:
            xb.append(last)
            yb.append(yb[-1])
        fig.add_trace(
            go.Scatter(
                x=np.asarray(xb, dtype=np.int32),
                y=np.asarray(yb),
                mode="lines",
                line=dict(color="#111", width=2, shape="hv"),
                name="best so far",
                hovertemplate="best so far %{y:.6g}<extra>after #%{x}</extra>",
            )
        )
    _layout(fig, height=400)
    fig.update_xaxes(title_text="trial number")
    fig.update_yaxes(
        title_text=_objective_title(objective, goal), type="log" if wants_log(values) else "linear"
    )
    return fig


# ---------------------------------------------------------------------------- learning curves
def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def curves_figure(
    curves: CurveSet,
    rungs: Sequence[int],
    *,
    objective: str,
    goal: str,
    values_by_number: Mapping[int, float | None] | None = None,
) -> go.Figure:
    """Objective over steps per trial; best trials highlighted, pruned stops marked,
    ASHA/Hyperband rungs as vertical dashed lines."""
    fig = go.Figure()
    highlight = list(curves.highlight)
    hl = set(highlight)
    groups: dict[str, list] = {}
    for c in curves.curves:
        if c.number not in hl:
            groups.setdefault(c.state, []).append(c)
    n_bg = sum(len(v) for v in groups.values())
    alpha = 0.6 if n_bg < 30 else (0.35 if n_bg < 150 else 0.2)
    all_values = [c.values for c in curves.curves]
    for state in STATE_ORDER:
        items = groups.get(state)
        if not items:
            continue
        size = sum(len(c.steps) + 1 for c in items)
        xs = np.full(size, np.nan, dtype=np.float32)
        ys = np.full(size, np.nan, dtype=np.float32)
        ids = np.full(size, -1, dtype=np.int32)
        i = 0
        for c in items:
            k = len(c.steps)
            xs[i : i + k] = c.steps
            ys[i : i + k] = c.values
            ids[i : i + k] = c.number
            i += k + 1
        fig.add_trace(
            _scatter(size)(
                x=xs,
                y=ys,
                customdata=ids,
                mode="lines",
                connectgaps=False,
                name=f"{state} ({len(items):,} curve{'' if len(items) == 1 else 's'})",
                line=dict(color=_rgba(STATE_COLORS.get(state, "#555555"), alpha), width=1),
                hovertemplate=f"trial #%{{customdata}}<br>step %{{x}}<br>{objective} "
                f"%{{y:.6g}}<extra>{state}</extra>",
            )
        )
    by_number = {c.number: c for c in curves.curves}
    for rank, number in enumerate(highlight):
        c = by_number.get(number)
        if c is None:
            continue
        final = (values_by_number or {}).get(number)
        label = f"#{number}" + (f" = {final:.4g}" if final is not None else "")
        fig.add_trace(
            go.Scatter(
                x=c.steps.astype(np.int32),
                y=c.values,
                mode="lines",
                name=label,
                legendgroup="best",
                legendgrouptitle_text=(f"best {len(highlight)}" if rank == 0 else None),
                line=dict(color=PALETTE[rank % len(PALETTE)], width=2),
                hovertemplate=f"trial #{number}<br>step %{{x}}<br>{objective} "
                f"%{{y:.6g}}<extra>best #{rank + 1}</extra>",
            )
        )
    if curves.stops:
        numbers = np.array([s[0] for s in curves.stops], dtype=np.int32)
        xs = _f32([s[1] for s in curves.stops])
        ys = _f32([s[2] for s in curves.stops])
        fig.add_trace(
            _scatter(len(xs))(
                x=xs,
                y=ys,
                customdata=numbers,
                mode="markers",
                name=f"pruned here ({len(xs):,})",
                marker=dict(
                    symbol="x",
                    size=7,
                    color=STATE_COLORS[PRUNED],
                    line=dict(width=1, color="#7a3500"),
                ),
                hovertemplate="trial #%{customdata} pruned at step %{x}<br>"
                f"{objective} %{{y:.6g}}<extra>pruned</extra>",
            )
        )
        all_values.append(ys)
    for k, step in enumerate(rungs):
        fig.add_shape(
            type="line",
            x0=step,
            x1=step,
            xref="x",
            y0=0,
            y1=1,
            yref="paper",
            line=dict(color="#555", width=1, dash="dash"),
            layer="below",
        )
        fig.add_annotation(
            x=step,
            y=1,
            xref="x",
            yref="paper",
            text=f"rung {k} (step {step})",
            showarrow=False,
            textangle=-90,
            xanchor="right",
            yanchor="top",
            font=dict(size=10, color="#555"),
        )
    values = np.concatenate(all_values) if all_values else np.array([])
    _layout(
        fig,
        height=480,
        margin=dict(l=60, r=20, t=30, b=50),
        legend=dict(
            orientation="v",
            x=1.01,
            y=1,
            xanchor="left",
            yanchor="top",
            font=dict(size=11),
            groupclick="toggleitem",
        ),
    )
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text=objective, type="log" if wants_log(values) else "linear")
    return fig


def metric_curves_figure(
    curve_sets: Mapping[str, CurveSet],
    rungs: Sequence[int],
    *,
    goal: str,
    values_by_metric: Mapping[str, Mapping[int, float | None]] | None = None,
) -> go.Figure:
    """Learning curves of several metrics in one figure, one metric shown at a time: a
    dropdown (plotly ``updatemenus``) switches the traces, the y title and the log/linear
    axis. The first metric of ``curve_sets`` is shown first. One metric: plain curves."""
    names = list(curve_sets)
    values_by_metric = values_by_metric or {}
    parts = [
        curves_figure(curve_sets[m], rungs, objective=m, goal=goal,
                      values_by_number=values_by_metric.get(m))
        for m in names
    ]
    if len(parts) == 1:
        return parts[0]
    fig = go.Figure(layout=parts[0].layout)
    owner: list[int] = []
    for k, part in enumerate(parts):
        for trace in part.data:
            trace.visible = k == 0
            fig.add_trace(trace)
            owner.append(k)
    buttons = []
    for k, m in enumerate(names):
        axis = parts[k].layout.yaxis
        buttons.append(dict(
            label=_short(m, 40),
            method="update",
            args=[{"visible": [o == k for o in owner]},
                  {"yaxis.title.text": m, "yaxis.type": axis.type or "linear"}],
        ))
    fig.update_layout(
        updatemenus=[dict(
            type="dropdown", buttons=buttons, active=0, direction="down", showactive=True,
            x=0, xanchor="left", y=1.02, yanchor="bottom", pad=dict(r=4, t=0, b=0),
            font=dict(size=12),
        )],
        margin=dict(l=60, r=20, t=60, b=50),
    )
    return fig


# ---------------------------------------------------------------------------- axis encoding
def _decade_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    """Tick positions (log10 space) and labels for a log-scaled axis from lo..hi (log10):
    decades, or 1-2-5 steps when the range spans less than ~3 decades."""
    vals: list[float] = []
    for mantissas in ((1,), (1, 2, 5), (1, 1.5, 2, 3, 5, 7)):
        vals = sorted(
            math.log10(m) + e
            for e in range(math.floor(lo) - 1, math.ceil(hi) + 1)
            for m in mantissas
            if lo - 1e-9 <= math.log10(m) + e <= hi + 1e-9
        )
        if len(vals) >= 3:
            break
    if len(vals) > 10:
        vals = vals[:: math.ceil(len(vals) / 10)]
    if len(vals) < 2:
        vals = [lo, hi] if hi > lo else [lo]
    return vals, [f"{10**v:.3g}" for v in vals]


def _short(text: str, n: int = 18) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def encode_axis(info: ParamInfo, column: np.ndarray) -> tuple[np.ndarray, dict]:
    """Plot-space values (log10 for log params, category codes) and axis tick settings."""
    if info.numeric and info.log:
        v = np.where(column > 0, np.log10(np.where(column > 0, column, 1.0)), np.nan)
        ok = v[np.isfinite(v)]
        if len(ok):
            tv, tt = _decade_ticks(float(ok.min()), float(ok.max()))
            return v, dict(tickvals=tv, ticktext=tt, title=f"{info.name} (log)")
        return v, dict(title=f"{info.name} (log)")
    if not info.numeric:
        tickvals, ticktext = category_ticks(info.categories)
        return column, dict(tickvals=tickvals, ticktext=ticktext, title=info.name)
    return column, dict(title=info.name)


def category_ticks(
    categories: Sequence[str], n: int = 18, most: int = 30
) -> tuple[list[int], list[str]]:
    """Tick positions and (shortened) labels of a categorical axis; at most ``most`` ticks."""
    step = max(1, math.ceil(len(categories) / most))
    idx = list(range(0, len(categories), step))
    return idx, [_short(categories[i], n) for i in idx]


# ---------------------------------------------------------------------------- parallel coords
def parallel_figure(
    columns: Sequence[tuple[ParamInfo, np.ndarray]],
    values: np.ndarray,
    *,
    objective: str,
    goal: str,
) -> go.Figure:
    """Parameters -> objective, one line per trial, coloured by the objective."""
    dims = []
    for info, column in columns:
        v, axis = encode_axis(info, column)
        v = np.asarray(v, dtype=np.float64)
        missing = ~np.isfinite(v)
        tickvals = axis.get("tickvals")
        ticktext = axis.get("ticktext")
        if missing.all():
            continue
        if missing.any():  # conditional parameter: put "n/a" just below the range
            lo, hi = np.nanmin(v), np.nanmax(v)
            pad = (hi - lo) * 0.12 or 1.0
            v = np.where(missing, lo - pad, v)
            if tickvals is None:
                tickvals = list(np.linspace(lo, hi, 5))
                ticktext = [f"{t:.3g}" for t in tickvals]
            tickvals = [lo - pad, *tickvals]
            ticktext = ["n/a", *ticktext]
        dim = dict(label=_short(axis["title"], 24), values=_f32(v))
        if tickvals is not None:
            dim.update(tickvals=tickvals, ticktext=ticktext)
        dims.append(dim)
    y = _f32(values)
    dims.append(dict(label=_short(objective, 24), values=y))
    fig = go.Figure(
        go.Parcoords(
            dimensions=dims,
            line=dict(
                color=y,
                colorscale="Viridis",
                reversescale=goal != "maximize",
                showscale=True,
                colorbar=dict(title=dict(text=_short(objective, 14))),
            ),
            labelangle=-25,
            labelside="top",
            labelfont=dict(size=11),
            tickfont=dict(size=9),
            rangefont=dict(size=9, color="#888"),
        )
    )
    _layout(fig, height=500, margin=dict(l=70, r=40, t=100, b=30))
    return fig


# ---------------------------------------------------------------------------- importances
def importance_figure(importances: Mapping[str, float]) -> go.Figure:
    """Horizontal bars, most important on top."""
    items = sorted(importances.items(), key=lambda kv: kv[1])
    names = [k for k, _ in items]
    vals = [v for _, v in items]
    fig = go.Figure(
        go.Bar(
            x=vals,
            y=names,
            orientation="h",
            marker_color="#1f77b4",
            text=[f"{v:.1%}" for v in vals],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    _layout(fig, height=max(220, 40 + 24 * len(names)), margin=dict(l=160, r=60, t=20, b=40))
    fig.update_xaxes(title_text="importance (fraction of variance)", rangemode="tozero")
    fig.update_yaxes(automargin=True)
    return fig


# ---------------------------------------------------------------------------- slices
def slice_figure(
    columns: Sequence[tuple[ParamInfo, np.ndarray]],
    values: np.ndarray,
    numbers: np.ndarray,
    *,
    objective: str,
    goal: str,
    cols: int = 4,
) -> go.Figure:
    """Objective against each parameter (one panel each), coloured by trial number."""
    n = len(columns)
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    titles = [_short(info.name, 34) for info, _ in columns]
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=titles,
        horizontal_spacing=0.06,
        vertical_spacing=min(0.15, 0.35 / rows),
        shared_yaxes=True,
    )
    ylog = wants_log(values)
    rng = np.random.default_rng(0)
    cls = _scatter(len(values))
    y = values if cls is go.Scatter else _f32(values)
    nums = numbers.astype(np.int32)
    for k, (info, column) in enumerate(columns):
        r, c = divmod(k, cols)
        x = np.asarray(column, dtype=np.float64)
        axis: dict = {}
        if not info.numeric:
            x = x + rng.uniform(-0.18, 0.18, len(x))  # jitter categories
            tickvals, ticktext = category_ticks(info.categories, 12, 12)
            axis = dict(tickvals=tickvals, ticktext=ticktext)
        fig.add_trace(
            cls(
                x=x if cls is go.Scatter else _f32(x),
                y=y,
                customdata=nums,
                mode="markers",
                marker=dict(
                    size=4 if len(values) > 500 else 6,
                    color=nums,
                    coloraxis="coloraxis",
                    opacity=0.75,
                ),
                showlegend=False,
                name=info.name,
                hovertemplate=f"trial #%{{customdata}}<br>{info.name} %{{x:.4g}}<br>{objective} "
                "%{y:.6g}<extra></extra>",
            ),
            row=r + 1,
            col=c + 1,
        )
        fig.update_xaxes(
            type="log" if info.log else "linear", exponentformat="e", row=r + 1, col=c + 1, **axis
        )
    fig.update_yaxes(type="log" if ylog else "linear")
    for r in range(rows):
        fig.update_yaxes(title_text=_short(objective, 20), row=r + 1, col=1)
    fig.update_layout(
        coloraxis=dict(
            colorscale=[[0, "#9ecae1"], [1, "#08306b"]],
            colorbar=dict(
                title=dict(text="trial #"),
                thickness=12,
                len=min(1.0, 400 / (60 + 210 * rows)),
                y=1,
                yanchor="top",
            ),
        )
    )
    for a in fig.layout.annotations:
        a.font = dict(size=11)
    _layout(fig, height=60 + 210 * rows, margin=dict(l=60, r=20, t=40, b=40))
    return fig


# ---------------------------------------------------------------------------- contour
def contour_figure(
    x_info: ParamInfo,
    x: np.ndarray,
    y_info: ParamInfo,
    y: np.ndarray,
    values: np.ndarray,
    *,
    objective: str,
    goal: str,
    bins: int | None = None,
    max_points: int = 2000,
) -> tuple[go.Figure, str]:
    """Binned mean objective over the two parameters (contour; a heatmap when one is
    categorical), with trial markers on top. Returns the figure and a note."""
    xv, xaxis = encode_axis(x_info, x)
    yv, yaxis = encode_axis(y_info, y)
    ok = np.isfinite(xv) & np.isfinite(yv) & np.isfinite(values)
    xv, yv, z = xv[ok], yv[ok], values[ok]
    n = len(z)
    nb = bins or int(min(30, max(5, round(math.sqrt(n / 2)))))

    def edges(info: ParamInfo, v: np.ndarray) -> np.ndarray:
        if not info.numeric:
            return np.arange(len(info.categories) + 1) - 0.5
        lo, hi = float(v.min()), float(v.max())
        if hi <= lo:
            hi = lo + 1.0
        return np.linspace(lo, hi, nb + 1)

    ex, ey = edges(x_info, xv), edges(y_info, yv)
    ix = np.clip(np.searchsorted(ex, xv, side="right") - 1, 0, len(ex) - 2)
    iy = np.clip(np.searchsorted(ey, yv, side="right") - 1, 0, len(ey) - 2)
    shape = (len(ey) - 1, len(ex) - 1)
    total = np.zeros(shape)
    count = np.zeros(shape)
    np.add.at(total, (iy, ix), z)
    np.add.at(count, (iy, ix), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        grid = np.where(count > 0, total / count, np.nan)
    cx = (ex[:-1] + ex[1:]) / 2
    cy = (ey[:-1] + ey[1:]) / 2
    colors = dict(
        colorscale="Viridis",
        reversescale=goal != "maximize",
        colorbar=dict(title=dict(text=f"mean {_short(objective, 12)}")),
    )
    categorical = not (x_info.numeric and y_info.numeric)
    fig = go.Figure()
    hover = (
        f"{x_info.name} %{{x:.4g}}<br>{y_info.name} %{{y:.4g}}<br>mean {objective} "
        "%{z:.6g}<extra></extra>"
    )
    if categorical:
        fig.add_trace(
            go.Heatmap(x=cx, y=cy, z=grid, hoverongaps=False, hovertemplate=hover, **colors)
        )
    else:  # pad with the edge bins so the filled area reaches the data range
        fig.add_trace(
            go.Contour(
                x=np.r_[ex[0], cx, ex[-1]],
                y=np.r_[ey[0], cy, ey[-1]],
                z=np.pad(grid, 1, mode="edge"),
                connectgaps=True,
                ncontours=15,
                line=dict(width=0.5),
                hovertemplate=hover,
                **colors,
            )
        )
    shown = np.arange(n)
    if n > max_points:
        shown = np.sort(np.random.default_rng(0).choice(n, max_points, replace=False))
    jitter = np.random.default_rng(1)
    mx, my = xv[shown], yv[shown]
    if not x_info.numeric:
        mx = mx + jitter.uniform(-0.3, 0.3, len(mx))
    if not y_info.numeric:
        my = my + jitter.uniform(-0.3, 0.3, len(my))
    fig.add_trace(
        go.Scatter(
            x=_f32(mx),
            y=_f32(my),
            mode="markers",
            name="trials",
            marker=dict(size=4, color="rgba(255,255,255,0.8)", line=dict(width=0.5, color="#222")),
            hoverinfo="skip",
            showlegend=False,
        )
    )
    _layout(fig, height=520)
    fig.update_xaxes(
        title_text=xaxis["title"],
        tickvals=xaxis.get("tickvals"),
        ticktext=xaxis.get("ticktext"),
        range=[ex[0], ex[-1]],
    )
    fig.update_yaxes(
        title_text=yaxis["title"],
        tickvals=yaxis.get("tickvals"),
        ticktext=yaxis.get("ticktext"),
        range=[ey[0], ey[-1]],
    )
    empty = int((count == 0).sum())
    note = (
        f"Mean {objective} of the {n:,} completed trials in each of {shape[1]}×{shape[0]} "
        f"bins ({empty} empty bins{' interpolated' if not categorical else ' left blank'})"
        + (
            f"; {len(shown):,} of {n:,} trials drawn as markers (fixed random sample)"
            if len(shown) < n
            else ""
        )
        + "."
    )
    return fig, note


# ---------------------------------------------------------------------------- timeline
def _ms(t: datetime) -> float:
    return t.timestamp() * 1000.0


def timeline_figure(
    rows: Sequence[TrialRow],
    usage: Sequence[WorkerUsage],
    *,
    end: datetime,
) -> go.Figure:
    """Trials as bars per worker over time (Gantt); idle time is the thin grey line between
    bars; the y labels carry each worker's utilization."""
    index = {u.worker: i for i, u in enumerate(usage)}
    n_workers = max(1, len(usage))
    width = float(max(3, min(16, 420 / n_workers)))
    fig = go.Figure()
    # idle baseline: from the worker's first start to the end of the sweep
    bx = np.full(3 * len(usage), np.nan)
    by = np.full(3 * len(usage), np.nan)
    for i, u in enumerate(usage):
        bx[3 * i : 3 * i + 2] = [_ms(u.first), _ms(max(end, u.last))]
        by[3 * i : 3 * i + 2] = [i, i]
    fig.add_trace(
        go.Scatter(
            x=bx,
            y=by,
            mode="lines",
            line=dict(color="#c8c8c8", width=1),
            name="idle",
            hoverinfo="skip",
            connectgaps=False,
        )
    )
    for state in STATE_ORDER:
        items = [
            r for r in rows if r.state == state and r.started is not None and r.worker in index
        ]
        if not items:
            continue
        k = len(items)
        xs = np.full(3 * k, np.nan)
        ys = np.full(3 * k, np.nan, dtype=np.float32)
        cd = np.full((3 * k, 2), np.nan, dtype=np.float32)
        for j, r in enumerate(items):
            stop = r.ended or end
            if stop <= r.started:  # zero-length: still show a sliver
                x0, x1 = _ms(r.started), _ms(r.started) + 1.0
            else:
                x0, x1 = _ms(r.started), _ms(stop)
            xs[3 * j : 3 * j + 2] = [x0, x1]
            ys[3 * j : 3 * j + 2] = index[r.worker]
            dur = r.duration_s if r.duration_s is not None else (x1 - x0) / 1000.0
            cd[3 * j : 3 * j + 2] = [r.number, dur]
        label = state + (" (until now)" if state == RUNNING else "")
        fig.add_trace(
            _scatter(3 * k)(
                x=xs,
                y=ys,
                customdata=cd,
                mode="lines",
                connectgaps=False,
                name=f"{label} ({k:,})",
                line=dict(color=STATE_COLORS.get(state, "#555"), width=width),
                hovertemplate="trial #%{customdata[0]}<br>%{customdata[1]:.1f} s<br>%{x}"
                f"<extra>{state}</extra>",
            )
        )
    ticktext = [f"{_short(u.worker, 36)} · {u.utilization:.0%}" for u in usage]
    height = int(min(1600, max(260, 110 + (width + 8) * n_workers)))
    _layout(fig, height=height, margin=dict(l=40, r=20, t=40, b=50))
    fig.update_xaxes(type="date", title_text="time (UTC)")
    fig.update_yaxes(
        tickvals=list(range(len(usage))),
        ticktext=ticktext,
        automargin=True,
        showgrid=False,
        zeroline=False,
        range=[len(usage) - 0.5, -0.5],
    )
    return fig


def usage_rows(usage: Sequence[WorkerUsage]) -> list[dict[str, str]]:
    """Table rows for the utilization table under the timeline."""
    return [
        dict(
            worker=u.worker,
            trials=f"{u.trials:,}",
            busy=fmt_duration(u.busy_s),
            utilization=f"{u.utilization:.0%}",
            gap=fmt_duration(u.longest_gap_s),
        )
        for u in usage
    ]
