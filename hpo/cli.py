"""The ``hpo`` command. Users script against these commands: keep them stable."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sys
import warnings
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hpo.errors import HpoError, StorageError

if TYPE_CHECKING:
    from hpo.config import SweepConfig
    from hpo.space import SearchSpace

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Self-hosted hyperparameter optimization: sweeps, agents, reports.",
)
out = Console()
err = Console(stderr=True)


def _version() -> str:
    """The installed hpo's version (the source tree's when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hpo")
    except PackageNotFoundError:
        from hpo import __version__

        return __version__


def _show_version(value: bool) -> None:
    if value:
        print(f"hpo {_version()}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="Print hpo's version and exit.")] = False,
) -> None:
    """Self-hosted hyperparameter optimization: sweeps, agents, reports."""


def _existing_storage(storage: str | None) -> str:
    """The storage URL for a read command (status, best, trials, report): a SQLite file must
    already exist; reading never creates a database."""
    from hpo.storage_url import mask_url, resolve_url, sqlite_path

    url = resolve_url(storage)
    try:
        path = sqlite_path(url)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads; opening it will say so
        return url
    if path is not None and not path.is_file():
        given = "--storage" if storage else "$HPO_STORAGE" if os.environ.get("HPO_STORAGE") \
            else "the default storage"
        raise StorageError(
            f"no hpo database at {str(path)!r} ({given}: {mask_url(url)}); check the path (an "
            "absolute SQLite path needs four slashes, sqlite:////abs/path.db) or run "
            "`hpo sweep` first to create it")
    return url

StorageOpt = Annotated[
    str | None,
    typer.Option("--storage", help="Database URL (default $HPO_STORAGE or sqlite:///hpo.db)."),
]


class Fmt(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command()
def sweep(
    sweep_file: Annotated[Path, typer.Argument(help="Sweep YAML (W&B sweep files work).")],
    storage: StorageOpt = None,
    backend: Annotated[str | None, typer.Option(help="local | ray | agents")] = None,
    ray_address: Annotated[str | None, typer.Option("--ray-address", envvar="RAY_ADDRESS",
                                                       help="Join this Ray cluster.")] = None,
    trials: Annotated[int | None, typer.Option(help="Trial budget.")] = None,
    parallel: Annotated[int | None, typer.Option(help="Concurrent trials.")] = None,
    name: Annotated[str | None, typer.Option(help="Sweep name (default: the file's name:, "
                                             "else project:, else its stem + a hash).")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampler seed.")] = None,
    minutes: Annotated[float | None, typer.Option(help="Time budget in minutes.")] = None,
    trial_timeout: Annotated[float | None, typer.Option(
        "--trial-timeout", metavar="SECONDS",
        help="Stop a trial that runs longer than this (sets the sweep's `timeout`).")] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Skip the HTML report.")] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Report path.")] = None,
    mlflow: Annotated[str | None, typer.Option(
        "--mlflow", metavar="TRACKING_URI",
        help="Log the sweep live to this MLflow tracking server (sets mlflow.tracking_uri; "
             "needs the mlflow extra).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Validate the file and print the plan (space size, sampler, pruner, "
        "budget, the first trial); run nothing and leave the storage untouched.")] = False,
) -> None:
    """Run (or resume) a sweep."""
    from hpo.config import check_program, load_config

    # every option is checked against the sweep file before anything is created
    overrides = dict(storage=storage, backend=backend, trials=trials, parallel=parallel,
                     seed=seed, minutes=minutes, timeout=trial_timeout, mlflow=mlflow)
    config = load_config(sweep_file).with_overrides(**overrides)
    if name is not None:
        config.with_overrides(name=name)
    if config.backend != "agents":  # agents run the program on their own machines
        check_program(config, sweep_file)
    if dry_run:
        _print_plan(config, name)
        return
    extra = {} if trial_timeout is None else {"timeout": trial_timeout}
    from hpo.sweep import run_sweep

    result = run_sweep(
        config, progress=True, report=False if no_report else (output or True),
        ray_address=ray_address, name=_announce_name(config, name), **extra,
    )
    counts = ", ".join(f"{v} {k}" for k, v in result.counts.items() if v)
    out.print(f"sweep [bold]{result.name}[/] ({result.storage}): {counts or 'no trials'} "
              f"in {result.wall_time_s:.1f}s")
    if "agent_command" in result.extra:
        out.print("sweep created for agents; start any number of them with:")
        print(result.extra["agent_command"])
        return
    if result.best_value is not None:
        out.print(f"best trial #{result.best_number}: {result.best_value:.6g} "
                  f"{json.dumps(result.best_params)}")
    if result.report_path:
        out.print(f"report: {result.report_path}")
    if result.extra.get("mlflow", {}).get("final_ok"):  # a failure was logged as a warning
        out.print(result.extra["mlflow"]["message"], highlight=False, markup=False)
    if result.interrupted:
        err.print("interrupted: finished trials are kept; run the same command to resume.")
        raise typer.Exit(130)


