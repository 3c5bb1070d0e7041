"""MLflow mirroring against the real mlflow package on its local sqlite:/// backend (offline):
live runs during a sweep, statuses, metric histories, the best model and its registration,
an idempotent ``hpo mlflow`` export, and a sweep that goes on when MLflow is down."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hpo
from hpo import mlflow_sync
from hpo.config import parse_config
from hpo.errors import HpoError
from hpo.tracking import TrackingStore

pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install 'hpo[mlflow]'")
from mlflow.tracking import MlflowClient  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """MLflow's telemetry off, and the working directory (artifacts/, mlruns/) in tmp_path."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(mlflow_sync, "DEFAULT_INTERVAL_S", 0.5)


def config(storage: str, name: str, **extra) -> dict:
    cfg = {
        "name": name,
        "method": "grid",
        "metric": {"name": "loss", "goal": "minimize"},
        "parameters": {"x": {"values": [0, 1, 2, 3]}},
        "storage": storage,
        "budget": {"trials": 4},
    }
    cfg.update(extra)
    return cfg


def objective(params, ctx):
    """x=0, 1 complete (x=0 best, saves a model), x=2 fails at the end, x=3 is pruned."""
    x = params["x"]
    for step in (1, 2, 3):
        ctx.report({"loss": x + 1 / step, "accuracy": step / 10}, step=step)
        if x == 3 and step == 2:
            raise hpo.TrialPruned("pruned by the test")
    if x == 2:
        raise ValueError("x=2 breaks the toy")
    folder = ctx.artifact_dir / f"trial-{ctx.number}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text('{"r": 8}')
    ctx.set_attrs(artifact_path=str(folder), tokens_per_s=123.0)
    return {"loss": x + 1 / 3, "accuracy": 0.3, "eval_only": 7.0}


def runs_of(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r}"
    return client.search_runs([exp.experiment_id], max_results=1000)


def wait_for(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not seen in MLflow within {timeout}s: {what}")


def test_live_sweep_parent_children_states_metrics_model(tmp_path, sqlite_url):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    seen_live: dict[str, str] = {}

    def live_objective(params, ctx):
        if ctx.number == 1:  # while this trial runs, MLflow already shows it and trial 0
            ctx.report({"probe": 5.0}, step=0)

            def own_step_zero():
                for run in runs_of(client, "live"):
                    tags = run.data.tags
                    if tags.get("hpo.trial") == "1" and run.data.metrics.get("probe") == 5.0:
                        return run
                return None

            run = wait_for(own_step_zero, "trial 1's first step while it runs")
            seen_live["status"] = run.info.status
            seen_live["first"] = next(r.info.status for r in runs_of(client, "live")
                                      if r.data.tags.get("hpo.trial") == "0")
        return objective(params, ctx)

    cfg = config(sqlite_url, "live", mlflow={"tracking_uri": uri, "experiment": "live",
                                             "register": "hpo-best"})
    result = hpo.run_sweep(cfg, objective=live_objective)
    assert result.counts == {"running": 0, "complete": 2, "pruned": 1, "failed": 1,
                             "interrupted": 0, "paused": 0}
    assert seen_live == {"status": "RUNNING", "first": "FINISHED"}
    summary = result.extra["mlflow"]
    assert summary["final_ok"] and summary["syncs_failed"] == 0, summary

    runs = runs_of(client, "live")
    parents = [r for r in runs if r.data.tags.get("hpo.kind") == "sweep"]
    assert len(parents) == 1 and len(runs) == 5
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.info.run_name == "live"
    assert parent.data.params["method"] == "grid" and parent.data.params["pruner"]
    assert parent.data.params["space.x"].startswith("{")
    assert parent.data.tags["hpo.trials.complete"] == "2"
    assert parent.data.metrics["best_loss"] == pytest.approx(1 / 3)
    by_trial = {}
    for run in runs:
        if run is parent:
            continue
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        x = int(run.data.params["x"])
        by_trial[x] = run
    statuses = {x: (r.info.status, r.data.tags["hpo.state"]) for x, r in by_trial.items()}
    assert statuses == {0: ("FINISHED", "complete"), 1: ("FINISHED", "complete"),
                        2: ("FAILED", "failed"), 3: ("KILLED", "pruned")}
    failed = by_trial[2]
    assert "ValueError: x=2 breaks the toy" in failed.data.tags["hpo.error"]
    assert failed.info.end_time is not None
    assert by_trial[0].data.tags["hpo.device"] and by_trial[0].data.tags["hpo.worker"]
    assert by_trial[0].data.tags["hpo.attr.tokens_per_s"] == "123.0"

    best = by_trial[0]
    history = client.get_metric_history(best.info.run_id, "loss")
    assert [(m.step, round(m.value, 6)) for m in history] == [
        (1, 1.0), (2, 0.5), (3, round(1 / 3, 6))]  # the final value is the last step's
    assert [m.step for m in client.get_metric_history(best.info.run_id, "accuracy")] == [1, 2, 3]
    assert best.data.metrics["eval_only"] == 7.0  # a final metric never reported per step
    pruned = by_trial[3]
    assert [m.step for m in client.get_metric_history(pruned.info.run_id, "loss")] == [1, 2]

    # the best trial's model: an artifact of its run, and a registered model version
    files = [f.path for f in client.list_artifacts(best.info.run_id, "model")]
    assert files == ["model/adapter_config.json"]
    versions = client.search_model_versions("name = 'hpo-best'")
    assert [v.run_id for v in versions] == [best.info.run_id]

    # syncing again (what `hpo mlflow` does) changes nothing
    again = mlflow_sync.sync_sweep(sqlite_url, "live", uri, "live", register="hpo-best")
    assert (again.runs_created, again.metrics_logged, again.duplicates_removed) == (0, 0, 0)
    assert again.model_version == "hpo-best/1"
    assert len(runs_of(client, "live")) == 5
    assert len(client.get_metric_history(best.info.run_id, "loss")) == 3


def run_hpo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "COLUMNS": "400"}
    proc = subprocess.run([sys.executable, "-m", "hpo.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"hpo {' '.join(args)} -> {proc.returncode}\n{proc.stderr}"
    return proc


SWEEP = """\
name: cli
method: grid
metric: {name: loss, goal: minimize}
parameters:
  x: {values: [0, 1, 2, 3]}
trainer: tests.test_mlflow:objective
budget: {trials: 4}
"""


def hpo_here(*args: str) -> str:
    """The same command in this process (mlflow is imported already: saves seconds)."""
    from typer.testing import CliRunner

    from hpo.cli import app

    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "400", "NO_COLOR": "1"})
    assert result.exit_code == 0, f"hpo {' '.join(args)} -> {result.exit_code}\n{result.output}"
    return result.output


