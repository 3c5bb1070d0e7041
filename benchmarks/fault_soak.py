"""Fault soak: sweeps that keep going while their processes are killed and PostgreSQL restarts.

Not a test (it takes minutes and restarts the machine's PostgreSQL). Two scenarios:

``agents``  500 trials on PostgreSQL with 8 ``hpo agent`` processes; every few seconds a random
            agent is killed with SIGKILL and a new one started in its place (as a Kubernetes
            Job would), and PostgreSQL is restarted twice.
``local``   a local parallel-4 sweep (``hpo sweep``, worker processes) whose coordinator is
            killed with SIGKILL every few seconds and resumed at once with the same command,
            on SQLite and on PostgreSQL (restarted twice there too).

Checked at the end, from the database: the budget is exact (counted trials == budget), no
trial seen complete during the run was lost or changed, no trial is RUNNING (owner-less or
not), and the study and the tracking rows agree trial by trial (:func:`audit`).

    python benchmarks/fault_soak.py [--scenario agents local] [--trials 500] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import optuna
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.common import machine, markdown, postgres_storage, sqlite_storage  # noqa: E402
from hpo import study as studies  # noqa: E402
from hpo.tracking import TrackingStore  # noqa: E402

_ROW = {optuna.trial.TrialState.COMPLETE: {"complete"}, optuna.trial.TrialState.PRUNED:
        {"pruned"}, optuna.trial.TrialState.FAIL: {"failed", "interrupted"},
        optuna.trial.TrialState.RUNNING: {"running"}}


def audit(url: str, name: str) -> dict:
    """Budget count, running trials and study/tracking disagreements of sweep ``name``."""
    store = TrackingStore(url)
    study = studies.load(name, studies.open_storage(url, name, store))
    rows = {t.number: t for t in store.trials(name)}
    disagree = []
    for t in study.get_trials(deepcopy=False):
        row = rows.get(t.number)
        if t.state == optuna.trial.TrialState.WAITING:
            if row is not None:
                disagree.append((t.number, "WAITING", row.state))
            continue
        if row is None or row.state not in _ROW[t.state] or (
                t.state == optuna.trial.TrialState.COMPLETE and row.value != t.value):
            disagree.append((t.number, t.state.name, row.state if row else None))
    running_study = sum(t.state == optuna.trial.TrialState.RUNNING for t in study.trials)
    counts = store.counts(name)
    return {"counted": studies.counted_trials(study), "counts": counts,
            "running": counts["running"] + running_study, "disagree": disagree,
            "rows": {n: (r.state, r.value) for n, r in rows.items()}}


class CompleteWatcher(threading.Thread):
    """Remembers every trial seen complete (and its value) while the sweep runs."""

    def __init__(self, url: str, name: str) -> None:
        super().__init__(daemon=True)
        self.url, self.name, self.seen, self.stop = url, name, {}, threading.Event()

    def run(self) -> None:
        store = None
        while not self.stop.wait(0.5):
            try:
                store = store or TrackingStore(self.url)
                for t in store.trials(self.name, states=["complete"]):
                    self.seen.setdefault(t.number, t.value)
            except Exception:  # noqa: BLE001 - PostgreSQL restarting, sweep not created yet
                store = None


def _pg_restart() -> list[str] | None:
    if not shutil.which("pg_ctlcluster") or not os.path.isdir("/etc/postgresql"):
        return None
    version = sorted(os.listdir("/etc/postgresql"))[0]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"]


def _hpo(args: list[str], log) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
    return subprocess.Popen([sys.executable, "-m", "hpo.cli", *args], cwd=REPO, env=env,
                            stdout=log, stderr=log)


def _sweep_file(tmp: Path, url: str, name: str, trials: int, **extra) -> Path:
    cfg = {"name": name, "method": "tpe", "seed": 0, "metric": {"name": "loss"},
           "parameters": {"x": {"min": -5.0, "max": 5.0}, "seconds": {"value": 0.15}},
           "trainer": "examples.objectives:sleep", "storage": url,
           "budget": {"trials": trials}, "max_retries": 3}
    cfg.update(extra)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _done(url: str, name: str, trials: int) -> bool:
    try:
        return studies.counted_trials(studies.load(name, url)) >= trials and \
            TrackingStore(url).counts(name)["running"] == 0
    except Exception:  # noqa: BLE001
        return False


def soak_agents(url: str, trials: int, rnd: random.Random, tmp: Path) -> dict:
    name = "soak-agents"
    path = _sweep_file(tmp, url, name, trials)
    log = open(tmp / "agents.log", "w")  # noqa: SIM115
    subprocess.run([sys.executable, "-m", "hpo.cli", "sweep", str(path), "--backend", "agents",
                    "--no-report"], cwd=REPO, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    watcher = CompleteWatcher(url, name)
    watcher.start()
    agent_args = ["agent", "--study", name, "--storage", url, "--lease", "5", "--max-idle", "120"]
    agents = [_hpo(agent_args, log) for _ in range(8)]
    kills, restarts, t0 = 0, 0, time.monotonic()
    restart_at = [trials // 3, 2 * trials // 3]
    cmd = _pg_restart()
    next_kill = time.monotonic() + rnd.uniform(2, 4)
    while True:
        done = len(watcher.seen)
        if restart_at and done >= restart_at[0] and cmd:
            restart_at.pop(0)
            subprocess.run(cmd, check=True, capture_output=True, timeout=120)
            restarts += 1
        if time.monotonic() >= next_kill:
            live = [a for a in agents if a.poll() is None]
            if live and done < trials * 0.95:
                victim = rnd.choice(live)
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                agents.remove(victim)
                agents.append(_hpo(agent_args, log))  # the Job starts a replacement
                kills += 1
            next_kill = time.monotonic() + rnd.uniform(2, 4)
        if all(a.poll() is not None for a in agents):
            break
        if time.monotonic() - t0 > 1200:
            raise SystemExit("soak did not finish in 20 minutes")
        time.sleep(0.1)
    wall = time.monotonic() - t0
    watcher.stop.set()
    watcher.join()
    rcs = sorted({a.returncode for a in agents})
    return _summary("agents: 8 agents, PostgreSQL", url, name, trials, watcher, wall,
                    kills=kills, pg_restarts=restarts, exit_codes=rcs)


def soak_local(url: str, trials: int, rnd: random.Random, tmp: Path) -> dict:
    name = "soak-local"
    path = _sweep_file(tmp, url, name, trials, parallel=4)
    log = open(tmp / "local.log", "w")  # noqa: SIM115
    watcher = CompleteWatcher(url, name)
    watcher.start()
    kills, restarts, t0 = 0, 0, time.monotonic()
    restart_at = [trials // 3, 2 * trials // 3] if url.startswith("postgresql") else []
    cmd = _pg_restart()
    while True:
        if restart_at and len(watcher.seen) >= restart_at[0] and cmd:
            restart_at.pop(0)
            subprocess.run(cmd, check=True, capture_output=True, timeout=120)
            restarts += 1
        proc = _hpo(["sweep", str(path), "--no-report"], log)
        try:
            rc = proc.wait(timeout=rnd.uniform(2, 5))
            if rc == 0 and _done(url, name, trials):
                break
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        if time.monotonic() - t0 > 1200:
            raise SystemExit("soak did not finish in 20 minutes")
    wall = time.monotonic() - t0
    time.sleep(1.0)
    watcher.stop.set()
    watcher.join()
    where = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    return _summary(f"local: parallel 4, {where}, coordinator kill -9 + resume", url, name,
                    trials, watcher, wall, kills=kills, pg_restarts=restarts, exit_codes=[0])


def _summary(label, url, name, trials, watcher, wall, **extra) -> dict:
    result = audit(url, name)
    lost = [n for n, v in watcher.seen.items()
            if result["rows"].get(n) != ("complete", v)]
    return {"scenario": label, "budget": trials, "counted": result["counted"],
            "complete": result["counts"]["complete"], "failed": result["counts"]["failed"],
            "interrupted": result["counts"]["interrupted"], "kills": extra["kills"],
            "pg_restarts": extra["pg_restarts"], "lost_finished": len(lost),
            "running_left": result["running"], "disagree": len(result["disagree"]),
            "wall_s": round(wall, 1), "exit_codes": " ".join(map(str, extra["exit_codes"]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", nargs="+", default=["agents", "local"],
                    choices=["agents", "local"])
    ap.add_argument("--trials", type=int, default=500)
    ap.add_argument("--local-trials", type=int, default=500)
    ap.add_argument("--local-storage", nargs="+", default=["sqlite", "postgres"],
                    choices=["sqlite", "postgres"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        if "agents" in args.scenario:
            url = stack.enter_context(postgres_storage())
            rows.append(soak_agents(url, args.trials, rnd, Path(tmp)))
            print(rows[-1], flush=True)
        for where in args.local_storage if "local" in args.scenario else []:
            make = postgres_storage if where == "postgres" else sqlite_storage
            url = stack.enter_context(make())
            rows.append(soak_local(url, args.local_trials, rnd, Path(tmp)))
            print(rows[-1], flush=True)
    print(f"\n{machine()}\n")
    print(markdown(rows, list(rows[0])))
    bad = [r for r in rows if r["counted"] != r["budget"] or r["lost_finished"]
           or r["running_left"] or r["disagree"]]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
