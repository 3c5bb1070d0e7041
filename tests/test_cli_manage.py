"""Managing sweeps from the command line: every metric (`hpo trials`, `hpo metrics`,
`hpo status --format json`), `hpo stop`, `hpo delete`, `hpo dashboard` (the real
optuna-dashboard answering on localhost), `hpo sweep --dry-run`, sweep names of W&B files, and
plain Optuna on an hpo database.

Most commands run in-process through ``hpo.cli.main`` (exit codes and output as a user sees
them, without a subprocess start each); the sweep, stop and dashboard tests run real
subprocesses against a real SQLite file (and PostgreSQL where storage matters).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

from hpo import cli
from hpo.config import load_config
from hpo.errors import StudyNotFound
from hpo.study import open_storage, sweep_name
from hpo.tracking import TrackingStore

REPO = Path(__file__).resolve().parents[1]


def hpo(capsys, monkeypatch, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """Run ``hpo ARGS`` in this process: (exit code, stdout, stderr)."""
    monkeypatch.setenv("COLUMNS", "200")
    for console in (cli.out, cli.err):  # made at import, when another test may have run
        monkeypatch.setattr(console, "width", 200)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setattr(sys, "argv", ["hpo", *args])
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    capsys.readouterr()
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    got = capsys.readouterr()
    return code, got.out, got.err


def run_hpo(*args: str, cwd: Path | None = None, timeout: float = 120
            ) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "hpo.cli", *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def metric_sweep(url: str, name: str = "m", *, status: str | None = None,
                 running: bool = True) -> TrackingStore:
    """Five trials that report loss, acc and tokens/s per step; trial 4 still runs (or, with
    ``running=False``, completes)."""
    store = TrackingStore(url)
    store.create_sweep(name, config={"metric": {"name": "loss"}}, config_yaml=None,
                       objective="loss", goal="minimize", method="random", pruner="none",
                       storage=url)
    for n in range(5):
        store.start_trial(name, n, {"x": n / 10})
        for step in (1, 2, 3):
            store.log_metrics(name, n, step, {"loss": 1.0 / (n + step), "acc": step / 4 + n,
                                              "tokens/s": 100.0 * step})
        if n == 4 and running:
            continue
        if n == 1:
            store.end_trial(name, n, "pruned", value=1.0 / (n + 3))
        elif n == 2:
            store.end_trial(name, n, "failed", value=None, error="boom")
        else:  # the trainer's own final metrics win over the last reported step
            store.end_trial(name, n, "complete", value=0.5 + n,
                            metrics={"loss": 0.5 + n, "eval_f1": 0.9})
    if status is not None:
        store.end_sweep(name, status)
    return store


# -- every metric -----------------------------------------------------------------------------
def test_trials_json_and_csv_carry_the_final_value_of_every_metric(sqlite_url, capsys,
                                                                  monkeypatch):
    metric_sweep(sqlite_url).close()
    code, out, _ = hpo(capsys, monkeypatch, "trials", "m", "--storage", sqlite_url,
                       "--format", "json")
    assert code == 0
    rows = {r["number"]: r for r in json.loads(out)}
    assert rows[0]["metrics"] == {"loss": 0.5, "acc": 0.75, "tokens/s": 300.0, "eval_f1": 0.9}
    assert rows[1]["metrics"] == {"loss": 0.25, "acc": 1.75, "tokens/s": 300.0}  # last step
    assert rows[4]["state"] == "running" and rows[4]["metrics"]["acc"] == 4.75
    code, out, _ = hpo(capsys, monkeypatch, "trials", "m", "--storage", sqlite_url,
                       "--format", "csv", "--state", "pruned")
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].endswith(",error,metrics") and len(lines) == 2
    code, out, _ = hpo(capsys, monkeypatch, "trials", "m", "--storage", sqlite_url)
    assert code == 0 and "tokens/s" in out and "eval_f1" in out


def test_metrics_prints_step_histories(sqlite_url, capsys, monkeypatch):
    metric_sweep(sqlite_url).close()
    code, out, _ = hpo(capsys, monkeypatch, "metrics", "m", "--storage", sqlite_url)
    lines = out.strip().splitlines()
    assert code == 0 and lines[0] == "trial,step,metric,value,logged_at"
    assert len(lines) == 1 + 5 * 3 * 3 and lines[1].startswith("0,1,acc,0.25,")
    code, out, _ = hpo(capsys, monkeypatch, "metrics", "m", "--trial", "3", "--trial", "1",
                       "--metric", "tokens/s", "--format", "json", "--storage", sqlite_url)
    rows = json.loads(out)
    assert code == 0 and [(r["trial"], r["step"], r["value"]) for r in rows] == [
        (1, 1, 100.0), (1, 2, 200.0), (1, 3, 300.0), (3, 1, 100.0), (3, 2, 200.0), (3, 3, 300.0)]
    assert {r["metric"] for r in rows} == {"tokens/s"} and rows[0]["logged_at"].endswith("+00:00")
    code, _, err = hpo(capsys, monkeypatch, "metrics", "m", "--trial", "9", "--storage",
                       sqlite_url)
    assert code == 2 and "has no trial 9 (its trials: 0-4)" in err
    code, _, err = hpo(capsys, monkeypatch, "metrics", "m", "--metric", "f1", "--storage",
                       sqlite_url)
    assert code == 2 and "metrics reported: acc, loss, tokens/s" in err
    code, _, err = hpo(capsys, monkeypatch, "metrics", "nope", "--storage", sqlite_url)
    assert code == 2 and "No sweep named 'nope'" in err


def test_status_json_and_csv(sqlite_url, capsys, monkeypatch):
    metric_sweep(sqlite_url, "a", status="finished").close()
    metric_sweep(sqlite_url, "b").close()
    code, out, _ = hpo(capsys, monkeypatch, "status", "--storage", sqlite_url, "--format", "json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and set(rows) == {"a", "b"}
    a = rows["a"]
    assert a["status"] == "finished" and a["trials"] == 5 and a["objective"] == "loss"
    assert a["counts"] == {"running": 1, "complete": 2, "pruned": 1, "failed": 1,
                           "interrupted": 0, "paused": 0}
    assert a["best_number"] == 0 and a["best_value"] == 0.5 and a["started"].endswith("+00:00")
    code, out, _ = hpo(capsys, monkeypatch, "status", "--storage", sqlite_url, "--format", "csv")
    head, *lines = out.strip().splitlines()
    assert head.startswith("name,status,method,objective,goal,trials,complete,pruned")
    assert len(lines) == 2


# -- stop and delete ----------------------------------------------------------------------------
def test_stop_asks_a_running_sweep_once(sqlite_url, capsys, monkeypatch):
    metric_sweep(sqlite_url, "run").close()
    metric_sweep(sqlite_url, "done", status="finished").close()
    code, out, _ = hpo(capsys, monkeypatch, "stop", "run", "--storage", sqlite_url)
    assert code == 0 and "asked sweep run to stop" in out and "1 running trial finishes" in out
    assert TrackingStore(sqlite_url).get_sweep("run").status == "stopping"
    code, out, _ = hpo(capsys, monkeypatch, "stop", "run", "--storage", sqlite_url)
    assert code == 0 and "already stopping" in out
    code, out, _ = hpo(capsys, monkeypatch, "stop", "done", "--storage", sqlite_url)
    assert code == 0 and "not running (status finished)" in out
    code, _, err = hpo(capsys, monkeypatch, "stop", "nope", "--storage", sqlite_url)
    assert code == 2 and "No sweep named 'nope'" in err and "'done'" in err


SLOW_SWEEP = """\
method: random
metric: {name: loss, goal: minimize}
parameters:
  x: {min: 0.0, max: 1.0}
  seconds: {value: 0.4}