def test_cli_sweep_flag_and_idempotent_export(tmp_path, sqlite_url):
    live = f"sqlite:///{tmp_path / 'live.db'}"
    (tmp_path / "cli.yaml").write_text(SWEEP)
    swept = run_hpo("sweep", "cli.yaml", "--storage", sqlite_url, "--no-report", "--mlflow",
                    live, cwd=tmp_path)
    assert "5 runs created" in swept.stdout, swept.stdout + swept.stderr
    assert TrackingStore(sqlite_url).get_sweep("cli").config["mlflow"] == {"tracking_uri": live}
    assert len(runs_of(MlflowClient(live), "cli")) == 5

    # after the fact, into another server, twice: the second run adds nothing
    uri = f"sqlite:///{tmp_path / 'export.db'}"
    args = ("mlflow", "cli", "--tracking-uri", uri, "--storage", sqlite_url,
            "--experiment", "exported")
    first = run_hpo(*args, cwd=tmp_path)
    assert "5 runs created" in first.stdout and "best model runs:/" in first.stdout
    client = MlflowClient(uri)
    runs = runs_of(client, "exported")
    points = {r.info.run_id: len(client.get_metric_history(r.info.run_id, "loss"))
              for r in runs}
    second = hpo_here(*args)
    assert "0 runs created" in second and "0 metric points" in second
    again = runs_of(client, "exported")
    assert {r.info.run_id: len(client.get_metric_history(r.info.run_id, "loss"))
            for r in again} == points
    states = sorted((r.data.tags.get("hpo.state"), r.info.status) for r in again
                    if r.data.tags["hpo.kind"] == "trial")
    assert states == [("complete", "FINISHED"), ("complete", "FINISHED"), ("failed", "FAILED"),
                      ("pruned", "KILLED")]
    # no --tracking-uri: the sweep's own mlflow.tracking_uri, already up to date
    stored = hpo_here("mlflow", "cli", "--storage", sqlite_url)
    assert "0 runs created" in stored and live in stored

    # a run made twice for one trial (two syncers at once) is merged into the oldest
    trial0 = next(r for r in again if r.data.tags.get("hpo.trial") == "0")
    dup = client.create_run(trial0.info.experiment_id, tags={
        k: trial0.data.tags[k] for k in ("hpo.sweep", "hpo.kind", "hpo.trial")})
    report = mlflow_sync.sync_sweep(sqlite_url, "cli", uri, "exported")
    assert report.duplicates_removed == 1
    assert client.get_run(dup.info.run_id).info.lifecycle_stage == "deleted"
    assert len(runs_of(client, "exported")) == 5


