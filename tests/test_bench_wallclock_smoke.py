"""The wall-clock benchmark (benchmarks/quality/wallclock.py) runs end to end and writes the
report's tables: 2 contenders that need no extra venv (``hpo`` through ``hpo.run_sweep`` with 4
worker processes, ``optuna_hyperband``) on the synthetic multi-fidelity problem, 4-second runs.
Nothing timed is asserted (hpo's 4 worker processes take ~2.5 s to start here, so a trial
need not finish within the budget). ~12 s on a 2-core machine.
"""

from __future__ import annotations

import csv
import gzip
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.quality import wallclock as wc

REPO = Path(__file__).resolve().parents[1]
PROBLEM = wc.SYNTH
CONTENDERS = ["hpo", "optuna_hyperband"]


@pytest.mark.timeout(90)
def test_wallclock_smoke(tmp_path):
    why = wc.problem_status(PROBLEM)
    if why:  # the synthetic problem needs no venv; a real one would need its package's
        pytest.skip(f"problem {PROBLEM} cannot run here: {why}")
    out = tmp_path / "wallclock"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.quality.wallclock", "--problems", PROBLEM,
         "--contenders", ",".join(CONTENDERS), "--seeds", "1", "--seconds", "4",
         "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=80,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    with (out / "runs.csv").open() as fh:
        runs = list(csv.DictReader(fh))
    assert sorted(r["contender"] for r in runs) == sorted(CONTENDERS)
    assert all(not r["error"] for r in runs), runs
    with gzip.open(out / "trials.csv.gz", "rt") as fh:
        trials = list(csv.DictReader(fh))
    for c in CONTENDERS:
        mine = [t for t in trials if t["contender"] == c]
        assert any(t["status"] == "complete" for t in mine), c
        for t in mine:
            assert t["status"] in ("complete", "pruned", "cut", "error"), t
            assert 0 <= float(t["start_s"]) <= float(t["finish_s"]), t
            assert 0 <= int(t["fidelity"]) <= int(t["max_fidelity"]), t
            if t["status"] == "complete":
                assert int(t["fidelity"]) == int(t["max_fidelity"]) and t["true"], t

    report = (out / "report.md").read_text()
    for heading in ("Normalized regret at 25 % / 50 % / 100 % of the wall budget",
                    "Average rank at equal wall time",
                    "Time to reach the `hpo` run's final regret",
                    "Where the slot-time went"):
        assert heading in report, heading
    for c in CONTENDERS:
        assert f"| synth | {c} | 1 |" in report, c  # a regret row per contender
    assert "| synth | 1 | " in report  # the rank row: 1 (problem, seed) pair
    assert "| family | optuna_hyperband |" in report  # the pruning contender's time-to column
