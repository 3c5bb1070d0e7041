"""The HTML report: data shaping, figure builders, the page, a real browser, and scale.

Stores are real (SQLite in tmp_path, PostgreSQL where storage matters) and written through
``TrackingStore``; the large and browser stores come from benchmarks/bench_report.py's
simulator. Browser tests use Debian's chromium (/usr/bin/chromium, or $HPO_TEST_CHROMIUM):
skipped with a printed reason when it is missing, failed instead when $CI is set.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from hpo.reporting import build_report, render_html
from hpo.reporting import data as rdata
from hpo.reporting import figures as rfig
from hpo.reporting import page as rpage
from hpo.tracking import TrackingStore
from hpo.tracking import schema as tschema

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("HPO_TEST_CHROMIUM", "/usr/bin/chromium")  # Debian's chromium


def _bench():
    spec = importlib.util.spec_from_file_location(
        "bench_report", ROOT / "benchmarks" / "bench_report.py"
    )
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


CONFIG = {
    "method": "tpe",
    "metric": {"name": "loss", "goal": "minimize"},
    "parameters": {
        "opt": {
            "parameters": {
                "lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1},
                "name": {"values": ["adam", "sgd"]},
            }
        },
        "layers": {"values": [[64], [64, 64], [128, 64]]},
        "use_bias": {"values": [True, False]},
        "dropout": {"distribution": "uniform", "min": 0.0, "max": 0.5},
        "seed": {"value": 7},
    },
    "early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 3, "max_iter": 18},
}


def _new_sweep(url: str, name: str, config: dict | None = None) -> TrackingStore:
    store = TrackingStore(url)
    store.create_sweep(
        name,
        config=config or CONFIG,
        config_yaml="method: tpe\n",
        objective="loss",
        goal="minimize",
        method="tpe",
        pruner="HyperbandPruner(min_resource=2, reduction_factor=3)",
        storage=url,
    )
    return store


def _backdate(url: str, name: str, start: datetime) -> None:
    """Spread the trials over time like a 3-worker sweep (the API stamps 'now')."""
    engine = sa.create_engine(url)
    tr, sw = tschema.trials, tschema.sweeps
    with engine.begin() as conn:
        sweep_id = conn.scalar(sa.select(sw.c.id).where(sw.c.name == name))
        conn.execute(sa.update(sw).where(sw.c.id == sweep_id).values(started=start))
        rows = conn.execute(
            sa.select(tr.c.id, tr.c.number, tr.c.state)
            .where(tr.c.sweep_id == sweep_id)
            .order_by(tr.c.number)
        ).all()
        free = [start] * 3
        for row in rows:
            w = row.number % 3
            begin = free[w] + timedelta(seconds=5 + row.number % 4)
            dur = 60.0 + 7 * (row.number % 5)
            end = None if row.state == "running" else begin + timedelta(seconds=dur)
            free[w] = begin + timedelta(seconds=dur)
            conn.execute(
                sa.update(tr)
                .where(tr.c.id == row.id)
                .values(started=begin, ended=end, duration_s=None if end is None else dur)
            )
            conn.execute(
                sa.update(tschema.metrics)
                .where(tschema.metrics.c.trial_id == row.id)
                .values(logged_at=begin)
            )
    engine.dispose()


def mixed_sweep(
    url: str, name: str = "mixed", *, finish: bool = False, start: datetime | None = None
) -> TrackingStore:
    """24 trials through the TrackingStore API: complete, pruned, failed, interrupted and
    running; nested, categorical, list-valued and boolean params; a NaN value."""
    store = _new_sweep(url, name)
    rng = np.random.default_rng(3)
    for n in range(24):
        lr = float(10 ** rng.uniform(-5, -1))
        params = {
            "opt": {"lr": lr, "name": ["adam", "sgd"][n % 2]},
            "layers": [[64], [64, 64], [128, 64]][n % 3],
            "use_bias": n % 4 == 0,
            "dropout": float(rng.uniform(0, 0.5)),
            "seed": 7,
        }
        store.start_trial(name, n, params)
        store.set_trial_worker(
            name, n, host="node-a", pid=100 + n % 3, worker=f"w{n % 3}", device=f"cuda:{n % 3}"
        )
        final = abs(math.log10(lr) + 3) + params["dropout"]
        last = 18 if n % 5 else 2 + 4 * (n % 3)  # every 5th trial stops early
        for step in range(1, last + 1, 1 if n % 2 else 2):
            store.log_metrics(name, n, step, {"loss": final + 2.0 / step, "acc": 0.1 * step})
        if n == 22:
            continue  # still running
        if n == 4:
            store.end_trial(
                name,
                n,
                "failed",
                value=None,
                error='Traceback (most recent call last):\n  File "t.py"\n'
                "RuntimeError: CUDA out of memory <b>boom</b>",
            )
        elif n == 9:
            store.end_trial(name, n, "interrupted", value=None, error="coordinator died")
        elif n % 5 == 0:
            store.end_trial(name, n, "pruned", value=final + 2.0 / last)
        elif n == 7:
            store.end_trial(name, n, "complete", value=float("nan"))
        else:
            store.end_trial(
                name, n, "complete", value=final + 2.0 / 18, metrics={"loss": final + 2.0 / 18}
            )
    if finish:
        store.end_sweep(name, "finished")
    _backdate(url, name, start or datetime.now(UTC) - timedelta(minutes=20))
    return store


@pytest.fixture
def mixed(sqlite_url):
    store = mixed_sweep(sqlite_url)
    yield sqlite_url, store
    store.close()


def _load(url: str, name: str) -> rdata.ReportData:
    store = TrackingStore(url)
    try:
        data = rdata.load(store, name)
    finally:
        store.close()
    data.importances, data.importance_note = rdata.importances(data, url)
    return data


# ------------------------------------------------------------------------------ data
def test_flatten_and_param_kinds():
    assert rdata.flatten({"a": {"b": 1, "c": {"d": "x"}}, "e": [1, 2]}) == {
        "a.b": 1,
        "a.c.d": "x",
        "e": [1, 2],
    }
    rows = [
        rdata.TrialRow(
            number=i,
            state="complete",
            value=float(i),
            value_note="",
            params=rdata.flatten(p),
            started=None,
            ended=None,
            duration_s=None,
            worker="w",
            device="",
            steps=None,
            error=None,
            retry_of=None,
        )
        for i, p in enumerate(
            [
                {"opt": {"lr": 1e-4, "name": "adam"}, "flag": True, "k": [1], "c": 3, "n": 1},
                {"opt": {"lr": 1e-2, "name": "sgd"}, "flag": False, "k": [1, 2], "c": 3},
                {"opt": {"lr": 1e-3, "name": "sgd"}, "flag": True, "k": [1], "c": 3, "n": 2},
            ]
        )
    ]
    infos = {p.name: p for p in rdata.param_infos(rows, CONFIG)}
    assert "c" not in infos  # constant
    assert infos["opt.lr"].numeric and infos["opt.lr"].log  # from the config
    assert not infos["opt.name"].numeric and infos["opt.name"].categories == ("adam", "sgd")
    assert not infos["flag"].numeric and set(infos["flag"].categories) == {"true", "false"}
    assert infos["k"].categories == ("[1]", "[1,2]")
    assert infos["n"].present == 2 and not infos["n"].log  # conditional: missing in one trial
    frame = rdata.TrialFrame(rows, list(infos.values()))
    assert np.isnan(frame.column("n")[1]) and frame.column("opt.name").tolist() == [0, 1, 1]


def test_load_shapes_a_mixed_store(mixed):
    url, _ = mixed
    data = _load(url, "mixed")
    assert data.running and len(data.frame) == 24
    assert data.counts["running"] == 1 and data.counts["failed"] == 1
    assert data.counts["interrupted"] == 1 and data.counts["pruned"] == 5
    assert data.best is not None and data.best.value is not None
    nan_row = next(r for r in data.frame.rows if r.number == 7)
    assert nan_row.value is None and nan_row.state == "complete"
    assert {p.name for p in data.frame.params} == {
        "opt.lr",
        "opt.name",
        "layers",
        "use_bias",
        "dropout",
    }
    # hyperband: bracket-0 rungs 2*3^k up to max_iter, and the note says which bracket
    assert data.rungs.steps == [2, 6, 18] and "bracket 0" in data.rungs.note
    # every trial that reported the objective has a curve; pruned stops marked
    assert data.curves.total == 24
    pruned = {r.number for r in data.frame.rows if r.state == "pruned"}
    assert {s[0] for s in data.curves.stops} == pruned
    # no Optuna study in this storage: importances from distributions inferred from tracking
    assert data.importances and "no Optuna study" in data.importance_note
    assert set(data.importances) <= {p.name for p in data.frame.params}


def test_curve_downsampling_is_deterministic_and_said(mixed):
    url, _ = mixed
    data = _load(url, "mixed")
    store = TrackingStore(url)
    metrics = store.metrics("mixed")
    store.close()
    a = rdata.shape_curves(
        metrics, "loss", data.frame, "minimize", top=3, max_curves=8, max_points=5
    )
    b = rdata.shape_curves(
        metrics, "loss", data.frame, "minimize", top=3, max_curves=8, max_points=5
    )
    assert [c.number for c in a.curves] == [c.number for c in b.curves]
    assert len(a.curves) == 8 and set(a.highlight) <= {c.number for c in a.curves}
    assert a.highlight == data.ranked()[:3]
    assert a.bin_width == 4 and all(len(c.steps) <= 6 for c in a.curves)
    assert all(
        c.steps[-1] == full.steps[-1]
        for c in a.curves
        for full in [
            next(
                x
                for x in rdata.shape_curves(metrics, "loss", data.frame, "minimize").curves
                if x.number == c.number
            )
        ]
    )
    assert "8 of 24 learning curves" in a.note and "grid of 4 steps" in a.note


def test_pick_rows_keeps_the_best_and_a_fixed_sample():
    rows = [
        rdata.TrialRow(
            number=i,
            state="complete",
            value=float(i),
            value_note="",
            params={"x": float(i)},
            started=None,
            ended=None,
            duration_s=None,
            worker="w",
            device="",
            steps=None,
            error=None,
            retry_of=None,
        )
        for i in range(100)
    ]
    frame = rdata.TrialFrame(rows, rdata.param_infos(rows, {}))
    idx, note = rdata.pick_rows(frame, 20, "minimize")
    assert len(idx) == 20 and set(range(5)) <= set(frame.number[idx].tolist())
    assert idx.tolist() == rdata.pick_rows(frame, 20, "minimize")[0].tolist()
    assert "20 of 100" in note
    idx, note = rdata.pick_rows(frame, 200, "maximize")
    assert len(idx) == 100 and note == ""


def test_worker_usage_busy_gaps_and_utilization():
    t0 = datetime(2025, 1, 1, tzinfo=UTC)

    def row(n, worker, a, b):
        return rdata.TrialRow(
            number=n,
            state="complete",
            value=1.0,
            value_note="",
            params={},
            started=t0 + timedelta(seconds=a),
            ended=t0 + timedelta(seconds=b),
            duration_s=b - a,
            worker=worker,
            device="",
            steps=None,
            error=None,
            retry_of=None,
        )

    usage = rdata.worker_usage(
        [row(0, "w10", 0, 50), row(1, "w2", 0, 40), row(2, "w2", 60, 100), row(3, "w2", 90, 95)],
        t0,
        t0 + timedelta(seconds=100),
    )
    assert [u.worker for u in usage] == ["w2", "w10"]
    w2 = usage[0]
    assert w2.busy_s == pytest.approx(80) and w2.longest_gap_s == pytest.approx(20)
    assert w2.utilization == pytest.approx(0.8) and usage[1].utilization == pytest.approx(0.5)


# ------------------------------------------------------------------------------ figures
def test_figure_builders_on_a_mixed_store(mixed):
    url, _ = mixed
    data = _load(url, "mixed")
    f = data.frame

    hist = rfig.history_figure(f.number, f.value, f.state, objective="loss", goal="minimize")
    names = [t.name for t in hist.data]
    assert any(n.startswith("complete") for n in names) and "best so far" in names
    assert any(n.startswith("pruned") for n in names)
    best = next(t for t in hist.data if t.name == "best so far")
    assert np.all(np.diff(np.asarray(best.y, dtype=float)) <= 0)  # never gets worse

    curves = rfig.curves_figure(data.curves, data.rungs.steps, objective="loss", goal="minimize")
    stops = next(t for t in curves.data if (t.name or "").startswith("pruned here"))
    assert len(stops.x) == data.counts["pruned"]
    assert len(curves.layout.shapes) == 3  # one dashed line per rung
    assert any((t.name or "").startswith("running") for t in curves.data)

    cols = [(f.param(p.name), f.column(p.name)) for p in f.params]
    m = f.mask("complete", with_value=True)
    par = rfig.parallel_figure(
        [(i, c[m]) for i, c in cols], f.value[m], objective="loss", goal="minimize"
    )
    dims = par.data[0].dimensions
    assert len(dims) == len(cols) + 1 and dims[-1].label == "loss"
    cat = next(d for d in dims if d.label == "layers")
    assert list(cat.ticktext) == ["[64]", "[64,64]", "[128,64]"]
    assert next(d for d in dims if d.label.startswith("opt.lr")).label == "opt.lr (log)"

    imp = rfig.importance_figure(data.importances)
    assert imp.data[0].orientation == "h" and len(imp.data[0].y) == len(data.importances)

    sl = rfig.slice_figure(
        [(i, c[m]) for i, c in cols], f.value[m], f.number[m], objective="loss", goal="minimize"
    )
    assert len(sl.data) == len(cols)

    con, note = rfig.contour_figure(
        f.param("opt.lr"),
        f.column("opt.lr")[m],
        f.param("dropout"),
        f.column("dropout")[m],
        f.value[m],
        objective="loss",
        goal="minimize",
    )
    assert con.data[0].type == "contour" and "bins" in note
    heat, _ = rfig.contour_figure(
        f.param("opt.name"),
        f.column("opt.name")[m],
        f.param("dropout"),
        f.column("dropout")[m],
        f.value[m],
        objective="loss",
        goal="minimize",
    )
    assert heat.data[0].type == "heatmap"  # a categorical axis: bins are the categories

    rows = [r for r in f.rows if r.started]
    usage = rdata.worker_usage(rows, data.sweep.started, data.end)
    tl = rfig.timeline_figure(rows, usage, end=data.end)
    assert {u.worker for u in usage} == {"w0", "w1", "w2"}
    assert any((t.name or "").startswith("running") for t in tl.data)
    assert all(re.search(r" · \d+%$", t) for t in tl.layout.yaxis.ticktext)


def test_webgl_for_big_traces_svg_for_small():
    n = 3000
    numbers = np.arange(n)
    values = np.random.default_rng(0).uniform(1, 2, n)
    states = np.array(["complete"] * n, dtype=object)
    big = rfig.history_figure(numbers, values, states, objective="loss", goal="minimize")
    assert big.data[0].type == "scattergl"
    small = rfig.history_figure(
        numbers[:50], values[:50], states[:50], objective="loss", goal="minimize"
    )
    assert small.data[0].type == "scatter"


# ------------------------------------------------------------------------------ the page
def _plotly_marker() -> str:
    js = rpage.plotly_js()
    return js[len(js) // 2 : len(js) // 2 + 80]  # a stretch of plotly.js's own text


def assert_self_contained(html: str) -> None:
    assert html.count(_plotly_marker()) == 1, "plotly.js must be inline exactly once"
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.I), "no external scripts"
    assert not re.search(r"<link[^>]*\bhref\s*=\s*[\"']?https?:", html, re.I)
    assert not re.search(r"<(img|iframe)[^>]*\bsrc\s*=\s*[\"']?https?:", html, re.I)


def _figures(html: str) -> dict:
    blob = re.search(r'<script type="application/json" id="hpo-figures">(.*?)</script>', html, re.S)
    assert blob
    return json.loads(blob.group(1))


def test_page_is_one_self_contained_file(mixed, tmp_path):
    url, _ = mixed
    out = build_report("mixed", url, tmp_path / "sub" / "r.html")
    assert out == tmp_path / "sub" / "r.html" and out.exists()
    html = out.read_text("utf-8")
    assert_self_contained(html)
    spec = _figures(html)
    assert spec["order"] == [
        "fig-history",
        "fig-curves",
        "fig-parallel",
        "fig-importance",
        "fig-slice",
        "fig-contour",
        "fig-timeline",
    ]
    for fid in spec["order"]:
        assert f'id="{fid}"' in html and "template" not in spec["figures"][fid]["layout"]
    assert "Partial report" in html and "still running" in html  # one trial still running
    assert "RuntimeError: CUDA out of memory &lt;b&gt;boom&lt;/b&gt;" in html  # escaped
    assert '<details class="failure">' in html and "coordinator died" in html
    assert "rung" in html and "bracket 0" in html
    assert 'class="sortable"' in html and "aria-sort" in html


def test_maximize_goal(sqlite_url):
    store = TrackingStore(sqlite_url)
    store.create_sweep(
        "max",
        config={"metric": {"name": "acc", "goal": "maximize"}},
        config_yaml=None,
        objective="acc",
        goal="maximize",
        method="random",
        pruner="none",
        storage=sqlite_url,
    )
    for n, acc in enumerate([0.5, 0.7, 0.6, 0.9, 0.8]):
        store.start_trial("max", n, {"x": float(n), "k": "ab"[n % 2]})
        store.end_trial("max", n, "complete", value=acc)
    store.end_sweep("max", "finished")
    store.close()
    data = _load(sqlite_url, "max")
    assert data.goal == "maximize" and data.best.number == 3 and data.ranked()[:2] == [3, 4]
    f = data.frame
    hist = rfig.history_figure(f.number, f.value, f.state, objective="acc", goal="maximize")
    best = next(t for t in hist.data if t.name == "best so far")
    assert list(np.asarray(best.y, dtype=float)) == [0.5, 0.7, 0.9, 0.9]
    html = render_html("max", sqlite_url)
    assert "acc (higher is better)" in html and "Partial report" not in html
    first = re.search(r'<tbody>\s*<tr>\s*<td class="num">1</td><td class="num">(\d+)</td>', html)
    assert first and first.group(1) == "3"


def test_stale_running_sweep_is_drawn_to_its_last_sign_of_life(sqlite_url, tmp_path):
    mixed_sweep(sqlite_url, "stale", start=datetime.now(UTC) - timedelta(days=3)).close()
    data = _load(sqlite_url, "stale")
    assert data.running and data.stale and data.end == data.last_activity
    html = build_report("stale", sqlite_url, tmp_path / "s.html").read_text("utf-8")
    assert "Nothing has been heard from it for 2 d" in html
    assert "last sign of life" in html


def test_storage_password_is_masked(tmp_path, sqlite_url):
    store = TrackingStore(sqlite_url)
    store.create_sweep(
        "pw",
        config=CONFIG,
        config_yaml=None,
        objective="loss",
        goal="minimize",
        method="tpe",
        pruner="none",
        storage="postgresql+psycopg2://alice:hunter2@db:5432/hpo",
    )
    store.close()
    html = render_html("pw", sqlite_url)
    assert "hunter2" not in html and "alice:***@db" in html


def test_default_path_and_env_storage(mixed, tmp_path, monkeypatch):
    url, _ = mixed
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HPO_STORAGE", url)
    out = build_report("mixed")
    assert out == Path("reports") / "mixed.html" and (tmp_path / out).is_file()


def test_unknown_sweep_is_a_clear_error(sqlite_url):
    from hpo.errors import StudyNotFound

    TrackingStore(sqlite_url).close()
    with pytest.raises(StudyNotFound, match="No sweep named 'nope'"):
        build_report("nope", sqlite_url)


def test_zero_trials(sqlite_url, tmp_path):
    _new_sweep(sqlite_url, "empty").close()
    html = build_report("empty", sqlite_url, tmp_path / "e.html").read_text("utf-8")
    assert_self_contained(html)
    assert _figures(html)["order"] == []
    assert "No trial has a finite objective value yet" in html
    assert "no learning curves" in html
    assert "No completed trial with a finite loss yet" in html
    assert "No trial has a start time yet" in html
    assert "need at least 2 completed trials" in html


def test_one_completed_trial(sqlite_url, tmp_path):
    store = _new_sweep(sqlite_url, "one")
    store.start_trial("one", 0, {"opt": {"lr": 1e-3, "name": "adam"}, "dropout": 0.1})
    store.log_metrics("one", 0, 1, {"loss": 1.0})
    store.end_trial("one", 0, "complete", value=0.5)
    store.end_sweep("one", "finished")
    store.close()
    html = build_report("one", sqlite_url, tmp_path / "o.html").read_text("utf-8")
    spec = _figures(html)
    assert spec["order"] == ["fig-history", "fig-curves", "fig-timeline"]
    assert "Partial report" not in html
    # one trial: constant params are no parameters, so each params section says why
    assert html.count("The sweep has no varying parameters.") == 2
    assert "Needs two varying parameters" in html
    assert "need at least 2 completed trials" in html


def test_one_completed_among_others(sqlite_url, tmp_path):
    store = _new_sweep(sqlite_url, "few")
    for n, state in enumerate(["complete", "failed", "pruned"]):
        store.start_trial(
            "few", n, {"opt": {"lr": 10.0 ** -(n + 2), "name": "ab"[n % 2]}, "dropout": 0.1 * n}
        )
        store.log_metrics("few", n, 1, {"loss": 1.0 + n})
        store.end_trial(
            "few",
            n,
            state,
            value=None if state == "failed" else 1.0 + n,
            error="ValueError: bad" if state == "failed" else None,
        )
    store.close()
    html = build_report("few", sqlite_url, tmp_path / "f.html").read_text("utf-8")
    spec = _figures(html)
    assert "fig-slice" in spec["order"] and "fig-parallel" not in spec["order"]
    assert "Needs at least 2 completed trials with a finite value; this sweep has 1." in html
    assert "Needs at least 3 completed trials" in html
    assert "Only one completed trial" in html


def test_importances_use_the_optuna_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    _bench().make_sweep(url, "withstudy", 40, 9, steps=9)
    data = _load(url, "withstudy")
    assert data.importances and "distributions from the Optuna study" in data.importance_note
    assert "optimizer.lr" in data.importances


def test_report_on_each_storage(storage_url, tmp_path):
    store = mixed_sweep(storage_url, "each", finish=True)
    store.close()
    html = build_report("each", storage_url, tmp_path / "each.html").read_text("utf-8")
    assert_self_contained(html)
    assert len(_figures(html)["order"]) == 7


# ------------------------------------------------------------------------------ browser
def _chromium() -> str:
    if not os.path.exists(CHROMIUM):
        reason = (
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y "
            "chromium) to run the real-browser report tests"
        )
        if os.environ.get("CI"):
            pytest.fail(reason + " ($CI is set: browser tests must not be skipped)")
        print(reason)
        pytest.skip(reason)
    return CHROMIUM


def open_in_chromium(
    html_path: Path,
    tmp_path: Path,
    *,
    screenshot: Path | None = None,
    webgl: bool = True,
    height: int = 7000,
) -> str:
    """Load the page headless; return the DOM after the scripts ran (and take a
    screenshot)."""
    profile = tmp_path / f"chromium-profile-{time.monotonic_ns()}"
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={profile}",
        f"--window-size=1400,{height}",
        "--virtual-time-budget=60000",
    ]
    if not webgl:
        cmd.append("--disable-3d-apis")
    if screenshot is not None:
        cmd.append(f"--screenshot={screenshot}")
    cmd += ["--dump-dom", html_path.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def check_rendered(dom: str, html: str) -> dict[str, str]:
    status = re.search(r'<div id="render-status"([^>]*)>', dom)
    assert status, "the page's scripts did not run"
    attrs = dict(re.findall(r'data-([\w-]+)="([^"]*)"', status.group(1)))
    errors = re.search(r'<pre id="js-errors"[^>]*>(.*?)</pre>', dom, re.S)
    assert errors is not None and errors.group(1).strip() == "", errors.group(1)
    order = _figures(html)["order"]
    assert attrs["done"] == "1" and attrs["rendered"] == attrs["plots"] == str(len(order))
    for fid in order:  # every plot div holds a rendered plotly graph
        start = dom.index(f'id="{fid}"')
        end = dom.find('<section class="card"', start)
        chunk = dom[start : end if end > 0 else len(dom)]
        assert chunk.count('class="main-svg"') >= 1 or "no WebGL" in chunk, fid
    return attrs


SORT_SCRIPT = """<script>
(function () {  /* test only: click leaderboard headers, record the resulting orders */
  var t = document.getElementById("leaderboard-table"), th = t.tHead.rows[0].cells;
  function col(i) { return Array.prototype.map.call(t.tBodies[0].rows,
    function (r) { return r.cells[i].textContent.trim(); }).join(","); }
  th[1].click(); th[1].click();            /* trial number: ascending, then descending */
  var desc = col(1);
  th[2].click();                           /* objective, ascending */
  var out = document.createElement("div"); out.id = "sort-result";
  out.setAttribute("data-desc", desc); out.setAttribute("data-obj", col(2));
  document.body.appendChild(out);
})();
</script></body>"""


@pytest.mark.browser
def test_browser_renders_mixed_report_and_sorts(mixed, tmp_path):
    url, _ = mixed
    page = build_report("mixed", url, tmp_path / "mixed.html")
    html = page.read_text("utf-8")
    shot = tmp_path / "mixed.png"
    dom = open_in_chromium(page, tmp_path, screenshot=shot)
    attrs = check_rendered(dom, html)
    assert attrs["webgl"] in ("0", "1")
    assert shot.stat().st_size > 50_000
    print(f"screenshot: {shot}; rendered {attrs['rendered']} plots by {attrs.get('ms')} ms")

    sortable = tmp_path / "sortable.html"
    sortable.write_text(html.replace("</body>", SORT_SCRIPT), "utf-8")
    dom = open_in_chromium(sortable, tmp_path, height=900)
    m = re.search(r'<div id="sort-result" data-desc="([^"]*)" data-obj="([^"]*)"', dom)
    assert m, "the sort script did not run"
    numbers = [int(x) for x in m.group(1).split(",")]
    assert len(numbers) == 15 and numbers == sorted(numbers, reverse=True)  # NaN left out
    objective = [float(x) for x in m.group(2).split(",")]
    assert objective == sorted(objective)


@pytest.mark.browser
def test_browser_without_webgl_falls_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'sim.db'}"
    _bench().make_sweep(url, "sim", 500, 20, running=2, optuna_study=False)
    page = build_report("sim", url, tmp_path / "sim.html")
    html = page.read_text("utf-8")
    assert '"type":"scattergl"' in html  # big traces use WebGL ...
    dom = open_in_chromium(page, tmp_path, screenshot=tmp_path / "sim-gl.png")
    assert check_rendered(dom, html)["webgl"] == "1"
    dom = open_in_chromium(page, tmp_path, webgl=False)  # ... and SVG where there is none
    assert check_rendered(dom, html)["webgl"] == "0"
    assert "This browser has no WebGL" in dom


# ------------------------------------------------------------------------------ scale
@pytest.mark.slow
def test_scale_5000_trials_20_params(tmp_path):
    url = f"sqlite:///{tmp_path / 'big.db'}"
    t = time.perf_counter()
    _bench().make_sweep(url, "big", 5000, 20, steps=27, optuna_study=False)
    made = time.perf_counter() - t
    t = time.perf_counter()
    page = build_report("big", url, tmp_path / "big.html")
    built = time.perf_counter() - t
    size = page.stat().st_size
    print(
        f"5000x20 store written in {made:.1f} s; report built in {built:.1f} s, {size / 1e6:.2f} MB"
    )
    assert size < 10_000_000
    html = page.read_text("utf-8")
    assert_self_contained(html)
    assert "400 of 5,000 learning curves drawn" in html and "Top 50 of" in html
    if os.path.exists(CHROMIUM) or os.environ.get("CI"):
        dom = open_in_chromium(page, tmp_path, screenshot=tmp_path / "big.png")
        attrs = check_rendered(dom, html)
        print(
            f"chromium rendered {attrs['rendered']} plots; page scripts done at "
            f"{attrs.get('ms')} ms (virtual time)"
        )


# ------------------------------------------------------------------------------ every metric
def _figure(html: str, fid: str) -> dict:
    return _figures(html)["figures"][fid]


def test_every_metric_is_in_the_tables_and_curves(mixed, tmp_path):
    url, store = mixed
    data = _load(url, "mixed")
    assert data.metric_names == ["loss", "acc"] and data.extra_metrics == ["acc"]
    assert list(data.curve_sets) == ["loss", "acc"] and data.curve_sets["loss"] is data.curves
    last = {}
    for m in store.metrics("mixed"):
        if m.name == "acc":
            last[m.number] = m.value  # rows come in step order: the last one wins
    by_number = {r.number: r for r in data.frame.rows}
    assert all(by_number[n].metrics["acc"] == v for n, v in last.items())
    assert by_number[3].metrics["loss"] == by_number[3].value  # the trainer's final value

    html = build_report("mixed", url, tmp_path / "m.html").read_text("utf-8")
    curves = _figure(html, "fig-curves")
    menu = curves["layout"]["updatemenus"][0]
    assert [b["label"] for b in menu["buttons"]] == ["loss", "acc"]
    shown = [t.get("visible") for t in curves["data"]]
    assert shown.count(True) > 0 and shown.count(False) > 0
    acc = menu["buttons"][1]["args"]
    assert acc[1]["yaxis.title.text"] == "acc"
    assert [v for v in acc[0]["visible"]] == [not v for v in shown]  # the other half
    assert "switches between the 2 metrics reported per step (loss, acc)" in html
    # leaderboard and trials table: an acc column and a select for the metric columns
    assert html.count('<th class="num" data-metric="0">acc</th>') == 2
    assert html.count('<select class="metric-select"') == 2 and '<option value="0">acc' in html
    trials = re.search(r'<table class="sortable" id="trials-table">(.*?)</table>', html, re.S)
    assert trials and trials.group(1).count("<tr>") == 1 + 24
    assert '<a href="#trials">Trials</a>' in html


def test_curves_of_other_metrics_without_the_objective_per_step(sqlite_url, tmp_path):
    store = _new_sweep(sqlite_url, "final-only")
    for n in range(3):
        store.start_trial("final-only", n, {"dropout": 0.1 * n})
        for step in (1, 2):
            metrics = {f"m{k:02d}": k + step + n for k in range(rdata.CURVE_METRICS + 2)}
            store.log_metrics("final-only", n, step, metrics)
        store.end_trial("final-only", n, "complete", value=1.0 + n, metrics={"loss": 1.0 + n})
    store.close()
    data = _load(sqlite_url, "final-only")
    assert len(data.curve_sets) == rdata.CURVE_METRICS and "loss" not in data.curve_sets
    assert "m12, m13 left out" in data.curve_metrics_note
    assert data.metric_names[0] == "loss" and len(data.extra_metrics) == rdata.CURVE_METRICS + 2
    html = render_html("final-only", sqlite_url)
    assert "No trial reported the objective &#39;loss&#39; per step" in html
    assert "m12, m13 left out" in html
    buttons = _figure(html, "fig-curves")["layout"]["updatemenus"][0]["buttons"]
    assert [b["label"] for b in buttons][:2] == ["m00", "m01"]


def test_trials_table_lists_the_latest_trials(sqlite_url, monkeypatch):
    monkeypatch.setattr(rpage, "TRIAL_ROWS", 5)
    store = _new_sweep(sqlite_url, "many")
    for n in range(8):
        store.start_trial("many", n, {"dropout": 0.01 * n})
        store.end_trial("many", n, "complete", value=float(n))
    store.close()
    html = render_html("many", sqlite_url)
    trials = re.search(r'<table class="sortable" id="trials-table">(.*?)</table>', html, re.S)
    numbers = re.findall(r'<tr>\s*<td class="num">(\d+)</td>\s*<td class="state"', trials.group(1))
    assert numbers == ["3", "4", "5", "6", "7"]
    assert "The last 5 of 8 trials (by number) listed" in html
    assert '<select class="metric-select"' not in html  # only the objective: nothing to pick


PICK_SCRIPT = """<script>
(function () {  /* test only: pick metric columns, then the dropdown's second metric */
  function visible(sel) { return Array.prototype.filter.call(document.querySelectorAll(sel),
    function (c) { return c.offsetParent !== null; }).length; }
  var out = document.createElement("div"); out.id = "pick-result";
  var select = document.querySelector('select[data-table="leaderboard-table"]');
  out.setAttribute("data-all", visible("#leaderboard-table [data-metric]"));
  select.value = "none"; select.dispatchEvent(new Event("change"));
  out.setAttribute("data-none", visible("#leaderboard-table [data-metric]"));
  select.value = "0"; select.dispatchEvent(new Event("change"));
  out.setAttribute("data-one", visible("#leaderboard-table [data-metric]"));
  function click(el) { el.dispatchEvent(new MouseEvent("click", {bubbles: true})); }
  function whenDone() {
    if (document.getElementById("render-status").getAttribute("data-done") !== "1") {
      setTimeout(whenDone, 100); return;
    }
    var gd = document.getElementById("fig-curves");
    click(gd.querySelector(".updatemenu-header"));
    setTimeout(function () {
      var buttons = gd.querySelectorAll(".updatemenu-dropdown-button");
      out.setAttribute("data-buttons", buttons.length);
      click(buttons[1]);
      setTimeout(function () {
        out.setAttribute("data-title", gd.layout.yaxis.title.text);
        out.setAttribute("data-visible", gd.data.filter(function (t) {
          return t.visible === true; }).map(function (t) { return t.name; }).join("|"));
        document.body.appendChild(out);
      }, 500);
    }, 500);
  }
  whenDone();
})();
</script></body>"""


@pytest.mark.browser
def test_browser_switches_metrics(mixed, tmp_path):
    url, _ = mixed
    html = build_report("mixed", url, tmp_path / "mixed.html").read_text("utf-8")
    page = tmp_path / "pick.html"
    page.write_text(html.replace("</body>", PICK_SCRIPT), "utf-8")
    dom = open_in_chromium(page, tmp_path, height=1200)
    m = re.search(r'<div id="pick-result"([^>]*)>', dom)
    assert m, "the pick script did not finish"
    attrs = dict(re.findall(r'data-([\w-]+)="([^"]*)"', m.group(1)))
    rows = 1 + 15  # the header and the leaderboard's 15 complete trials with a value
    assert (attrs["all"], attrs["none"], attrs["one"]) == (str(rows), "0", str(rows))
    assert attrs["buttons"] == "2" and attrs["title"] == "acc"
    assert attrs["visible"] and "acc" not in attrs["visible"].split("|")
    spec = _figure(html, "fig-curves")
    acc_traces = [t.get("name") for t, v in zip(spec["data"], spec["layout"]["updatemenus"][0][
        "buttons"][1]["args"][0]["visible"], strict=True) if v]
    assert attrs["visible"].split("|") == acc_traces
