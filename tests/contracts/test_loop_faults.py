"""The loop's faults, each reproduced deterministically: a coordinator killed with its
workers busy, two coordinators on one sweep, hangs and timeouts, the database down at start,
PostgreSQL restarting under a local sweep, and which storage errors are retried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import hpo
from hpo.tracking import TrackingStore
from tests.contracts.agreement import check_agreement, counted
from tests.test_agents import _pg_restart_command

REPO = Path(__file__).resolve().parents[2]


def _sweep_file(tmp_path: Path, url: str, name: str, **extra) -> Path:
    cfg = {"name": name, "method": "random", "seed": 3, "metric": {"name": "loss"},
           "parameters": {"x": {"min": -1.0, "max": 1.0}}, "storage": url,
           "trainer": "examples.objectives:gated", "budget": {"trials": 6}, "parallel": 2}
    cfg["parameters"]["gate"] = {"value": str(tmp_path / "gate")}
    cfg.update(extra)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _hpo(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "hpo.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_running(url: str, name: str, n: int, timeout: float = 90) -> list:
    store = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            store = store or TrackingStore(url)
            running = [t for t in store.trials(name, states=["running"])
                       if t.worker and not t.worker.startswith("loop:")]
            if len(running) >= n:
                return running
        except Exception:  # noqa: BLE001 - the sweep may not exist yet
            pass
        time.sleep(0.05)
    raise AssertionError(f"{n} trials of {name} never ran at once")


def test_coordinator_killed_with_busy_workers_then_resumed(tmp_path, sqlite_url):
    """kill -9 of `hpo sweep` while both workers hold a trial: the orphaned workers finish
    theirs, the resumed sweep counts them (their owners are alive) and waits for them, and
    the budget of 6 ends with exactly 6."""
    path = _sweep_file(tmp_path, sqlite_url, "orphans")
    first = _hpo("sweep", str(path), "--no-report")
    running = _wait_running(sqlite_url, "orphans", 2)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    resumed = _hpo("sweep", str(path), "--no-report")
    # the resumed sweep is running trials of its own beside the two orphans: only now may
    # anything finish, so the resume surely meets the orphans running (no timing)
    _wait_running(sqlite_url, "orphans", 3)
    (tmp_path / "gate").touch()
    out, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err[-3000:]
    counts = check_agreement(sqlite_url, "orphans")
    assert counted(sqlite_url, "orphans") == 6 and counts["complete"] == 6, counts
    rows = {t.number: t for t in TrackingStore(sqlite_url).trials("orphans")}
    for t in running:  # the orphans' results were kept, not failed
        assert rows[t.number].state == "complete", rows[t.number]


def test_two_coordinators_share_one_budget(tmp_path, sqlite_url):
    """Two `hpo sweep` on the same file at once: the second joins as another placement;
    together they run exactly the budget and nobody's results are lost."""
    path = _sweep_file(tmp_path, sqlite_url, "twice", budget={"trials": 10})
    procs = [_hpo("sweep", str(path), "--no-report") for _ in range(2)]
    running = _wait_running(sqlite_url, "twice", 4)  # both coordinators' workers hold one
    assert len({t.pid for t in running}) == 4
    (tmp_path / "gate").touch()
    errs = [p.communicate(timeout=240)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs
    counts = check_agreement(sqlite_url, "twice")
    assert counts["complete"] == 10 and counts["failed"] == 0, counts
    assert counted(sqlite_url, "twice") == 10
    pids = {t.pid for t in TrackingStore(sqlite_url).trials("twice")}
    assert len(pids) >= 2


def hang(params, ctx):
    """Hangs: in Python (a sleep), or with SIGALRM blocked (a hang Python cannot break)."""
    if params.get("blocked"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(600)


@pytest.mark.parametrize("placement", ["inprocess", "processes"])
def test_trial_timeout_fails_only_that_trial(placement, sqlite_url):
    cfg = {"name": f"hang-{placement}", "method": "random", "metric": {"name": "loss"},
           "parameters": {"x": {"min": 0.0, "max": 1.0}}, "storage": sqlite_url,
           "budget": {"trials": 2}, "timeout": 1, "max_retries": 1,
           "parallel": 1 if placement == "inprocess" else 2}
    t0 = time.monotonic()
    if placement == "inprocess":
        result = hpo.run_sweep(cfg, objective=hang)
    else:
        result = hpo.run_sweep({**cfg, "trainer": "tests.contracts.test_loop_faults:hang"})
    assert time.monotonic() - t0 < 60
    assert result.counts["failed"] == 2 and result.counts["running"] == 0, result.counts
    for t in TrackingStore(sqlite_url).trials(cfg["name"]):
        assert "timed out after 1s" in t.error and t.retry_of is None  # never retried
    check_agreement(sqlite_url, cfg["name"])


def test_hang_that_ignores_the_alarm_is_killed(sqlite_url, monkeypatch):
    """A worker stuck where SIGALRM cannot reach it is killed by its loop after the grace."""
    import hpo.loop

    monkeypatch.setattr(hpo.loop, "_KILL_GRACE_S", 0.5)
    cfg = {"name": "stuck", "method": "random", "metric": {"name": "loss"},
           "parameters": {"x": {"min": 0.0, "max": 1.0}, "blocked": {"value": True}},
           "storage": sqlite_url, "budget": {"trials": 1}, "timeout": 1, "parallel": 2,
           "trainer": "tests.contracts.test_loop_faults:hang"}
    result = hpo.run_sweep(cfg)
    (trial,) = TrackingStore(sqlite_url).trials("stuck")
    assert result.counts["failed"] == 1 and "worker was killed" in trial.error, trial.error


def test_database_down_at_start_is_waited_for_then_reported(caplog):
    """Nothing listens on the port: the coordinator waits (a log line says so) for the given
    time, then raises StorageUnavailable; no traceback-worthy error in between."""
    from hpo.errors import StorageUnavailable
    from hpo.sweep import open_when_up

    url = "postgresql+psycopg2://postgres@127.0.0.1:1/none?connect_timeout=1"
    t0 = time.monotonic()
    with pytest.raises(StorageUnavailable):
        open_when_up(url, wait_s=2.0)
    assert 1.5 < time.monotonic() - t0 < 30
    assert "storage unavailable" in caplog.text


def test_real_storage_errors_are_not_retried(sqlite_url):
    """A wrong schema version is a real error: reported at once, not after 120 s."""
    import sqlalchemy as sa

    from hpo.errors import StorageError, StorageUnavailable
    from hpo.sweep import open_when_up

    TrackingStore(sqlite_url)
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE hpo_meta SET value='999' WHERE key='schema_version'"))
    t0 = time.monotonic()
    with pytest.raises(StorageError) as info:
        open_when_up(sqlite_url, wait_s=60)
    assert not isinstance(info.value, StorageUnavailable)
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("code, transient", [
    ("57P01", True), ("08006", True), ("40P01", True), ("53300", True),
    ("23505", False), ("42P01", False), ("22P02", False),
])
def test_postgres_error_classes(code, transient):
    import sqlalchemy as sa

    from hpo.tracking.db import is_transient

    class Orig(Exception):
        pgcode = code

    exc = sa.exc.DBAPIError("SELECT 1", {}, Orig("x"))
    assert is_transient(exc, sqlite=False) is transient


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.serial
def test_local_sweep_survives_a_postgres_restart(tmp_path, postgres_url):
    """`hpo sweep --storage postgresql://…` with 2 workers while PostgreSQL restarts: exit 0,
    the sweep finished, the budget exact, study == tracking (it exited 2 before)."""
    cmd = _pg_restart_command()
    if cmd is None or os.geteuid() != 0:
        pytest.skip("cannot restart the local PostgreSQL here (needs pg_ctlcluster as root)")
    path = _sweep_file(tmp_path, postgres_url, "pgrestart", budget={"trials": 20},
                       trainer="examples.objectives:sleep")
    cfg = yaml.safe_load(path.read_text())
    cfg["parameters"] = {"x": {"min": -1.0, "max": 1.0}, "seconds": {"value": 0.3}}
    path.write_text(yaml.safe_dump(cfg))
    proc = _hpo("sweep", str(path), "--no-report")
    store = TrackingStore(postgres_url)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if store.counts("pgrestart")["complete"] >= 4:
                break
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.1)
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    counts = check_agreement(postgres_url, "pgrestart")
    assert counted(postgres_url, "pgrestart") == 20, counts
    assert TrackingStore(postgres_url).get_sweep("pgrestart").status == "finished"


def faulty(params, ctx):
    """Trial 0 segfaults, trial 1 calls sys.exit(3), the rest return."""
    if ctx.number == 0:
        import ctypes

        ctypes.string_at(0)  # SIGSEGV
    if ctx.number == 1:
        sys.exit(3)
    return {"loss": params["x"]}


def test_segfault_and_sys_exit_fail_only_their_trial_with_parallel_1(tmp_path, sqlite_url):
    """`hpo sweep` with parallel 1 (the CLI's default placement is a worker process): a
    segfault and a sys.exit(3) each fail their own trial with a reason; the sweep exits 0
    (before, sys.exit(3) ended the whole sweep with rc 3 and left the trial running)."""
    path = _sweep_file(tmp_path, sqlite_url, "faulty", parallel=1, max_retries=0,
                       trainer="tests.contracts.test_loop_faults:faulty",
                       budget={"trials": 4})
    proc = _hpo("sweep", str(path), "--no-report")
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    rows = {t.number: t for t in TrackingStore(sqlite_url).trials("faulty")}
    assert rows[0].state == "failed" and "SIGSEGV" in rows[0].error, rows[0].error
    assert rows[1].state == "failed" and "SystemExit: 3" in rows[1].error, rows[1].error
    assert [rows[n].state for n in (2, 3)] == ["complete", "complete"]
    assert "trial 1 of faulty failed: SystemExit: 3" in err  # shown live, one line
    check_agreement(sqlite_url, "faulty")


def _flaky_turns(monkeypatch, failures: int | None):
    """TrialLoop._turn raises StorageUnavailable ``failures`` times (None: always) first, as when
    the database goes away between the loop's own calls; the loop's 1-s wait is skipped."""
    from hpo import loop as loop_module
    from hpo.errors import StorageUnavailable

    real = loop_module.TrialLoop._turn
    calls = {"n": 0}

    def turn(self, *args, **kwargs):
        calls["n"] += 1
        if failures is None or calls["n"] <= failures:
            raise StorageUnavailable("database down (injected)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(loop_module.TrialLoop, "_turn", turn)
    monkeypatch.setattr(loop_module.time, "sleep", lambda s: None)
    return calls


def _objective(params, ctx):
    return {"loss": params["x"]}


def _small_sweep(url: str, name: str) -> dict:
    return {"name": name, "method": "random", "seed": 1, "storage": url,
            "metric": {"name": "loss"},
            "parameters": {"x": {"min": 0.0, "max": 1.0}}, "budget": {"trials": 3}}


def test_the_loop_rides_out_an_outage_between_its_calls(sqlite_url, monkeypatch):
    """An outage that reached the loop itself crashed it with AttributeError (retry_s was
    never stored): the loop waits and carries on, and the budget is exact."""
    calls = _flaky_turns(monkeypatch, failures=3)
    result = hpo.run_sweep(_small_sweep(sqlite_url, "outage"),
                           objective=_objective)
    assert calls["n"] > 3 and result.counts["complete"] == 3


def test_an_outage_longer_than_retry_s_is_reported(sqlite_url, monkeypatch):
    from hpo import loop as loop_module
    from hpo.errors import StorageUnavailable

    _flaky_turns(monkeypatch, failures=None)
    clock = iter(range(0, 10**6, 50))  # 50 s a reading: past retry_s (120 s) in a few turns
    monkeypatch.setattr(loop_module.time, "monotonic", lambda: float(next(clock)))
    with pytest.raises(StorageUnavailable, match="injected"):
        hpo.run_sweep(_small_sweep(sqlite_url, "outage2"),
                      objective=_objective)