def test_agents_mirror_live_taking_turns(tmp_path, sqlite_url):
    """Two `hpo agent` processes of a sweep with `mlflow:`: MLflow gets one parent run and one
    child run per trial (no duplicates from two mirrors), the right statuses, and the best
    model, with no `hpo mlflow --follow` beside them."""
    uri = f"sqlite:///{tmp_path / 'agents-mlflow.db'}"
    (tmp_path / "cli.yaml").write_text(SWEEP.replace("name: cli", "name: ag")
                                       + f"mlflow: {{tracking_uri: '{uri}'}}\n")
    made = run_hpo("sweep", "cli.yaml", "--backend", "agents", "--storage", sqlite_url,
                   cwd=tmp_path)
    assert "hpo agent --study ag" in made.stdout, made.stdout
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    agents = [subprocess.Popen([sys.executable, "-m", "hpo.cli", "agent", "--study", "ag",
                                "--storage", sqlite_url], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for _ in range(2)]
    logs = [a.communicate(timeout=120)[0] for a in agents]
    assert [a.returncode for a in agents] == [0, 0], logs
    runs = runs_of(MlflowClient(uri), "ag")
    parents = [r for r in runs if r.data.tags["hpo.kind"] == "sweep"]
    trials = sorted((int(r.data.tags["hpo.trial"]), r.data.tags["hpo.state"], r.info.status)
                    for r in runs if r.data.tags["hpo.kind"] == "trial")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", logs
    assert sorted(t[0] for t in trials) == [0, 1, 2, 3]  # one run a trial
    assert sorted(t[1:] for t in trials) == [("complete", "FINISHED"), ("complete", "FINISHED"),
                                             ("failed", "FAILED"), ("pruned", "KILLED")]
    best = next(r for r in runs if r.data.tags.get("hpo.trial") == "0")
    assert [f.path for f in MlflowClient(uri).list_artifacts(best.info.run_id, "model")] == [
        "model/adapter_config.json"], logs
    assert all("MLflow" in text for text in logs), logs  # each agent says what it sent


def test_mlflow_tables_are_made_under_a_lock_on_sqlite(tmp_path, monkeypatch):
    """Two agents opening a new sqlite:/// MLflow database at once ran MLflow's migrations
    together and left it half-migrated ("table _alembic_tmp_latest_metrics already exists"
    for every later client): the tables are now made while holding <db>.hpo-lock."""
    import fcntl

    import mlflow.store.db.utils as db_utils

    db = tmp_path / "sub" / "new-mlflow.db"
    uri = f"sqlite:///{db}"
    lock = mlflow_sync.sqlite_lock_path(uri)
    assert lock == Path(f"{db}.hpo-lock")
    held = []
    real = db_utils._initialize_tables

    def initialize(engine):  # MLflow making its tables: is the lock held by someone?
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(False)
        except BlockingIOError:
            held.append(True)
        finally:
            os.close(fd)
        return real(engine)

    monkeypatch.setattr(db_utils, "_initialize_tables", initialize)
    client = mlflow_sync.open_client(uri)
    assert held == [True]
    client.create_experiment("after")  # the database works, and the lock was released:
    fd = os.open(lock, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(fd)
    assert mlflow_sync.sqlite_lock_path("http://mlflow:5000") is None
    assert mlflow_sync.sqlite_lock_path("sqlite:///:memory:") is None


def test_take_turn_lets_one_process_per_interval(storage_url, monkeypatch):
    from datetime import UTC, datetime, timedelta

    from hpo.tracking import store as store_module

    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    monkeypatch.setattr(store_module, "_now", lambda: now[0])
    a, b = TrackingStore(storage_url), TrackingStore(storage_url)
    assert a.take_turn("mlflow:x", 5.0) and not b.take_turn("mlflow:x", 5.0)
    assert b.take_turn("mlflow:other", 5.0)  # another key: its own turns
    now[0] += timedelta(seconds=4.9)
    assert not a.take_turn("mlflow:x", 5.0) and not b.take_turn("mlflow:x", 5.0)
    now[0] += timedelta(seconds=0.2)
    assert b.take_turn("mlflow:x", 5.0) and not a.take_turn("mlflow:x", 5.0)


def test_mlflow_down_never_fails_a_trial(sqlite_url, caplog):
    down = "http://127.0.0.1:9"  # the discard port: nothing listens
    caplog.set_level(logging.WARNING, logger="hpo.mlflow")
    started = time.monotonic()
    result = hpo.run_sweep(config(sqlite_url, "down", mlflow=down), objective=objective)
    assert time.monotonic() - started < 30
    assert result.counts["complete"] == 2 and result.counts["failed"] == 1
    assert result.counts["pruned"] == 1
    summary = result.extra["mlflow"]
    assert not summary["final_ok"] and summary["syncs_failed"] >= 1
    assert "cannot connect to 127.0.0.1:9" in summary["last_error"]
    text = caplog.text
    assert "MLflow http://127.0.0.1:9 was skipped" in text
    assert "hpo mlflow down --tracking-uri http://127.0.0.1:9" in text
    with pytest.raises(mlflow_sync.MlflowError, match="unreachable"):
        mlflow_sync.sync_sweep(sqlite_url, "down", down)
    assert len(TrackingStore(sqlite_url).trials("down")) == 4


def test_incremental_sync_of_running_and_interrupted_trials(tmp_path, sqlite_url):
    """The tracking store as the placements write it (agents, Ray, worker processes)."""
    store = TrackingStore(sqlite_url)
    store.create_sweep("agents", config={"method": "random"}, config_yaml=None,
                       objective="loss", goal="minimize", method="random", pruner="none",
                       storage=sqlite_url)
    store.start_trial("agents", 0, {"lr": 0.1, "opt": {"beta": 0.9}}, worker="agent-a")
    store.log_metrics("agents", 0, 1, {"loss": 3.0, "tokens/s": 100.0})
    store.start_trial("agents", 1, {"lr": 0.2, "opt": {"beta": 0.8}}, worker="agent-b")
    store.log_metrics("agents", 1, 1, {"loss": 4.0})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    first = mlflow_sync.sync_sweep(store, "agents", uri)
    assert (first.runs_created, first.metrics_logged) == (3, 3)
    run = {r.data.tags.get("hpo.trial"): r for r in runs_of(client, "agents")}
    assert run["0"].info.status == "RUNNING" and run[None].info.status == "RUNNING"
    assert run["0"].data.params == {"lr": "0.1", "opt.beta": "0.9"}
    assert run["0"].data.tags["hpo.worker"] == "agent-a"

    store.log_metrics("agents", 0, 2, {"loss": 2.0, "tokens/s": 110.0})
    store.log_metrics("agents", 1, 2, {"loss": 3.5})
    store.end_trial("agents", 0, "complete", value=2.0, metrics={"loss": 2.0, "f1@0.5": 0.9})
    store.end_trial("agents", 1, "interrupted", value=None)
    store.end_sweep("agents", "interrupted")
    second = mlflow_sync.sync_sweep(store, "agents", uri)
    assert (second.runs_created, second.metrics_logged) == (0, 4)  # 3 new points + a final one
    run = {r.data.tags.get("hpo.trial"): r for r in runs_of(client, "agents")}
    assert (run["0"].info.status, run["1"].info.status) == ("FINISHED", "KILLED")
    assert run["1"].data.tags["hpo.state"] == "interrupted"
    assert run[None].info.status == "KILLED" and run[None].data.tags["hpo.best_trial"] == "0"
    history = client.get_metric_history(run["0"].info.run_id, "tokens/s")
    assert [(m.step, m.value) for m in history] == [(1, 100.0), (2, 110.0)]
    assert run["0"].data.metrics["f1_0.5"] == 0.9  # a key MLflow refuses, made valid
    assert "no model to log" in " ".join(second.notes)
    # an agents sweep is followed from outside: --follow returns once the sweep has ended
    summary = mlflow_sync.follow_sweep(store, "agents", uri, interval_s=0.1)
    assert summary.final_ok and summary.total.metrics_logged == 0


def test_mlflow_key_forms_and_overrides():
    base = config("sqlite:///x.db", "cfg", trainer="examples.objectives:noop")
    plain = parse_config({**base, "mlflow": "http://mlflow:5000"})
    assert plain.mlflow.tracking_uri == "http://mlflow:5000" and plain.mlflow.experiment is None
    full = parse_config({**base, "mlflow": {"tracking_uri": "http://u:secret@mlflow:5000",
                                            "experiment": "e", "register": "m"}})
    moved = full.with_overrides(mlflow="http://other:5000")
    assert moved.mlflow.tracking_uri == "http://other:5000" and moved.mlflow.experiment == "e"
    assert "secret" not in str(full.to_dict()) and full.to_dict()["mlflow"]["register"] == "m"
    with pytest.raises(HpoError, match="mlflow"):
        parse_config({**base, "mlflow": {"uri": "http://x"}})
    with pytest.raises(HpoError, match="tracking URI"):
        parse_config({**base, "mlflow": 5})


def test_missing_mlflow_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` does uninstalled
    with pytest.raises(mlflow_sync.MlflowError, match=r"pip install 'hpo\[mlflow\]'"):
        mlflow_sync.require_mlflow()
