"""The `hpo` command as users script it: real subprocesses, real storage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpo.tracking import TrackingStore

REPO = Path(__file__).resolve().parents[1]


def run_hpo(*args: str, cwd: Path | None = None, check: bool = True, timeout: float = 120):
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "hpo.cli", *args], cwd=cwd or REPO, env=env,
        capture_output=True, text=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        msg = f"hpo {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        raise AssertionError(msg)
    return proc


SWEEP = """\
name: {name}
method: random
metric: {{name: loss, goal: minimize}}
parameters:
  x: {{min: 0.0, max: 1.0}}
  seconds: {{value: {seconds}}}
trainer: examples.objectives:sleep
parallel: {parallel}
seed: 0
budget: {{trials: {trials}}}
"""


def write_sweep(tmp_path: Path, name="s", seconds=0.0, parallel=1, trials=3) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SWEEP.format(name=name, seconds=seconds, parallel=parallel, trials=trials))
    return path


def test_sweep_status_best_trials(tmp_path, sqlite_url):
    sweep = write_sweep(tmp_path, trials=4)
    out = run_hpo("sweep", str(sweep), "--storage", sqlite_url, "--no-report")
    assert "best trial" in out.stdout
    status = run_hpo("status", "--storage", sqlite_url)
    assert "s" in status.stdout and "4" in status.stdout
    best = run_hpo("best", "s", "--storage", sqlite_url, "--format", "json")
    assert json.loads(best.stdout)["state"] == "complete"
    rows = json.loads(run_hpo("trials", "s", "--storage", sqlite_url, "--format", "json").stdout)
    assert len(rows) == 4
    for key in ("number", "state", "value", "params", "steps", "started", "ended", "worker"):
        assert key in rows[0]
    csv_out = run_hpo("trials", "s", "--storage", sqlite_url, "--format", "csv").stdout
    assert csv_out.splitlines()[0].startswith("number,state,value")
    assert len(csv_out.strip().splitlines()) == 5


def test_default_storage_is_hpo_db_in_cwd_and_env_overrides(tmp_path):
    sweep = write_sweep(tmp_path, trials=1)
    run_hpo("sweep", str(sweep), "--no-report", cwd=tmp_path)
    assert (tmp_path / "hpo.db").exists()
    env_db = tmp_path / "env.db"
    os.environ["HPO_STORAGE"] = f"sqlite:///{env_db}"
    try:
        run_hpo("sweep", str(sweep), "--no-report", cwd=tmp_path)
    finally:
        del os.environ["HPO_STORAGE"]
    assert env_db.exists()


def test_bad_yaml_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: tpe\nmetric: {name: loss}\nparameters:\n  lr: {min: 1, max: oops}\n"
                   "trainer: examples.objectives:noop\n")
    proc = run_hpo("sweep", str(bad), "--no-report", check=False, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "bad.yaml" in proc.stderr and "parameters.lr" in proc.stderr
    assert not (tmp_path / "hpo.db").exists()


def test_unknown_sweep_and_masked_password(tmp_path, sqlite_url):
    TrackingStore(sqlite_url).close()  # an hpo database without that sweep
    proc = run_hpo("best", "nope", "--storage", sqlite_url, check=False)
    assert proc.returncode == 2 and "nope" in proc.stderr and "Traceback" not in proc.stderr
    url = "postgresql://alice:s3cret@127.0.0.1:1/db"
    proc = run_hpo("status", "--storage", url, check=False)
    assert proc.returncode == 2 and "s3cret" not in proc.stderr + proc.stdout
    assert "alice:***@" in proc.stderr


HELD_TRAINER = """\
import os, time

def sleep(params, ctx):
    time.sleep(float(params["seconds"]))
    while os.path.exists(params["hold"]):  # the test holds trials here until it interrupts
        time.sleep(0.05)
    return {"loss": float(params["x"]) ** 2}
