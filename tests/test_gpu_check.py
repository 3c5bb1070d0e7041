"""benchmarks/gpu_check.sh: its dry run (CPU, toy sizes) end to end, and its helpers.

The dry run starts its own local Ray in a subprocess and trains 4 + 9 tiny trials, so it is
marked slow (about a minute or two on 2 cores); the helper tests are fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(300)
def test_dry_run_prints_every_section(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable, "RAY_AUTH_MODE": "disabled",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--json", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=290,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-6000:]
    for heading in ("## (a) LoRA", "## (b) full fine-tuning", "## (c) Ray sweep", "## goals"):
        assert heading in proc.stdout, text[-6000:]
    assert "FutureWarning" not in proc.stdout  # library warnings stay off the tables
    data = json.loads(out.read_text())
    assert data["dry_run"] is True and data["errors"] == {}
    for key in ("lora", "full"):
        rows = data[key]
        assert {r["trainer"] for r in rows} == {f"hpo_trainers.{key}",
                                                "HF Trainer + peft" if key == "lora"
                                                else "HF Trainer"}
        assert len(rows) == 4 and all(r["tokens_per_s"] > 0 and r["step_time_s"] > 0
                                      for r in rows)
        assert sum("vs_peer" in r for r in rows) == 2
    sweep = data["sweep"]
    assert sweep["counts"]["complete"] == 4
    assert len(sweep["trials"]) == 4
    for trial in sweep["trials"]:  # (d): what the tracking store recorded
        assert trial["device"] == "cpu" and trial["attrs"]["device"] == "cpu"
        assert trial["attrs"]["dtype"] == "fp32"
        start, end = trial["attrs"]["train_window"]
        assert start <= end
    assert sweep["overlap"]["max_concurrent"] >= 1 and sweep["aggregate_tokens_per_s"] > 0
    assert "vs_solo" in sweep


def test_overlap_of_training_windows():
    from benchmarks.gpu_check_sweep import overlap

    ov = overlap([(0.0, 4.0), (1.0, 3.0), (2.0, 6.0), (10.0, 11.0)])
    assert ov["max_concurrent"] == 3
    assert ov["union_s"] == pytest.approx(7.0)  # [0, 6] and [10, 11]
    assert ov["mean_concurrent"] == pytest.approx((4 + 2 + 4 + 1) / 7.0)
    assert overlap([])["union_s"] == 0.0


def test_sweep_config_is_a_valid_ray_sweep():
    from benchmarks.gpu_check import profile
    from benchmarks.gpu_check_sweep import sweep_config
    from hpo.config import parse_config

    for dry in (True, False):
        prof = profile(dry)
        cfg = parse_config({**sweep_config(prof["sweep"]["params"],
                                           prof["sweep"]["resources"]), "backend": "ray"})
        assert cfg.trainer == "lora" and "learning_rate" in cfg.parameters
        assert "learning_rate" not in cfg.trainer_args
        assert cfg.resources.gpu == (0 if dry else 0.25)


def test_gpu_profile_shapes_and_trainer_params_are_valid():
    from hpo_trainers.config import parse_params

    from benchmarks.gpu_check import LM_CONFIG, profile

    gpu = profile(False)
    assert gpu["lm"]["precision"] == "bf16" and gpu["minilm"]["precision"] == "bf16"
    assert gpu["sweep"]["trials"] == 8 and gpu["sweep"]["parallel"] == 4
    per_layer = (2 * 1024 * 1024 + 2 * 1024 * 512 + 3 * 1024 * 2816)
    assert 0.1e9 < LM_CONFIG["num_hidden_layers"] * per_layer < 0.5e9
    for dry in (True, False):
        prof = profile(dry)
        for key in ("minilm", "lm"):
            parse_params(prof[key], "lora")  # no unknown or invalid parameter
            parse_params(prof[key], "full")
        parse_params(prof["sweep"]["params"], "lora")


def test_sampler_without_a_gpu_reports_no_samples():
    from benchmarks.gpu_check_sweep import GpuSampler

    sampler = GpuSampler()
    sampler.source = "none"
    summary = sampler.summary()
    assert summary["samples"] == 0 and summary["util_mean"] is None


def test_real_run_without_a_gpu_points_at_dry_run(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    from benchmarks.gpu_check import main

    assert main([]) == 2
    assert "--dry-run" in capsys.readouterr().err