def _announce_name(config: SweepConfig, name: str | None) -> str:
    """The sweep's name (hpo.study.sweep_name); printed, with where it came from, when the
    file does not set one."""
    from hpo.study import sweep_name

    resolved = sweep_name(config, name)
    source = config.source or ""
    if name is None and not config.name and source and not source.startswith("<"):
        stem = Path(source).stem
        if resolved == stem:
            why = "the file's stem: a sweep of that name exists in this storage and resumes"
        elif resolved.startswith(f"{stem}-"):
            why = ("the file's stem + a hash of its method, metric and parameters; set name: "
                   "in the file or pass --name to choose one")
        else:
            why = "the file's project:"
        err.print(f"sweep name: {resolved} ({why})", highlight=False, markup=False,
                  soft_wrap=True)
    return resolved


def _first_trial(config: SweepConfig, space: SearchSpace) -> dict[str, Any]:
    """The params of a first trial, sampled in memory: the grid's first point, else a random
    draw (seeded with the sweep's seed)."""
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=config.seed))
    if config.method == "grid":
        points = space.grid_points()
        if points:
            study.enqueue_trial(points[0])
    return space.suggest(study.ask())


def _plan(config: SweepConfig, name: str | None) -> list[tuple[str, str]]:
    """What `hpo sweep FILE` would do, as (label, text) lines; reads nothing from the storage
    but whether a sweep of the file's stem exists there (hpo.study.sweep_name)."""
    import shlex

    from hpo.space import SearchSpace, size_text
    from hpo.storage_url import mask_url, resolve_url
    from hpo.strategy import describe, rungs_text
    from hpo.study import sweep_name
    from hpo.trainer_ref import resolve

    runs = bool(config.trainer or config.program)
    if runs:
        resolve(config)  # a bad trainer reference or runner option fails here
    space = SearchSpace.from_config(config.parameters)
    if config.method == "grid":
        space.grid_points()  # an infinite or too large grid fails here
    info = describe(config)
    lines = [("sweep", sweep_name(config, name)),
             ("storage", f"{mask_url(resolve_url(config.storage))} (not opened)")]
    names = ", ".join(space.names) or "none"
    if space.is_finite():
        size = f"{size_text(space.grid_size())} combinations"
    else:
        size = "continuous (no finite grid)"
    lines.append(("space", f"{len(space.names)} parameters ({names}); {size}"))
    metric = getattr(config, "metric", None)
    if metric is not None:
        lines.append(("objective", f"{metric.name} ({metric.goal})"))
    lines += [("method", str(config.method)), ("sampler", str(info["sampler"])),
              ("pruner", f"{info['pruner']} (early_terminate: {info['early_terminate']})")]
    rungs = rungs_text(config)
    if rungs is not None:
        lines.append(("rungs", rungs))
    budget = []
    trials = config.trial_budget()
    if trials is not None:
        budget.append(f"{trials:,} trials")
    elif config.method == "grid" and space.is_finite():
        budget.append(f"{size_text(space.grid_size())} trials (the grid)")
    if config.budget.minutes is not None:
        budget.append(f"{config.budget.minutes:g} minutes")
    lines.append(("budget", ", ".join(budget) or "unlimited (until Ctrl-C or hpo stop)"))
    lines.append(("parallel", f"{config.parallel} on backend {config.backend}"
                  + (f"; per trial cpu {config.resources.cpu:g}, gpu {config.resources.gpu}"
                     if config.backend == "ray" or config.resources.gpu else "")))
    if config.timeout is not None:
        lines.append(("trial timeout", f"{config.timeout:g} s"))
    params = _first_trial(config, space)
    how = ("the grid's first point" if config.method == "grid"
           else "a random draw here; the sweep's sampler picks its own")
    lines.append(("first trial", f"{json.dumps(params, default=str)} ({how})"))
    if config.program:
        from hpo.program.command import build_argv, parse_options

        options = parse_options(config.trainer_args)
        try:
            argv = build_argv(config.command, program=config.program, params=params,
                              json_file="TRIAL_DIR/params.json", nested_args=options.nested_args,
                              environ={**os.environ, **options.env})
            lines.append(("command", shlex.join(argv)))
        except HpoError as exc:
            lines.append(("command", f"cannot be built here: {exc}"))
    elif config.trainer:
        lines.append(("trainer", str(config.trainer)))
    else:
        lines.append(("trainer", "none: run it with hpo.run_sweep(config, objective=fn), or "
                      "set program: or trainer:"))
    return lines


