"""The throughput benchmarks (bench_loop.py, bench_slots.py) still run end to end at toy sizes.

Only that they run and print their table is checked; no timing is asserted. bench_slots's
Ray contenders share the session's Ray (it reuses a running one); Ray Tune is left out here
(its start-up alone takes longer than the rest of this file).
"""

from __future__ import annotations

import pytest

from benchmarks import bench_loop, bench_slots


@pytest.mark.timeout(60)
def test_bench_loop_runs(capsys):
    bench_loop.main(["--trials", "4", "--storages", "sqlite", "--seconds", "0.01"])
    out = capsys.readouterr().out
    assert "| trainer | storage | runner |" in out and "overhead_ms_per_trial" in out
    rows = [line for line in out.splitlines() if line.startswith("| 10 ms | sqlite |")]
    assert len(rows) == len(bench_loop.RUNNERS), out


@pytest.mark.ray
@pytest.mark.timeout(60)
def test_bench_slots_runs(ray_session, capsys):
    bench_slots.main(["--trials", "10", "--step-ms", "2",
                      "--only", "hpo-local", "hpo-ray", "optuna"])
    assert ray_session.is_initialized()  # the session's Ray was reused, not shut down
    out = capsys.readouterr().out
    assert "| runner | trials | wall_s |" in out and "idle_fraction" in out
    for key in ("hpo-local", "hpo-ray", "optuna"):
        label = bench_slots.RUNNERS[key][0].format(storage="sqlite")
        assert f"| {label} | 10 |" in out, out
