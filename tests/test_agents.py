"""`hpo agent` processes sharing one sweep on a real PostgreSQL (as a Job with parallelism N)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hpo
from hpo.tracking import TrackingStore

pytestmark = pytest.mark.postgres
REPO = Path(__file__).resolve().parents[1]


def make_sweep(url: str, name: str, *, trials: int, seconds: float = 0.0, **extra) -> None:
    cfg = {
        "name": name, "method": "tpe", "metric": {"name": "loss"},
        "parameters": {"x": {"min": -5.0, "max": 5.0}, "seconds": {"value": seconds}},
        "trainer": "examples.objectives:sleep", "backend": "agents", "storage": url,
        "seed": 0, "budget": {"trials": trials},
    }
    cfg.update(extra)
    result = hpo.run_sweep(cfg)
    assert "hpo agent --study" in result.extra["agent_command"]


def start_agents(n: int, url: str, name: str, *extra: str) -> list[subprocess.Popen]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return [
        subprocess.Popen(
            [sys.executable, "-m", "hpo.cli", "agent", "--study", name, "--storage", url, *extra],
            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(n)
    ]


def wait_all(procs: list[subprocess.Popen], timeout: float = 180) -> list[str]:
    errs = []
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        errs.append(err)
    return errs


def test_eight_agents_meet_the_budget_exactly(postgres_url):
    make_sweep(postgres_url, "eight", trials=50)
    procs = start_agents(8, postgres_url, "eight")
    errs = wait_all(procs)
    assert all(p.returncode == 0 for p in procs), errs
    store = TrackingStore(postgres_url)
    trials = store.trials("eight")
    assert len(trials) == 50
    assert store.counts("eight")["complete"] == 50
    assert len({t.number for t in trials}) == 50
    assert all(t.worker.startswith("agent:") and t.pid and t.host for t in trials)
    assert len({t.pid for t in trials}) > 1  # the work was shared
    assert store.best("eight") is not None


def test_grid_with_agents_runs_each_point_once(postgres_url):
    make_sweep(postgres_url, "grid", trials=100, method="grid",
               parameters={"x": {"values": [1, 2, 3, 4]}, "y": {"values": [0, 1]},
                           "seconds": {"value": 0.0}})
    procs = start_agents(4, postgres_url, "grid")
    wait_all(procs)
    trials = TrackingStore(postgres_url).trials("grid")
    assert sorted((t.params["x"], t.params["y"]) for t in trials) == [
        (x, y) for x in (1, 2, 3, 4) for y in (0, 1)]


def test_killed_agents_trials_are_requeued(postgres_url, tmp_path):
    """kill -9 of two agents while their trials are held running (a gate file): their
    trials are reaped (same host, process gone) and re-run from the same params. No race:
    nothing can finish before the gate opens, after the kills."""
    gate = tmp_path / "gate"
    make_sweep(postgres_url, "kill", trials=12, trainer="examples.objectives:gated",
               parameters={"x": {"min": -5.0, "max": 5.0}, "gate": {"value": str(gate)}})
    procs = start_agents(4, postgres_url, "kill", "--lease", "3")
    store = TrackingStore(postgres_url)
    victims: dict[int, int] = {}
    deadline = time.monotonic() + 90
    agent_pids = {p.pid for p in procs}
    while len(victims) < 2 and time.monotonic() < deadline:
        for t in store.trials("kill", states=["running"]):
            if t.pid in agent_pids and t.pid not in victims.values():
                victims[t.number] = t.pid
        time.sleep(0.05)
    assert len(victims) >= 2
    victims = dict(list(victims.items())[:2])
    for pid in victims.values():
        os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    gate.touch()
    errs = wait_all([p for p in procs if p.pid not in victims.values()])
    for p in procs:
        p.wait(timeout=30)
    trials = store.trials("kill")
    for number in victims:
        lost = next(t for t in trials if t.number == number)
        assert lost.state == "failed" and "worker lost" in lost.error, lost
        retry = [t for t in trials if t.retry_of == number]
        assert len(retry) == 1 and retry[0].params == lost.params
        assert retry[0].state == "complete"
    assert store.counts("kill")["complete"] == 12
    assert store.counts("kill")["running"] == 0
    done_s = time.monotonic() - killed_at
    print(f"kill -9 -> lost trials re-run and sweep done in {done_s:.1f}s", errs)


def test_slow_agent_keeps_its_trial(postgres_url):
    make_sweep(postgres_url, "slow", trials=3, seconds=2.5)
    procs = start_agents(2, postgres_url, "slow", "--lease", "1")
    errs = wait_all(procs)
    store = TrackingStore(postgres_url)
    assert store.counts("slow")["complete"] == 3, errs
    assert store.counts("slow")["failed"] == 0
    assert all(t.retry_of is None for t in store.trials("slow"))


def test_agent_waits_for_the_sweep_then_runs(postgres_url):
    procs = start_agents(1, postgres_url, "later", "--max-idle", "60")
    time.sleep(3)
    make_sweep(postgres_url, "later", trials=3)
    errs = wait_all(procs)
    assert procs[0].returncode == 0, errs
    assert "waiting up to 60s" in errs[0]
    assert TrackingStore(postgres_url).counts("later")["complete"] == 3


def test_agent_without_sweep_gives_up_clearly(postgres_url):
    procs = start_agents(1, postgres_url, "never", "--max-idle", "1")
    errs = wait_all(procs)
    assert procs[0].returncode == 2
    assert "did not appear" in errs[0] and "Traceback" not in errs[0]


def _pg_restart_command() -> list[str] | None:
    if not shutil.which("pg_ctlcluster") or not os.path.isdir("/etc/postgresql"):
        return None
    version = sorted(os.listdir("/etc/postgresql"))[0]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"]


@pytest.mark.slow
@pytest.mark.serial
def test_agents_survive_a_postgres_restart(postgres_url):
    cmd = _pg_restart_command()
    if cmd is None or os.geteuid() != 0:
        pytest.skip("cannot restart the local PostgreSQL here (needs pg_ctlcluster as root)")
    make_sweep(postgres_url, "restart", trials=30, seconds=0.2)
    procs = start_agents(3, postgres_url, "restart")
    store = TrackingStore(postgres_url)
    deadline = time.monotonic() + 60
    while store.counts("restart")["complete"] < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    errs = wait_all(procs, timeout=300)
    # the whole stderr of a failed agent (pytest shortens a list in the message)
    assert all(p.returncode == 0 for p in procs), "\n---\n".join(
        f"agent {i} exited {p.returncode}:\n{err[-4000:]}"
        for i, (p, err) in enumerate(zip(procs, errs, strict=True)) if p.returncode != 0)
    trials = store.trials("restart")
    finished = [t for t in trials if t.state in ("complete", "pruned", "failed")]
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    # every budget slot ends in a complete trial; one cut by the restart was failed + re-run
    others = [(t.number, t.state, t.error, t.retry_of, t.worker) for t in trials
              if t.state != "complete"]
    assert len([t for t in finished if t.state == "complete"]) == 30, (others, errs)


def test_sigterm_hands_the_trial_back_at_once(postgres_url):
    make_sweep(postgres_url, "term", trials=2, seconds=3.0)
    first = start_agents(1, postgres_url, "term")
    store = TrackingStore(postgres_url)
    deadline = time.monotonic() + 60
    while not store.trials("term", states=["running"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    first[0].send_signal(signal.SIGTERM)
    err = wait_all(first)[0]
    assert first[0].returncode == 130, err
    stopped = store.trials("term", states=["interrupted"])
    assert len(stopped) == 1 and "SIGTERM" in stopped[0].error
    assert store.counts("term")["running"] == 0
    second = start_agents(1, postgres_url, "term", "--lease", "60")
    wait_all(second)
    trials = store.trials("term")
    assert store.counts("term")["complete"] == 2  # re-queued at once, not after the lease
    assert [t.retry_of for t in trials].count(stopped[0].number) == 1