def _print_plan(config: SweepConfig, name: str | None) -> None:
    """`hpo sweep --dry-run`: the plan, one line per item; nothing runs, nothing is written."""
    lines = _plan(config, name)
    width = max(len(label) for label, _ in lines)
    for label, text in lines:
        print(f"{label:<{width}}  {text}")
    print("dry run: nothing was run or written.")


@app.command()
def agent(
    study: Annotated[str, typer.Option("--study", help="Sweep name to join.")],
    storage: StorageOpt = None,
    trials: Annotated[int | None, typer.Option(help="Stop after this many trials here.")] = None,
    max_idle: Annotated[float, typer.Option("--max-idle", help="Seconds to wait for the sweep "
                                            "to be created.")] = 300.0,
    lease: Annotated[float, typer.Option("--lease", help="Seconds without heartbeat after "
                                         "which a trial counts as lost.")] = 60.0,
) -> None:
    """Join a sweep and run its trials until the budget is spent (Kubernetes agents)."""
    import logging

    from hpo.agent import run_agent

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    def on_sigterm(signum: int, frame: object) -> None:  # pod deleted: stop like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    res = run_agent(study, storage, trials=trials, max_idle_s=max_idle, lease_s=lease)
    states = ", ".join(f"{v} {k}" for k, v in sorted(res.states.items())) or "no trials"
    err.print(f"agent done: {res.trials_run} trials ({states}); reaped {res.reaped} lost; "
              f"stopped: {res.stopped_because}")


_STATE_COLUMNS = ("complete", "pruned", "paused", "failed", "running", "interrupted")


@app.command()
def status(
    storage: StorageOpt = None,
    format: Annotated[Fmt, typer.Option("--format")] = Fmt.table,
) -> None:
    """List sweeps with trial counts by state (table, csv or json)."""
    from hpo.tracking import TrackingStore
    from hpo.tracking.records import iso, jsonable

    store = TrackingStore(_existing_storage(storage))
    rows = []
    for s in store.list_sweeps():
        c = store.counts(s.name)
        best = store.best(s.name)
        rows.append({
            "name": s.name, "status": s.status, "method": s.method, "objective": s.objective,
            "goal": s.goal, "pruner": s.pruner, "trials": sum(c.values()), "counts": c,
            "best_value": None if best is None else jsonable(best.value),
            "best_number": None if best is None else best.number,
            "started": iso(s.started), "ended": iso(s.ended),
        })
    if format is Fmt.json:
        print(json.dumps(rows))
        return
    if format is Fmt.csv:
        buf = io.StringIO()
        writer = csv.writer(buf)
        keys = ["name", "status", "method", "objective", "goal", "trials"]
        writer.writerow(keys + list(_STATE_COLUMNS)
                        + ["best_value", "best_number", "started", "ended"])
        for r in rows:
            writer.writerow([r[k] for k in keys] + [r["counts"].get(k, 0) for k in _STATE_COLUMNS]
                            + [r[k] for k in ("best_value", "best_number", "started", "ended")])
        sys.stdout.write(buf.getvalue())
        return
    table = Table("sweep", "status", "method", "objective", *_STATE_COLUMNS, "best")
    for r in rows:
        table.add_row(r["name"], r["status"], r["method"], f"{r['objective']} ({r['goal']})",
                      *(str(r["counts"].get(k, 0)) for k in _STATE_COLUMNS),
                      "-" if r["best_value"] is None else f"{r['best_value']:.6g}")
    out.print(table)


