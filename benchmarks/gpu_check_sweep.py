"""The Ray part of benchmarks/gpu_check.py: fractional-GPU trials, how they overlap, GPU load.

``run_ray_sweep`` runs a sweep through hpo's public API (``hpo.run_sweep(config,
backend="ray", ...)``) on a local Ray it starts with the machine's GPUs, then reads the trials
back with ``hpo trials NAME --format json`` (the CLI scripts rely on). Each trial's training
window (``attrs.train_window``, wall clock) gives the overlap: the most trials training at
once, the mean number training while any is, and the aggregate tokens/s over the union of the
windows. ``GpuSampler`` samples utilisation and memory with nvidia-smi (torch.cuda's NVML
readings when nvidia-smi is missing) while the sweep runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class GpuSampler:
    """Background sampling of GPU utilisation (%) and memory used (MiB), summed over GPUs."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.samples: list[tuple[float, float, float]] = []  # (time, util %, memory MiB)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.source = "none"

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self.source = "nvidia-smi"
        else:
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.utilization()  # needs NVML (pynvml); raises without it
                    self.source = "torch.cuda"
            except Exception:  # noqa: BLE001 - no NVML: no utilisation figures
                self.source = "none"
        if self.source != "none":
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            sample = self._read()
            if sample is not None:
                self.samples.append((time.time(), *sample))
            self._stop.wait(self.interval_s)

    def _read(self) -> tuple[float, float] | None:
        try:
            if self.source == "nvidia-smi":
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                     "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=5, check=True,
                ).stdout
                rows = [[float(x) for x in line.split(",")] for line in out.splitlines() if line]
                return sum(r[0] for r in rows) / len(rows), sum(r[1] for r in rows)
            import torch

            free, total = torch.cuda.mem_get_info()
            return float(torch.cuda.utilization()), (total - free) / 2**20
        except Exception:  # noqa: BLE001 - a missed sample is not an error
            return None

    def summary(self, start: float | None = None, end: float | None = None) -> dict[str, Any]:
        """Mean/max utilisation and max memory over samples in [start, end] (all if None)."""
        rows = [s for s in self.samples
                if (start is None or s[0] >= start) and (end is None or s[0] <= end)]
        if not rows:
            return {"source": self.source, "samples": 0, "util_mean": None, "util_max": None,
                    "memory_max_mb": None}
        utils = [r[1] for r in rows]
        return {"source": self.source, "samples": len(rows),
                "util_mean": sum(utils) / len(utils), "util_max": max(utils),
                "memory_max_mb": max(r[2] for r in rows)}


def overlap(windows: list[tuple[float, float]]) -> dict[str, float]:
    """Union length, most windows open at once, and mean windows open while any is."""
    events = sorted([(s, 1) for s, e in windows] + [(e, -1) for s, e in windows],
                    key=lambda ev: (ev[0], ev[1]))
    open_now = most = 0
    union = weighted = 0.0
    last = None
    for t, change in events:
        if last is not None and open_now > 0:
            union += t - last
            weighted += (t - last) * open_now
        open_now += change
        most = max(most, open_now)
        last = t
    return {"union_s": union, "max_concurrent": most,
            "mean_concurrent": weighted / union if union > 0 else 0.0}


def sweep_config(params: Mapping[str, Any], resources: Mapping[str, float]) -> dict[str, Any]:
    """A random-search LoRA sweep over learning_rate with ``params`` as trainer_args."""
    fixed = {k: v for k, v in params.items() if k != "learning_rate"}
    return {
        "method": "random", "metric": {"name": "eval_loss", "goal": "minimize"},
        "trainer": "lora", "trainer_args": fixed, "seed": 0,
        "parameters": {"learning_rate": {"distribution": "log_uniform_values",
                                         "min": 1e-4, "max": 1e-3}},
        "resources": dict(resources),
    }


def run_ray_sweep(
    params: Mapping[str, Any], *, trials: int, parallel: int, resources: Mapping[str, float],
    ray_cpus: int, workdir: Path,
) -> dict[str, Any]:
    """Run the sweep on a local Ray; return its trials (CLI JSON), overlap and GPU samples."""
    import ray

    import hpo

    gpus = _gpu_count()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=ray_cpus, num_gpus=gpus, include_dashboard=False,
             logging_level="WARNING", _temp_dir=str(workdir / "ray"))
    storage = f"sqlite:///{workdir / 'sweep.db'}"
    name = "gpu-check"
    try:
        with GpuSampler() as sampler:
            started = time.time()
            result = hpo.run_sweep(sweep_config(params, resources), backend="ray",
                                   storage=storage, name=name, trials=trials, parallel=parallel)
            ended = time.time()
    finally:
        ray.shutdown()
    rows = trials_json(name, storage)
    windows = [tuple(r["attrs"]["train_window"]) for r in rows
               if r.get("state") == "complete" and None not in (r["attrs"].get("train_window")
                                                                 or [None])]
    tokens = sum(int(r["attrs"].get("train_tokens", 0)) for r in rows
                 if r.get("state") == "complete")
    ov = overlap([(float(s), float(e)) for s, e in windows])
    return {
        "counts": result.counts, "wall_s": ended - started, "trials": rows, "overlap": ov,
        "aggregate_tokens_per_s": tokens / ov["union_s"] if ov["union_s"] else 0.0,
        "gpu": sampler.summary(started, ended), "gpus": gpus, "resources": dict(resources),
    }


def trials_json(name: str, storage: str) -> list[dict[str, Any]]:
    """``hpo trials NAME --storage URL --format json``, parsed."""
    out = subprocess.run(
        [sys.executable, "-m", "hpo.cli", "trials", name, "--storage", storage,
         "--format", "json"],
        capture_output=True, text=True, timeout=120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"hpo trials failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout)


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001
        return 0