trainer: examples.objectives:sleep
seed: 0
parallel: 2
budget: {trials: 200}
"""


def test_stop_ends_a_running_sweep(tmp_path, sqlite_url):
    path = tmp_path / "slow.yaml"
    path.write_text(SLOW_SWEEP)
    name = sweep_name(load_config(path).with_overrides(storage=sqlite_url))
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "hpo.cli", "sweep", str(path), "--storage",
                             sqlite_url, "--no-report"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        store = None
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            if store is None and Path(sqlite_url[len("sqlite:///"):]).exists():
                store = TrackingStore(sqlite_url)
            try:
                if store is not None and store.counts(name)["complete"] >= 2:
                    break
            except StudyNotFound:  # not created yet
                continue
        stop = run_hpo("stop", name, "--storage", sqlite_url)
        assert stop.returncode == 0 and f"asked sweep {name} to stop" in stop.stdout, stop.stderr
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert f"sweep name: {name} (the file's stem + a hash" in err
    store = TrackingStore(sqlite_url)
    counts = store.counts(name)
    assert counts["running"] == 0 and 2 <= counts["complete"] < 200, counts
    assert store.get_sweep(name).status != "running"


def test_delete_asks_first(sqlite_url, capsys, monkeypatch):
    store = metric_sweep(sqlite_url, "gone", status="finished", running=False)
    optuna.create_study(study_name="gone", storage=open_storage(sqlite_url, "gone", store))
    metric_sweep(sqlite_url, "kept", status="finished").close()
    args = ("delete", "gone", "--storage", sqlite_url)
    code, _, err = hpo(capsys, monkeypatch, *args, stdin="n\n")
    assert code == 1 and "nothing deleted" in err
    code, _, err = hpo(capsys, monkeypatch, *args, stdin="")  # no answer: nothing either
    assert code == 1 and "nothing deleted (pass --yes" in err
    assert store.get_sweep("gone").name == "gone"
    code, out, _ = hpo(capsys, monkeypatch, *args, stdin="y\n")
    assert code == 0 and "deleted sweep 'gone' (5 trials" in out
    assert [s.name for s in store.list_sweeps()] == ["kept"]
    assert store.read_journal("gone", 0) == []  # the Optuna study went with it
    assert len(store.metrics("kept")) == 45
    code, _, err = hpo(capsys, monkeypatch, *args, "--yes")
    assert code == 2 and "No sweep named 'gone'" in err


def test_delete_refuses_a_sweep_with_running_trials(sqlite_url, capsys, monkeypatch):
    metric_sweep(sqlite_url, "busy").close()
    code, _, err = hpo(capsys, monkeypatch, "delete", "busy", "--yes", "--storage", sqlite_url)
    assert code == 2 and "1 running trial: stop it first (hpo stop busy)" in err
    code, out, _ = hpo(capsys, monkeypatch, "delete", "busy", "--yes", "--force", "--storage",
                       sqlite_url)
    assert code == 0 and TrackingStore(sqlite_url).list_sweeps() == []


# -- sweep names ----------------------------------------------------------------------------
WANDB = """\
program: train.py
method: bayes
metric:
  name: val_loss
  goal: minimize