@app.command()
def best(
    name: str,
    storage: StorageOpt = None,
    format: Annotated[str, typer.Option("--format", help="text | json")] = "text",
) -> None:
    """Print the best trial of a sweep: value and params."""
    from hpo.tracking import TrackingStore

    if format not in ("text", "json"):
        raise typer.BadParameter(f"{format!r} is not one of 'text', 'json'.",
                                 param_hint="'--format'")
    store = TrackingStore(_existing_storage(storage))
    sweep_rec = store.get_sweep(name)
    rec = store.best(name)
    if rec is None:
        raise HpoError(f"Sweep {name!r} has no complete trial yet.")
    if format == "json":
        print(json.dumps(rec.to_json()))
        return
    out.print(f"best trial #{rec.number} of {name}: {sweep_rec.objective} = {rec.value:.6g} "
              f"({sweep_rec.goal})")
    print(json.dumps(rec.params, indent=2))


@app.command()
def trials(
    name: str,
    storage: StorageOpt = None,
    format: Annotated[Fmt, typer.Option("--format")] = Fmt.table,
    state: Annotated[list[str] | None, typer.Option(help="Only these states.")] = None,
) -> None:
    """List a sweep's trials (table, csv or json)."""
    from hpo.tracking import TRIAL_STATES, TrackingStore

    bad = [s for s in state or [] if s not in TRIAL_STATES]
    if bad:
        raise typer.BadParameter(f"{bad[0]!r} is not a trial state; use one of "
                                 f"{', '.join(TRIAL_STATES)}.", param_hint="'--state'")
    from hpo.reporting.metrics import final_metrics, metric_names
    from hpo.tracking.records import jsonable

    store = TrackingStore(_existing_storage(storage))
    objective = store.get_sweep(name).objective
    records = store.trials(name, states=state)
    history = store.metrics(name, None if state is None else [r.number for r in records])
    finals = final_metrics(records, history)
    # `metrics`: the final value of every metric the trial reported (see final_metrics)
    rows = [{**r.to_json(), "metrics": jsonable(finals.get(r.number, {}))} for r in records]
    if format is Fmt.json:
        print(json.dumps(rows))
        return
    keys = ["number", "state", "value", "steps", "duration_s", "worker", "params"]
    if format is Fmt.csv:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(keys + ["started", "ended", "error", "metrics"])
        for r in rows:
            writer.writerow([json.dumps(r[k]) if k == "params" else r.get(k) for k in keys]
                            + [r.get("started"), r.get("ended"), (r.get("error") or "")[:200],
                               json.dumps(r["metrics"])])
        sys.stdout.write(buf.getvalue())
        return
    from hpo.space import SearchSpace

    flat = [SearchSpace.flatten(r.get("params") or {}) for r in rows]
    pkeys = sorted({k for f in flat for k in f})
    mkeys = [m for m in metric_names(finals, objective) if m != objective]
    table = Table("#", "state", "value", *mkeys, "steps", "secs", "worker", *pkeys)
    for r, f in zip(rows, flat, strict=True):
        table.add_row(str(r["number"]), r["state"], _fmt(r.get("value")),
                      *(_fmt(r["metrics"].get(m)) for m in mkeys), _fmt(r.get("steps")),
                      _fmt(r.get("duration_s")), str(r.get("worker") or ""),
                      *(_fmt(f.get(k)) for k in pkeys))
    out.print(table)