"""


@pytest.mark.parametrize("parallel", [1, 2])
def test_ctrl_c_keeps_finished_trials_and_resumes(tmp_path, sqlite_url, parallel):
    hold = tmp_path / "hold"
    (tmp_path / "held.py").write_text(HELD_TRAINER)
    sweep = write_sweep(tmp_path, name="slow", seconds=0.3, parallel=parallel, trials=10)
    sweep.write_text(sweep.read_text().replace("examples.objectives:sleep", "held:sleep").replace(
        "  seconds:", f"  hold: {{value: '{hold}'}}\n  seconds:"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "hpo.cli", "sweep", str(sweep), "--storage", sqlite_url,
           "--no-report"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    store = TrackingStore(sqlite_url)

    def wait_for(condition) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not condition():
            time.sleep(0.02)

    def so_far() -> dict[str, int]:
        try:
            return store.counts("slow")
        except Exception:  # the sweep is not recorded yet
            return {}

    wait_for(lambda: so_far().get("complete", 0) >= 3)
    hold.touch()  # from now on no trial can finish: the interrupt surely finds one running
    time.sleep(0.6)
    wait_for(lambda: [t for t in store.trials("slow", states=["running"]) if t.pid])
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "resume" in stderr
    counts = store.counts("slow")
    complete_before = counts["complete"]
    assert complete_before >= 3 and counts["running"] == 0
    assert counts["interrupted"] >= 1
    done_before = {t.number: t.value for t in store.trials("slow", states=["complete"])}
    hold.unlink()
    # the same command resumes: the budget (10 finished) is met, nothing finished is lost
    run_hpo("sweep", str(sweep), "--storage", sqlite_url, "--no-report", cwd=tmp_path)
    after = store.counts("slow")
    assert after["complete"] == 10
    kept = {t.number: t.value for t in store.trials("slow", states=["complete"])}
    assert all(kept[n] == v for n, v in done_before.items())


# -- usage errors and bad arguments: one or two lines, exit code 2, nothing created ---------------
@pytest.mark.parametrize("args", [
    ["sweep", "{sweep}", "--trails", "3"],
    ["frobnicate"],
    ["agent"],
    ["trials", "X", "--format", "xml"],
    ["sweep", "{sweep}", "--trials", "abc"],
    ["best", "X", "--format", "xml"],
    ["trials", "X", "--state", "bogus"],
])
def test_usage_errors_are_two_lines_and_exit_2(tmp_path, args):
    sweep = write_sweep(tmp_path)
    proc = run_hpo(*[a.format(sweep=sweep) for a in args], cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "hpo.db").exists()


def test_usage_error_messages_say_what_to_fix(tmp_path):
    sweep = write_sweep(tmp_path)
    assert "Possible options: --trials" in run_hpo("sweep", str(sweep), "--trails", "3",
                                                   check=False).stderr
    assert "No such command 'frobnicate'" in run_hpo("frobnicate", check=False).stderr
    assert "Missing option '--study'" in run_hpo("agent", check=False).stderr
    state = run_hpo("trials", "X", "--state", "bogus", check=False).stderr
    assert "'bogus' is not a trial state" in state and "complete" in state


def test_version():
    from hpo import __version__

    proc = run_hpo("--version")
    assert proc.stdout.strip() == f"hpo {__version__}"


@pytest.mark.parametrize("command", [["status"], ["best", "s"], ["trials", "s"], ["report", "s"]])
def test_read_commands_never_create_a_database(tmp_path, command):
    db = tmp_path / "nonexistent.db"
    proc = run_hpo(*command, "--storage", f"sqlite:///{db}", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert f"no hpo database at '{db}'" in proc.stderr
    assert not db.exists() and not list(tmp_path.glob("*.db*"))
    proc = run_hpo(*command, cwd=tmp_path, check=False)  # the default storage: hpo.db here
    assert proc.returncode == 2 and "the default storage" in proc.stderr
    assert not (tmp_path / "hpo.db").exists()


def test_report_to_an_unwritable_path_is_one_line(tmp_path, sqlite_url):
    sweep = write_sweep(tmp_path, trials=1)
    run_hpo("sweep", str(sweep), "--storage", sqlite_url, "--no-report")
    proc = run_hpo("report", "s", "--storage", sqlite_url, "-o", "/proc/x.html", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "cannot write the report to '/proc/x.html" in proc.stderr and "-o PATH" in proc.stderr


def test_trial_timeout_option_reaches_run_sweep(tmp_path, monkeypatch):
    """--trial-timeout is the sweep's `timeout` override (checked against the file first)."""
    import hpo.sweep
    from hpo import cli

    seen = {}

    def fake_run_sweep(config, **kw):
        seen.update(kw, config=config)
        raise typer_exit()

    def typer_exit():
        import typer

        return typer.Exit(0)

    monkeypatch.setattr(hpo.sweep, "run_sweep", fake_run_sweep)
    sweep = write_sweep(tmp_path)
    rc = cli.app(["sweep", str(sweep), "--trial-timeout", "7.5", "--no-report"],
                 standalone_mode=False)
    assert rc == 0 and seen["timeout"] == 7.5 and seen["config"].timeout == 7.5
    seen.clear()
    cli.app(["sweep", str(sweep), "--no-report"], standalone_mode=False)
    assert "timeout" not in seen and seen["config"].timeout is None


def test_no_arguments_prints_the_help():
    proc = run_hpo(check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    assert "sweep" in proc.stderr + proc.stdout and "error:" not in proc.stderr
