"""One contract for every placement: the same sweep gives the same accounting everywhere.

Placements: in-process (run_sweep with an objective, one slot), worker processes, Ray
actors, and `hpo agent` processes; storages SQLite and PostgreSQL where storage matters.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import hpo
from tests.contracts.agreement import check_agreement, counted

REPO = Path(__file__).resolve().parents[2]
PLACEMENTS = [
    "inprocess",
    "processes",
    pytest.param("ray", marks=pytest.mark.ray),
    pytest.param("agents", marks=pytest.mark.postgres),
]


def crash_once(params, ctx):
    """Kills its own worker process the first time each trial runs (attempt 0 of trial 1),
    then behaves; in-process it exits with sys.exit instead (a trainer fault, not a crash)."""
    for step in (1, 2):
        ctx.report({"loss": params["x"] ** 2 + 1.0 / step}, step=step)
    if ctx.number == 1:
        if os.environ.get("HPO_CONTRACT_INPROCESS"):
            sys.exit(3)
        os._exit(9)
    return {"loss": params["x"] ** 2}


def _config(url: str, name: str, placement: str, **extra) -> dict:
    cfg = {
        "name": name, "method": "random", "seed": 0, "metric": {"name": "loss"},
        "parameters": {"x": {"min": -1.0, "max": 1.0}}, "storage": url,
        "budget": {"trials": 6}, "max_retries": 1,
        "parallel": 1 if placement == "inprocess" else 2,
        "backend": {"inprocess": "local", "processes": "local", "ray": "ray",
                    "agents": "agents"}[placement],
    }
    cfg.update(extra)
    return cfg


def _run(url: str, cfg: dict, placement: str, objective, request) -> None:
    if placement == "ray":
        request.getfixturevalue("ray_session")
    if placement == "agents":
        cfg = {**cfg, "trainer": "tests.contracts.test_placements:crash_once"}
        hpo.run_sweep(cfg)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        procs = [subprocess.Popen(
            [sys.executable, "-m", "hpo.cli", "agent", "--study", cfg["name"], "--storage", url,
             "--lease", "5"], env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
        for p in procs:
            _, err = p.communicate(timeout=180)
        return
    if placement == "processes":  # the module is importable by workers: by reference
        cfg = {**cfg, "trainer": "tests.contracts.test_placements:crash_once"}
        hpo.run_sweep(cfg)
        return
    hpo.run_sweep(cfg, objective=objective)


@pytest.fixture
def url(request, tmp_path):
    placement = request.node.callspec.params["placement"]
    return request.getfixturevalue("postgres_url" if placement == "agents" else "sqlite_url")


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_same_accounting_with_a_crashing_trial(placement, url, request, monkeypatch):
    """Budget 6, trial 1 kills its worker once: it is failed, re-queued with the same params,
    and the sweep ends with exactly 6 counted trials, nothing running, study == tracking."""
    if placement == "inprocess":
        monkeypatch.setenv("HPO_CONTRACT_INPROCESS", "1")
    name = f"contract-{placement}"
    cfg = _config(url, name, placement)
    _run(url, cfg, placement, crash_once, request)
    counts = check_agreement(url, name)
    assert counted(url, name) == 6, counts
    from hpo.tracking import TrackingStore

    trials = TrackingStore(url).trials(name)
    first = next(t for t in trials if t.number == 1)
    assert first.state == "failed"
    if placement == "inprocess":  # sys.exit: the trainer's own fault, this trial only
        assert "SystemExit: 3" in first.error
        assert counts["complete"] == 5 and counts["failed"] == 1
    else:  # a lost worker: retried once with the same params
        assert "worker lost" in first.error, first.error
        retry = [t for t in trials if t.retry_of == 1]
        assert len(retry) == 1 and retry[0].params == first.params
        # the retry is trial 1 again (number >= 6 is not trial 1): it crashes only as trial 1
        assert retry[0].state == "complete"
        assert counts["complete"] == 6 and counts["failed"] == 1