parameters:
  lr:
    distribution: log_uniform_values
    min: 0.0005
    max: 0.1
  momentum:
    values: [0.0, 0.5, 0.9]
  epochs:
    value: 3
command:
  - ${env}
  - ${interpreter}
  - ${program}
  - ${args}
early_terminate:
  type: hyperband
  min_iter: 3
run_cap: 20
"""


def test_sweep_name_of_a_file_without_one(tmp_path, sqlite_url):
    path = tmp_path / "sweep.yaml"
    path.write_text(WANDB)
    config = load_config(path).with_overrides(storage=sqlite_url)
    name = sweep_name(config)
    assert name.startswith("sweep-") and len(name) == len("sweep-") + 6
    assert all(c in "0123456789abcdef" for c in name[-6:])
    assert not Path(sqlite_url[len("sqlite:///"):]).exists()  # the look-up created nothing
    path.write_text(WANDB.replace("run_cap: 20", "run_cap: 50\nparallel: 2"))
    assert sweep_name(load_config(path).with_overrides(storage=sqlite_url)) == name  # resumes
    other = tmp_path / "other" / "sweep.yaml"
    other.parent.mkdir()
    other.write_text(WANDB.replace("max: 0.1", "max: 0.2"))
    assert sweep_name(load_config(other)) not in (name, "sweep")
    assert sweep_name(config, "given") == "given"
    path.write_text("project: mnist-tuning\n" + WANDB)
    assert sweep_name(load_config(path)) == "mnist-tuning"
    path.write_text("name: mine\nproject: mnist-tuning\n" + WANDB)
    assert sweep_name(load_config(path)) == "mine"


def test_a_sweep_stored_under_the_bare_stem_keeps_its_name(tmp_path, storage_url):
    path = tmp_path / "sweep.yaml"
    path.write_text(WANDB)
    config = load_config(path).with_overrides(storage=storage_url)
    assert sweep_name(config) != "sweep"
    store = TrackingStore(storage_url)  # a sweep created before names had the hash
    store.create_sweep("sweep", config=config.to_dict(), config_yaml=config.text,
                       objective="val_loss", goal="minimize", method="bayes", pruner="none",
                       storage=storage_url)
    store.close()
    assert sweep_name(config) == "sweep"


# -- dry run ----------------------------------------------------------------------------------
def test_dry_run_prints_the_plan_and_touches_no_storage(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "sweep.yaml").write_text(WANDB)
    db = tmp_path / "never.db"
    code, out, err = hpo(capsys, monkeypatch, "sweep", "sweep.yaml", "--dry-run", "--storage",
                         f"sqlite:///{db}", "--seed", "3")
    assert code == 0, err
    plan = dict(line.split(None, 1) for line in out.strip().splitlines()[:-1]
                if not line.startswith("first trial"))
    assert plan["sweep"].startswith("sweep-") and "(not opened)" in plan["storage"]
    assert plan["space"] == "2 parameters (lr, momentum); continuous (no finite grid)"
    assert plan["sampler"].startswith("GPSampler(seed=3") and "HyperbandPruner" in plan["pruner"]
    assert plan["budget"] == "20 trials" and plan["parallel"] == "1 on backend local"
    assert plan["rungs"].startswith("brackets from step 3, eta 3; nothing is pruned until")
    command = plan["command"].split()
    assert command[1:3] == [sys.executable, "train.py"] and command[-1] == "--epochs=3"
    assert command[3].startswith("--lr=") and command[4].startswith("--momentum=")
    assert "first trial  {" in out and out.strip().endswith("nothing was run or written.")
    assert not db.exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "sweep.yaml", "train.py"]

    (tmp_path / "grid.yaml").write_text(
        "method: grid\nmetric: {name: loss}\ntrainer: examples.objectives:sleep\n"
        "parameters:\n  a: {values: [1, 2, 3]}\n  b: {values: [x, y]}\n  c: {min: 1, max: 4}\n")
    code, out, err = hpo(capsys, monkeypatch, "sweep", "grid.yaml", "--dry-run", "--storage",
                         f"sqlite:///{db}")
    assert code == 0, err
    assert "3 parameters (a, b, c); 24 combinations" in out and "24 trials (the grid)" in out
    assert 'first trial  {"a": 1, "b": "x", "c": 1}' in out
    assert "trainer      examples.objectives:sleep" in out and not db.exists()


def test_dry_run_of_a_bad_file_fails_with_the_usual_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("")
    (tmp_path / "bad.yaml").write_text(WANDB.replace("method: bayes", "method: bayse"))
    code, out, err = hpo(capsys, monkeypatch, "sweep", "bad.yaml", "--dry-run")
    assert code == 2 and out == "" and "bad.yaml:2: method: expected" in err
    (tmp_path / "missing.yaml").write_text(WANDB.replace("program: train.py", "program: t.py"))
    code, out, err = hpo(capsys, monkeypatch, "sweep", "missing.yaml", "--dry-run")
    assert code == 2 and "found no 't.py'" in err and not (tmp_path / "hpo.db").exists()


# -- optuna-dashboard -------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_dashboard_serves_the_sweeps_study(tmp_path, sqlite_url):
    pytest.importorskip("optuna_dashboard", reason="pip install 'hpo[dashboard]'")
    path = tmp_path / "dash.yaml"
    path.write_text(SLOW_SWEEP.replace("0.4", "0.0").replace("200", "6").replace(
        "parallel: 2", "parallel: 1") + "name: dash\n")
    swept = run_hpo("sweep", str(path), "--storage", sqlite_url, "--no-report")
    assert swept.returncode == 0, swept.stderr
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "hpo.cli", "dashboard", "dash", "--port",
                             str(port), "--storage", sqlite_url], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                status, body = _get(f"{base}/api/studies")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.3)
        assert status == 200
        studies = json.loads(body)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["dash"]
        status, body = _get(f"{base}/api/studies/{studies[0]['study_id']}?after=0")
        detail = json.loads(body)
        assert status == 200 and len(detail["trials"]) == 6
        assert {t["state"] for t in detail["trials"]} == {"Complete"}
        status, page = _get(f"{base}/dashboard/")
        assert status == 200 and b"<html" in page.lower()
        req = urllib.request.Request(f"{base}/api/studies/{studies[0]['study_id']}",
                                     method="DELETE")
        with pytest.raises(urllib.error.HTTPError):  # the study stays: use `hpo delete`
            urllib.request.urlopen(req, timeout=5)
        assert [s["study_name"] for s in json.loads(_get(f"{base}/api/studies")[1])[
            "study_summaries"]] == ["dash"]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and f"http://127.0.0.1:{port}/dashboard/" in err
    assert "dashboard stopped" in err


def test_dashboard_errors_say_what_to_do(sqlite_url, capsys, monkeypatch):
    metric_sweep(sqlite_url, "nojournal").close()  # tracking rows, no Optuna study
    if "optuna_dashboard" in sys.modules or _importable("optuna_dashboard"):
        code, _, err = hpo(capsys, monkeypatch, "dashboard", "nojournal", "--storage",
                           sqlite_url)
        assert code == 2 and "has no Optuna study" in err
        code, _, err = hpo(capsys, monkeypatch, "dashboard", "nope", "--storage", sqlite_url)
        assert code == 2 and "No sweep named 'nope'" in err
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # as if not installed
    code, _, err = hpo(capsys, monkeypatch, "dashboard", "nojournal", "--storage", sqlite_url)
    assert code == 2 and "pip install 'hpo[dashboard]'" in err


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# -- plain Optuna on the hpo URL ---------------------------------------------------------------
OPTUNA_TABLES = {"studies", "trials", "version_info", "alembic_version", "study_directions",
                 "trial_values", "trial_params"}


def test_plain_optuna_on_an_hpo_database_fails_and_adds_nothing(storage_url):
    store = TrackingStore(storage_url)
    store.close()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with pytest.raises(sa.exc.SQLAlchemyError, match="studies"):
        optuna.load_study(study_name="anything", storage=storage_url)
    with pytest.raises(sa.exc.SQLAlchemyError, match="studies"):
        optuna.create_study(study_name="anything", storage=storage_url)
    engine = sa.create_engine(storage_url, poolclass=sa.pool.NullPool)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert not tables & OPTUNA_TABLES, tables
    assert {"hpo_meta", "hpo_sweeps", "hpo_journal"} <= tables
    TrackingStore(storage_url).close()  # hpo itself still opens it


def test_hpo_next_to_existing_optuna_tables_leaves_them_usable(sqlite_url):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna.create_study(study_name="theirs", storage=sqlite_url)
    TrackingStore(sqlite_url).close()  # no guard where Optuna's tables already are
    study = optuna.load_study(study_name="theirs", storage=sqlite_url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(study.trials) == 2