def _fmt(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


@app.command()
def report(
    name: str,
    storage: StorageOpt = None,
    output: Annotated[Path | None, typer.Option("-o", "--output")] = None,
) -> None:
    """Write the sweep's self-contained HTML report."""
    from hpo.reporting import build_report

    url = _existing_storage(storage)
    try:
        path = build_report(name, storage=url, path=output)
    except OSError as exc:
        where = exc.filename or output or "reports/"
        raise HpoError(f"cannot write the report to {str(where)!r} "
                       f"({exc.strerror or exc}); pass -o PATH in a folder you can write to"
                       ) from None
    out.print(f"report: {path}")


@app.command("mlflow")
def mlflow_export(
    name: str,
    tracking_uri: Annotated[str | None, typer.Option(
        "--tracking-uri", envvar="MLFLOW_TRACKING_URI",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the sweep's "
             "mlflow.tracking_uri).")] = None,
    experiment: Annotated[str | None, typer.Option(
        help="MLflow experiment (default: the sweep's mlflow.experiment, else its name).")
    ] = None,
    register: Annotated[str | None, typer.Option(
        help="Register the best trial's saved model under this name (default: the sweep's "
             "mlflow.register).")] = None,
    storage: StorageOpt = None,
    follow: Annotated[bool, typer.Option(
        "--follow", help="Keep syncing until the sweep ends (a sweep run by agents).")
    ] = False,
) -> None:
    """Export a sweep to MLflow: a parent run, one child run per trial (idempotent)."""
    from hpo.mlflow_sync import MlflowError, follow_sweep, require_mlflow, sync_sweep
    from hpo.tracking import TrackingStore

    require_mlflow()
    store = TrackingStore(_existing_storage(storage))
    spec = store.get_sweep(name).config.get("mlflow") or {}
    stored = spec.get("tracking_uri")
    if tracking_uri is None and stored and "***" not in stored:  # a masked one is no use
        tracking_uri = stored
    if not tracking_uri:
        raise MlflowError("no MLflow tracking URI: pass --tracking-uri URI (or set "
                          "$MLFLOW_TRACKING_URI)" + (f"; the sweep's {stored} has its password "
                                                     "masked" if stored else ""))
    experiment = experiment or spec.get("experiment")
    register = register or spec.get("register")
    if follow:
        summary = follow_sweep(store, name, tracking_uri, experiment, register)
        out.print(summary.message(), highlight=False, markup=False)
        if not summary.final_ok:
            raise typer.Exit(1)
        return
    report = sync_sweep(store, name, tracking_uri, experiment, register)
    out.print(report.summary(), highlight=False, markup=False, soft_wrap=True)


@app.command()
def k8s(
    sweep_file: Annotated[Path, typer.Argument(help="Sweep YAML.")],
    agents: Annotated[int | None, typer.Option(min=1, help="Agent pods (default: the "
                                               "sweep's parallel).")] = None,
    image: Annotated[str | None, typer.Option(help="Agent image (default hpo:cuda for GPU "
                                              "sweeps, else hpo:cpu).")] = None,
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace.")] = "default",
    name: Annotated[str | None, typer.Option(help="Sweep name (default: file's name or "
                                             "stem).")] = None,
    secret: Annotated[str, typer.Option(help="Secret holding the storage URL.")] = "hpo-storage",
    secret_key: Annotated[str, typer.Option("--secret-key", help="Key of the URL in the "
                                            "Secret.")] = "url",
    memory: Annotated[str | None, typer.Option(help="Memory per agent, e.g. 16Gi.")] = None,
    lease: Annotated[int, typer.Option(help="Trial lease in seconds.")] = 60,
    no_create: Annotated[bool, typer.Option("--no-create", help="Leave out the Job that "
                                            "creates the sweep (you ran `hpo sweep --backend "
                                            "agents` yourself).")] = False,
) -> None:
    """Print Kubernetes manifests that run a sweep on agent pods (pipe to kubectl apply -f -)."""
    from hpo.k8s import manifests_for_file

    text, notes = manifests_for_file(
        sweep_file, name=name, agents=agents, image=image, namespace=namespace, secret=secret,
        secret_key=secret_key, lease_s=lease, memory=memory, create=not no_create,
    )
    sys.stdout.write(text)
    for note in notes:
        err.print(f"note: {note}", highlight=False, markup=False)


def _numbers_text(numbers: set[int]) -> str:
    """``0-9, 12, 14-15`` for a set of trial numbers (none: "none")."""
    ordered = sorted(numbers)
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ", ".join(parts) or "none"


@app.command()
def metrics(
    name: str,
    trial: Annotated[list[int] | None, typer.Option(
        "--trial", help="Only this trial number (repeat for more).")] = None,
    metric: Annotated[list[str] | None, typer.Option(
        "--metric", help="Only this metric (repeat for more).")] = None,
    storage: StorageOpt = None,
    format: Annotated[Fmt, typer.Option("--format")] = Fmt.csv,
) -> None:
    """Print per-step metric histories: trial, step, metric, value, logged_at (csv, json or
    table)."""
    from hpo.reporting.metrics import history_rows
    from hpo.tracking import TrackingStore

    store = TrackingStore(_existing_storage(storage))
    store.get_sweep(name)
    if trial:
        known = {r.number for r in store.trials(name)}
        missing = sorted(set(trial) - known)
        if missing:
            raise HpoError(f"sweep {name!r} has no trial {missing[0]} (its trials: "
                           f"{_numbers_text(known)}); check --trial")
    history = store.metrics(name, trial or None)
    rows = history_rows(history, metric)
    if metric and not rows:
        reported = sorted({m.name for m in history})
        raise HpoError(f"no metric {', '.join(map(repr, metric))} in the step histories of "
                       f"sweep {name!r}"
                       f"{' trials ' + _numbers_text(set(trial)) if trial else ''} (metrics "
                       f"reported: {', '.join(reported) or 'none'}); check --metric")
    keys = ["trial", "step", "metric", "value", "logged_at"]
    if format is Fmt.json:
        print(json.dumps(rows))
    elif format is Fmt.csv:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(keys)
        writer.writerows([r[k] for k in keys] for r in rows)
        sys.stdout.write(buf.getvalue())
    else:
        table = Table(*keys)
        for r in rows:
            table.add_row(*(_fmt(r[k]) for k in keys))
        out.print(table)


@app.command()
def stop(name: str, storage: StorageOpt = None) -> None:
    """Ask a running sweep to stop: no new trials start, running ones finish, then its loops
    and agents exit."""
    from hpo.tracking import TrackingStore

    store = TrackingStore(_existing_storage(storage))
    store.get_sweep(name)  # a missing sweep: the error lists the existing ones
    if store.request_stop(name):
        running = store.counts(name).get("running", 0)
        trials = "1 running trial finishes" if running == 1 else f"{running} running trials finish"
        out.print(f"asked sweep {name} to stop: its loops start no new trials (they notice within "
                  f"seconds); {trials}, then the loops and agents exit.",
                  highlight=False, markup=False, soft_wrap=True)
        return
    status = store.get_sweep(name).status
    if status == "stopping":
        out.print(f"sweep {name} is already stopping.", highlight=False, markup=False)
    else:
        out.print(f"sweep {name} is not running (status {status}); nothing to stop.",
                  highlight=False, markup=False)


@app.command()
def delete(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Delete even while trials of it run.")] = False,
    storage: StorageOpt = None,
) -> None:
    """Delete a sweep: its trials, metrics and Optuna study (asks first; --yes does not)."""
    from hpo.errors import StudyNotFound
    from hpo.tracking import TrackingStore

    store = TrackingStore(_existing_storage(storage))
    try:
        counts = store.counts(name)
    except StudyNotFound:
        if not store.read_journal(name, 0):  # nor a study left without its tracking rows
            raise
        counts = {}
    running = counts.get("running", 0)
    if running and not force:
        raise HpoError(f"sweep {name!r} has {running} running trial"
                       f"{'' if running == 1 else 's'}: stop it first (hpo stop {name}) and "
                       "let them finish, or pass --force")
    total = sum(counts.values())
    what = (f"sweep {name!r} ({total} trial{'' if total == 1 else 's'}, their metrics and its "
            f"Optuna study) from {store.masked_url}")
    if not yes:
        try:
            sure = typer.confirm(f"Delete {what}?", default=False)
        except _aborts():
            sure = False
            err.print("")
        if not sure:
            err.print("nothing deleted (pass --yes to delete without asking)", highlight=False,
                      markup=False)
            raise typer.Exit(1)
    store.delete_sweep(name)
    out.print(f"deleted {what}", highlight=False, markup=False, soft_wrap=True)


@app.command()
def dashboard(
    name: str,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to serve on.")] = 8080,
    host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0: every interface).")
                    ] = "127.0.0.1",
    storage: StorageOpt = None,
) -> None:
    """Serve optuna-dashboard on a sweep's Optuna study (needs the dashboard extra)."""
    try:
        import optuna_dashboard
    except ImportError:
        raise HpoError("hpo dashboard needs optuna-dashboard: pip install 'hpo[dashboard]' (or "
                       "pip install optuna-dashboard)") from None
    import optuna

    from hpo.errors import StudyNotFound
    from hpo.tracking import TrackingStore

    url = _existing_storage(storage)
    store = TrackingStore(url)
    study_storage = _dashboard_storage(store, name)
    if name not in optuna.get_all_study_names(study_storage):
        store.get_sweep(name)  # no such sweep: this error lists the existing ones
        raise StudyNotFound(f"sweep {name!r} has no Optuna study in {store.masked_url} (its "
                            "journal is empty); run the sweep first")

    import socket
    import threading
    from wsgiref.simple_server import WSGIServer, make_server

    class Server(WSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    try:  # optuna_dashboard.run_server's server, but one that Ctrl-C stops mid-request too
        server = make_server(host, port, optuna_dashboard.wsgi(study_storage),
                             server_class=Server)
    except OSError as exc:
        raise HpoError(f"cannot serve on {host}:{port} ({exc.strerror or exc}); pass --port "
                       "with a free port (or --host with an address of this machine)") from None

    def on_signal(signum: int, frame: object) -> None:  # Ctrl-C, SIGTERM: finish and stop
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    shown = f"[{host}]" if ":" in host else host
    err.print(f"optuna-dashboard for sweep {name} ({store.masked_url}): "
              f"http://{shown}:{port}/dashboard/  (Ctrl-C stops it)", highlight=False,
              markup=False, soft_wrap=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    err.print("dashboard stopped", highlight=False, markup=False)


def _dashboard_storage(store: Any, name: str) -> Any:
    """Sweep ``name``'s Optuna study (hpo.study.open_storage) for optuna-dashboard: notes and
    attributes can be written, but deleting the study or adding studies to the sweep's
    journal is refused (`hpo delete` deletes a sweep with its trials and metrics)."""
    from optuna.storages import JournalStorage

    from hpo.tracking.journal import SQLJournalBackend

    class SweepStudyStorage(JournalStorage):
        def create_new_study(self, directions: Any, study_name: str | None = None) -> int:
            raise HpoError(f"this dashboard shows sweep {name!r} only; create sweeps with "
                           "hpo sweep")

        def delete_study(self, study_id: int) -> None:
            raise HpoError(f"delete sweep {name!r} with `hpo delete {name}` (its trials and "
                           "metrics go with it), not from the dashboard")

    return SweepStudyStorage(SQLJournalBackend(store, name))


def _usage_errors() -> tuple[type[BaseException], ...]:
    """The exception classes of command-line usage errors: typer's vendored click (typer
    >= 0.29) and click itself (older typer)."""
    classes: list[type[BaseException]] = []
    try:
        from typer._click import exceptions as vendored

        classes.append(vendored.ClickException)
    except ImportError:
        pass
    try:
        import click

        classes.append(click.exceptions.ClickException)
    except ImportError:
        pass
    return tuple(classes)


def _aborts() -> tuple[type[BaseException], ...]:
    classes: list[type[BaseException]] = [typer.Abort]
    try:
        import click

        classes.append(click.exceptions.Abort)
    except ImportError:
        pass
    return tuple(classes)


def _show_usage_error(exc: BaseException) -> int:
    """One or two lines for a usage error (no usage block, no traceback); its exit code."""
    code = getattr(exc, "exit_code", 2)
    code = code if isinstance(code, int) else 2
    if type(exc).__name__ == "NoArgsIsHelpError":  # plain `hpo`: the help is the message
        exc.show()  # type: ignore[attr-defined]
        return code
    format_message = getattr(exc, "format_message", None)
    message = format_message() if callable(format_message) else str(exc)
    err.print(f"error: {message}", highlight=False, markup=False, soft_wrap=True)
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        err.print(f"Try '{ctx.command_path} --help' for help.", highlight=False, markup=False,
                  soft_wrap=True)
    return code


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """A warning from hpo or a library: one line on stderr, without Python's source line."""
    from rich.markup import escape

    err.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def main() -> None:
    """Entry point: user errors print one clear line, never a traceback.

    Exit codes: 0 ok, 1 an unexpected failure, 2 a usage, config or storage error, 130
    interrupted.
    """
    usage_errors, aborts = _usage_errors(), _aborts()
    warnings.showwarning = _show_warning
    try:
        rc = app(standalone_mode=False)  # returns typer.Exit's code in this mode
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except HpoError as exc:
        from rich.markup import escape

        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except usage_errors as exc:  # standalone_mode=False hands click's usage errors to us
        sys.exit(_show_usage_error(exc))
    except aborts:
        sys.exit(130)


if __name__ == "__main__":
    main()
