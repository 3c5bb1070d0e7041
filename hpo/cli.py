"""The ``hpo`` command. Users script against these commands: keep them stable."""

from __future__ import annotations

import csv
import io
import json
import signal
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hpo.errors import HpoError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Self-hosted hyperparameter optimization: sweeps, agents, reports.",
)
out = Console()
err = Console(stderr=True)

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
    no_report: Annotated[bool, typer.Option("--no-report", help="Skip the HTML report.")] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Report path.")] = None,
) -> None:
    """Run (or resume) a sweep."""
    from hpo.sweep import run_sweep

    result = run_sweep(
        sweep_file, progress=True, report=False if no_report else (output or True),
        ray_address=ray_address, storage=storage, backend=backend, trials=trials,
        parallel=parallel, name=name, seed=seed, minutes=minutes,
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

    store = TrackingStore(storage)
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

    store = TrackingStore(storage)
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
    from hpo.tracking import TrackingStore

    store = TrackingStore(storage)
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

    path = build_report(name, storage=storage, path=output)
    out.print(f"report: {path}")


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


def main() -> None:
    """Entry point: user errors print one clear line, never a traceback."""
    try:
        rc = app(standalone_mode=False)  # returns typer.Exit's code in this mode
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except HpoError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors arrive here in standalone_mode=False
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
