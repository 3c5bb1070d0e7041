"""The real-training wall-clock benchmark (benchmarks/quality/lora_wallclock.py) runs end to
end: hpo (2 worker processes) and Optuna (2 processes on a JournalStorage) both drive the
built-in lora trainer, here on the tiny BERT built from a config, and the report's tables come
out. Nothing timed is asserted."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONTENDERS = ["hpo", "optuna_hyperband"]


@pytest.mark.timeout(150)
def test_lora_wallclock_smoke(tmp_path):
    pytest.importorskip("peft")
    out = tmp_path / "lora"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.quality.lora_wallclock", "--smoke", "--model",
         "tiny-bert", "--max-steps", "20", "--seconds", "8", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=140,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with (out / "runs.csv").open() as fh:
        runs = list(csv.DictReader(fh))
    assert sorted(r["contender"] for r in runs) == sorted(CONTENDERS)
    assert all(not r["error"] for r in runs), runs
    with (out / "trials.csv").open() as fh:
        trials = list(csv.DictReader(fh))
    for c in CONTENDERS:
        mine = [t for t in trials if t["contender"] == c]
        assert any(t["status"] == "complete" for t in mine), (c, mine)
        for t in mine:
            assert t["status"] in ("complete", "pruned"), t
            assert 0 <= float(t["start_s"]) <= float(t["finish_s"]), t
            if t["status"] == "complete":
                assert int(t["fidelity"]) == 20 and 0 < float(t["observed"]) < 10, t
    report = (out / "report.md").read_text()
    for heading in ("Normalized regret at 25 % / 50 % / 100 % of the wall budget",
                    "Time to reach the `hpo` run's final regret", "Where the slot-time went"):
        assert heading in report, heading
