"""Report build time and file size: hpo's one-page report vs. Optuna's own plot_* HTML.

For each size (default 100 and 5,000 trials x 20 parameters, with learning curves) this
builds one SQLite database holding both an hpo tracking store and the Optuna study of the
same name, then measures, in the same run:

* hpo: ``hpo.reporting.build_report`` (one self-contained HTML file, plotly.js inline once);
* Optuna: ``optuna.visualization.plot_optimization_history``, ``plot_parallel_coordinate``,
  ``plot_contour``, ``plot_slice``, ``plot_param_importances`` and
  ``plot_intermediate_values``, each written with ``write_html(full_html=True,
  include_plotlyjs=True)``, as Optuna users do (so plotly.js is inlined in every file).
  ``plot_contour`` is measured twice: on the same two parameters hpo draws, and with Optuna's
  default (every pair of parameters; only up to ``--contour-all-max`` trials, it is slow).

Prints a markdown table with the ratios. Usage::

    .venv/bin/python benchmarks/bench_report.py                # 100 and 5000 trials
    .venv/bin/python benchmarks/bench_report.py --trials 100 300 --workdir /tmp/bench

The synthetic-sweep generator here (:func:`make_sweep`) is also used by tests/test_report.py.
It writes the tracking store in bulk (one transaction through ``hpo.tracking.schema``, so
5,000 trials take seconds instead of minutes through ``TrackingStore``'s per-call API) and
the Optuna study through Optuna's own ``add_trials``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OPT_NAMES = ("adamw", "sgd", "lion")
SCHEDULES = ("cosine", "linear", "constant")
ERRORS = (
    'Traceback (most recent call last):\n  File "trainers/lora.py", line 212, in train\n'
    "    loss.backward()\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate "
    "2.00 GiB (GPU 0; 79.15 GiB total capacity)",
    'Traceback (most recent call last):\n  File "trainers/full.py", line 88, in train\n'
    '    raise FloatingPointError(f"loss is {loss}")\nFloatingPointError: loss is nan',
    "worker lost: node gpu-7 was preempted",
)


def sweep_config(n_params: int, steps: int) -> dict[str, Any]:
    """A W&B-style config with nested, log-scale, integer and categorical parameters."""
    params: dict[str, Any] = {
        "optimizer": {
            "parameters": {
                "lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1},
                "name": {"values": list(OPT_NAMES)},
                "weight_decay": {"distribution": "log_uniform_values", "min": 1e-6, "max": 1e-1},
            }
        },
        "model": {
            "parameters": {
                "layers": {"distribution": "int_uniform", "min": 1, "max": 12},
                "dropout": {"distribution": "uniform", "min": 0.0, "max": 0.5},
            }
        },
        "schedule": {"values": list(SCHEDULES)},
        "warmup": {"distribution": "int_uniform", "min": 0, "max": 500},
    }
    for i in range(max(0, n_params - 7)):
        params[f"x{i:02d}"] = {"distribution": "uniform", "min": 0.0, "max": 1.0}
    return {
        "method": "tpe",
        "metric": {"name": "loss", "goal": "minimize"},
        "parameters": params,
        "early_terminate": {"type": "asha", "min_iter": 3, "eta": 3},
    }


def _flat_dists(n_params: int) -> dict[str, Any]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    d: dict[str, Any] = {
        "optimizer.lr": FloatDistribution(1e-5, 1e-1, log=True),
        "optimizer.name": CategoricalDistribution(list(OPT_NAMES)),
        "optimizer.weight_decay": FloatDistribution(1e-6, 1e-1, log=True),
        "model.layers": IntDistribution(1, 12),
        "model.dropout": FloatDistribution(0.0, 0.5),
        "schedule": CategoricalDistribution(list(SCHEDULES)),
        "warmup": IntDistribution(0, 500),
    }
    for i in range(max(0, n_params - 7)):
        d[f"x{i:02d}"] = FloatDistribution(0.0, 1.0)
    return d


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def simulate(
    n_trials: int,
    n_params: int = 20,
    *,
    steps: int = 27,
    workers: int = 8,
    running: int = 0,
    seed: int = 0,
    start: datetime | None = None,
) -> list[dict[str, Any]]:
    """Trials of a plausible fine-tuning sweep: params, a learning curve per trial, ASHA-like
    pruning at rungs 3 and 9, some failures, and times from ``workers`` parallel workers."""
    rng = np.random.default_rng(seed)
    start = start or datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    dists = _flat_dists(n_params)
    rungs = [r for r in (3, 9) if r < steps]
    at_rung: dict[int, list[float]] = {r: [] for r in rungs}
    free = [start + timedelta(seconds=float(rng.uniform(0, 20))) for _ in range(workers)]
    out = []
    for n in range(n_trials):
        flat: dict[str, Any] = {}
        for name, d in dists.items():
            if hasattr(d, "choices"):
                flat[name] = str(rng.choice(d.choices))
            elif d.log:
                flat[name] = float(10 ** rng.uniform(math.log10(d.low), math.log10(d.high)))
            elif type(d).__name__ == "IntDistribution":
                flat[name] = int(rng.integers(d.low, d.high + 1))
            else:
                flat[name] = float(rng.uniform(d.low, d.high))
        lr = flat["optimizer.lr"]
        final = (
            0.35
            + 0.25 * (math.log10(lr) + 3.2) ** 2
            + 0.6 * flat["model.dropout"] ** 2
            + 0.04 * abs(flat["model.layers"] - 6)
            + {"adamw": 0.0, "sgd": 0.15, "lion": 0.05}[flat["optimizer.name"]]
            + 0.08 * flat.get("x00", 0.5)
            + float(rng.normal(0, 0.03))
        )
        init = final + 1.5 + float(rng.uniform(0, 0.5))
        tau = 3.0 + 4 * float(rng.uniform())
        t = np.arange(1, steps + 1)
        curve = final + (init - final) * np.exp(-t / tau) + rng.normal(0, 0.01, steps)
        state, stop, error = "complete", steps, None
        for r in rungs:  # lenient successive halving: stop the worse half at each rung
            seen = at_rung[r]
            v = float(curve[r - 1])
            seen.append(v)
            if len(seen) >= 4 and v > np.quantile(seen, 0.55):
                state, stop = "pruned", r
                break
        if state == "complete" and rng.uniform() < 0.03:
            state, stop = "failed", int(rng.integers(1, steps))
            error = ERRORS[int(rng.integers(len(ERRORS)))]
        if n >= n_trials - running:
            state, stop = "running", int(rng.integers(1, steps))
        values = curve[:stop].astype(float)
        if state == "failed" and "nan" in (error or ""):
            values[-1] = float("nan")
        w = int(np.argmin(free))
        begin = free[w] + timedelta(seconds=float(rng.exponential(4.0)))  # queue / setup gap
        per_step = 8.0 + 3.0 * flat["model.layers"] + float(rng.uniform(0, 4))
        duration = per_step * stop + float(rng.uniform(5, 15))
        end = begin + timedelta(seconds=duration)
        free[w] = end
        value = None
        if state == "complete":
            value = float(values[-1])
        elif state == "pruned":
            value = float(values[-1])
        out.append(
            dict(
                number=n,
                state=state,
                flat=flat,
                params=_nest(flat),
                values=values,
                value=value,
                error=error,
                worker=f"gpu-node-{w // 4}:{4200 + w}",
                host=f"gpu-node-{w // 4}",
                pid=4200 + w,
                device=f"cuda:{w % 4}",
                started=begin,
                ended=None if state == "running" else end,
                duration_s=None if state == "running" else duration,
            )
        )
    return out


def make_sweep(
    url: str,
    name: str,
    n_trials: int,
    n_params: int = 20,
    *,
    steps: int = 27,
    workers: int = 8,
    running: int = 0,
    seed: int = 0,
    optuna_study: bool = True,
) -> list[dict[str, Any]]:
    """Write a simulated sweep into ``url``: tracking store (+ the Optuna study)."""
    import sqlalchemy as sa

    from hpo.tracking import TrackingStore
    from hpo.tracking import schema as sch

    trials = simulate(n_trials, n_params, steps=steps, workers=workers, running=running, seed=seed)
    if running:  # a live sweep: shift it so that it is happening now
        shift = datetime.now(UTC) - max(t["ended"] or t["started"] for t in trials)
        for t in trials:
            t["started"] += shift
            t["ended"] = t["ended"] + shift if t["ended"] else None
    config = sweep_config(n_params, steps)
    store = TrackingStore(url)
    store.create_sweep(
        name,
        config=config,
        config_yaml=None,
        objective="loss",
        goal="minimize",
        method="tpe",
        pruner="SuccessiveHalvingPruner(min_resource=3, reduction_factor=3)",
        storage=url,
    )
    store.close()
    started = min(t["started"] for t in trials) - timedelta(seconds=5)
    ended = max((t["ended"] for t in trials if t["ended"]), default=started)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        sweep_id = conn.scalar(sa.select(sch.sweeps.c.id).where(sch.sweeps.c.name == name))
        conn.execute(
            sa.update(sch.sweeps)
            .where(sch.sweeps.c.id == sweep_id)
            .values(
                started=started,
                ended=None if running else ended + timedelta(seconds=3),
                status="running" if running else "finished",
            )
        )
        rows = []
        for t in trials:
            rows.append(
                dict(
                    sweep_id=sweep_id,
                    number=t["number"],
                    state=t["state"],
                    value=t["value"],
                    params=t["params"],
                    metrics={"loss": t["value"]} if t["value"] is not None else {},
                    steps=len(t["values"]),
                    started=t["started"],
                    ended=t["ended"],
                    duration_s=t["duration_s"],
                    host=t["host"],
                    pid=t["pid"],
                    worker=t["worker"],
                    device=t["device"],
                    error=t["error"],
                    attrs={},
                    retry_of=None,
                )
            )
        conn.execute(sa.insert(sch.trials), rows)
        ids = dict(
            conn.execute(
                sa.select(sch.trials.c.number, sch.trials.c.id).where(
                    sch.trials.c.sweep_id == sweep_id
                )
            ).all()
        )
        metric_rows = []
        for t in trials:
            for k, v in enumerate(t["values"], start=1):
                at = t["started"] + timedelta(seconds=k * (t["duration_s"] or 60) / 30)
                loss = None if not math.isfinite(v) else float(v)
                metric_rows.append(
                    dict(trial_id=ids[t["number"]], step=k, name="loss", value=loss, logged_at=at)
                )
                metric_rows.append(
                    dict(
                        trial_id=ids[t["number"]],
                        step=k,
                        name="lr",
                        value=t["flat"]["optimizer.lr"],
                        logged_at=at,
                    )
                )
        for i in range(0, len(metric_rows), 20000):
            conn.execute(sa.insert(sch.metrics), metric_rows[i : i + 20000])
    engine.dispose()
    if optuna_study:
        _write_study(url, name, trials, n_params)
    return trials


def _write_study(url: str, name: str, trials: list[dict[str, Any]], n_params: int) -> None:
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = _flat_dists(n_params)
    states = {
        "complete": TrialState.COMPLETE,
        "pruned": TrialState.PRUNED,
        "failed": TrialState.FAIL,
    }
    frozen = []
    for t in trials:
        if t["state"] not in states:
            continue
        inter = {k: float(v) for k, v in enumerate(t["values"], start=1) if math.isfinite(v)}
        frozen.append(
            optuna.trial.create_trial(
                state=states[t["state"]],
                value=t["value"] if t["state"] == "complete" else None,
                params=t["flat"],
                distributions=dists,
                intermediate_values=inter,
            )
        )
    from hpo.study import open_storage

    study = optuna.create_study(
        study_name=name, storage=open_storage(url, name), direction="minimize",
        load_if_exists=True,
    )
    study.add_trials(frozen)


# ----------------------------------------------------------------------------- benchmark
def _optuna_pages(
    url: str, name: str, out: Path, top2: list[str], contour_all: bool, quiet: bool = False
) -> dict[str, tuple[float, int]]:
    """Optuna's plot_* figures written as standalone HTML; (seconds, bytes) per plot."""
    import optuna
    import optuna.visualization as vis

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results: dict[str, tuple[float, int]] = {}
    from hpo.study import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(url, name))
    plots: list[tuple[str, Any]] = [
        ("history", lambda: vis.plot_optimization_history(study)),
        ("parallel_coordinate", lambda: vis.plot_parallel_coordinate(study)),
        ("contour (top-2 params)", lambda: vis.plot_contour(study, params=top2)),
        ("slice", lambda: vis.plot_slice(study)),
        ("param_importances", lambda: vis.plot_param_importances(study)),
        ("intermediate_values", lambda: vis.plot_intermediate_values(study)),
    ]
    if contour_all:
        plots.append(("contour (all params, default)", lambda: vis.plot_contour(study)))
    for label, make in plots:
        path = out / f"optuna_{label.split()[0]}{'_all' if 'all' in label else ''}.html"
        t = time.perf_counter()
        fig = make()
        fig.write_html(str(path), full_html=True, include_plotlyjs=True)
        results[label] = (time.perf_counter() - t, path.stat().st_size)
        if not quiet:
            print(
                f"  optuna {label}: {results[label][0]:.1f} s, {results[label][1] / 1e6:.1f} MB",
                flush=True,
            )
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, nargs="+", default=[100, 5000])
    ap.add_argument("--params", type=int, default=20)
    ap.add_argument("--steps", type=int, default=27)
    ap.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep databases and HTML files here (default: a temp dir)",
    )
    ap.add_argument(
        "--contour-all-max",
        type=int,
        default=100,
        help="also time Optuna's default all-pairs plot_contour up to this many trials",
    )
    args = ap.parse_args(argv)

    from hpo.reporting import build_report
    from hpo.reporting import data as rdata

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_report_")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    # Warm up both sides on a tiny sweep first (imports, plotly templates, plotly.js read),
    # so the table compares steady-state builds rather than who ran first.
    warm = workdir / "warmup.db"
    if not warm.exists():
        make_sweep(f"sqlite:///{warm}", "warmup", 12, args.params, steps=args.steps)
    (workdir / "warmup").mkdir(exist_ok=True)
    build_report("warmup", f"sqlite:///{warm}", workdir / "warmup" / "hpo.html")
    _optuna_pages(
        f"sqlite:///{warm}",
        "warmup",
        workdir / "warmup",
        ["optimizer.lr", "warmup"],
        False,
        quiet=True,
    )

    rows = []
    for n in args.trials:
        db = workdir / f"bench_{n}x{args.params}.db"
        url = f"sqlite:///{db}"
        name = f"bench-{n}"
        if not db.exists():
            t = time.perf_counter()
            make_sweep(url, name, n, args.params, steps=args.steps)
            print(f"[{n} trials] generated store in {time.perf_counter() - t:.1f} s", flush=True)
        out = workdir / f"out_{n}"
        out.mkdir(exist_ok=True)
        t = time.perf_counter()
        path = build_report(name, url, out / "hpo_report.html")
        hpo_s = time.perf_counter() - t
        hpo_b = path.stat().st_size
        print(f"[{n} trials] hpo report: {hpo_s:.1f} s, {hpo_b / 1e6:.2f} MB", flush=True)
        # the two parameters hpo's contour shows, for an equal Optuna contour
        from hpo.tracking import TrackingStore

        store = TrackingStore(url)
        rep = rdata.load(store, name)
        store.close()
        rep.importances, rep.importance_note = rdata.importances(rep, url)
        top2 = sorted(rep.importances or {}, key=lambda k: -(rep.importances or {})[k])[:2]
        if len(top2) < 2:
            top2 = [p.name for p in rep.frame.params[:2]]
        res = _optuna_pages(url, name, out, top2, n <= args.contour_all_max)
        six = [k for k in res if "all params" not in k]
        opt_s = sum(res[k][0] for k in six)
        opt_b = sum(res[k][1] for k in six)
        rows.append((n, hpo_s, hpo_b, opt_s, opt_b, res))
    print()
    print(
        f"Report build time and size, {args.params} params, {args.steps} steps per "
        "complete trial (SQLite, one process, both sides warmed up, this machine)"
    )
    print()
    print(
        "| trials | hpo report: time | hpo: size (1 file) | Optuna 6 plots: time | "
        "Optuna: size (6 files) | time ratio Optuna/hpo | size ratio Optuna/hpo |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, hs, hb, os_, ob, _ in rows:
        print(
            f"| {n:,} | {hs:.1f} s | {hb / 1e6:.2f} MB | {os_:.1f} s | {ob / 1e6:.1f} MB | "
            f"{os_ / hs:.1f}x | {ob / hb:.1f}x |"
        )
    print()
    print("Optuna per plot (write_html, plotly.js inline in each file):")
    print()
    print("| trials | plot | time | size |")
    print("|---:|---|---:|---:|")
    for n, *_, res in rows:
        for k, (s, b) in res.items():
            print(f"| {n:,} | {k} | {s:.2f} s | {b / 1e6:.2f} MB |")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
