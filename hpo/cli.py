"""The ``hpo`` command. Users script against these commands: keep them stable."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hpo.errors import HpoError, StorageError

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
    name: Annotated[str | None, typer.Option(help="Sweep name (default: file stem).")] = None,
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
    extra = {} if trial_timeout is None else {"timeout": trial_timeout}
    from hpo.sweep import run_sweep

    result = run_sweep(
        config, progress=True, report=False if no_report else (output or True),
        ray_address=ray_address, name=name, **extra,
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


@app.command()
def status(storage: StorageOpt = None) -> None:
    """List sweeps with trial counts by state."""
    from hpo.tracking import TrackingStore

    store = TrackingStore(_existing_storage(storage))
    table = Table("sweep", "status", "method", "objective", "complete", "pruned", "failed",
                  "running", "interrupted", "best")
    for s in store.list_sweeps():
        c = store.counts(s.name)
        best = store.best(s.name)
        table.add_row(s.name, s.status, s.method, f"{s.objective} ({s.goal})",
                      *(str(c.get(k, 0)) for k in ("complete", "pruned", "failed", "running",
                                                  "interrupted")),
                      "-" if best is None else f"{best.value:.6g}")
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
    store = TrackingStore(_existing_storage(storage))
    store.get_sweep(name)
    rows = [r.to_json() for r in store.trials(name, states=state)]
    if format is Fmt.json:
        print(json.dumps(rows))
        return
    keys = ["number", "state", "value", "steps", "duration_s", "worker", "params"]
    if format is Fmt.csv:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(keys + ["started", "ended", "error"])
        for r in rows:
            writer.writerow([json.dumps(r[k]) if k == "params" else r.get(k) for k in keys]
                            + [r.get("started"), r.get("ended"), (r.get("error") or "")[:200]])
        sys.stdout.write(buf.getvalue())
        return
    from hpo.space import SearchSpace

    flat = [SearchSpace.flatten(r.get("params") or {}) for r in rows]
    pkeys = sorted({k for f in flat for k in f})
    table = Table("#", "state", "value", "steps", "secs", "worker", *pkeys)
    for r, f in zip(rows, flat, strict=True):
        table.add_row(str(r["number"]), r["state"], _fmt(r.get("value")), _fmt(r.get("steps")),
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


def main() -> None:
    """Entry point: user errors print one clear line, never a traceback.

    Exit codes: 0 ok, 1 an unexpected failure, 2 a usage, config or storage error, 130
    interrupted.
    """
    usage_errors, aborts = _usage_errors(), _aborts()
    try:
        rc = app(standalone_mode=False)  # returns typer.Exit's code in this mode
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except HpoError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
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
