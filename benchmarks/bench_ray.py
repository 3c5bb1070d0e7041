"""hpo's Ray backend vs. Ray Tune on the same objective, measured in one run.

For a no-op trainer and a 100 ms trainer, ``parallel: 2`` on the local Ray (2 CPUs):
trials/second, per-trial overhead (ms) and worker utilization (busy time / (wall x slots)).
Ray Tune: ``Tuner`` + ``OptunaSearch`` (TPE) + ``ASHAScheduler``, ``reuse_actors=True``,
``max_concurrent_trials=2``. hpo: TPE + ASHA on ``backend: ray``. Both report one metric per
trial; busy time is measured inside the trainer function itself.

    RAY_AUTH_MODE=disabled python benchmarks/bench_ray.py [--trials 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from benchmarks.common import machine, markdown, sqlite_storage  # noqa: E402


def hpo_ray(trials: int, seconds: float) -> tuple[float, float]:
    import hpo
    from hpo.tracking import TrackingStore

    with sqlite_storage() as url:
        cfg = {
            "name": "bench", "method": "tpe", "metric": {"name": "loss"},
            "parameters": {"x": {"min": -5.0, "max": 5.0}, "seconds": {"value": seconds}},
            "early_terminate": {"type": "asha", "min_iter": 1, "eta": 3},
            "trainer": "examples.objectives:sleep", "backend": "ray", "parallel": 2,
            "seed": 0, "storage": url, "budget": {"trials": trials},
        }
        t0 = time.perf_counter()
        result = hpo.run_sweep(cfg)
        wall = time.perf_counter() - t0
        assert result.counts["complete"] == trials, result.counts
        busy = sum(t.attrs.get("busy_s", 0.0) for t in TrackingStore(url).trials("bench"))
    return wall, busy


def _tune_fn(config):
    from ray import tune

    t0 = time.perf_counter()
    if config["seconds"]:
        time.sleep(config["seconds"])
    busy = time.perf_counter() - t0
    tune.report({"loss": config["x"] ** 2, "busy_s": busy})


def ray_tune(trials: int, seconds: float) -> tuple[float, float]:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    with tempfile.TemporaryDirectory(prefix="tune-bench-") as tmp:
        tuner = tune.Tuner(
            _tune_fn,
            param_space={"x": tune.uniform(-5.0, 5.0), "seconds": seconds},
            tune_config=tune.TuneConfig(
                metric="loss", mode="min", num_samples=trials, max_concurrent_trials=2,
                search_alg=OptunaSearch(seed=0), scheduler=ASHAScheduler(grace_period=1),
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(storage_path=tmp, verbose=0),
        )
        t0 = time.perf_counter()
        grid = tuner.fit()
        wall = time.perf_counter() - t0
        assert len(grid) == trials
        busy = sum(r.metrics.get("busy_s", 0.0) for r in grid)
    return wall, busy


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=60)
    args = ap.parse_args(argv)
    import ray

    started = not ray.is_initialized()  # reuse a running Ray (the test suite's), else start one
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    rows = []
    for seconds in (0.0, 0.1):
        for label, fn in (("hpo ray backend", hpo_ray), ("ray tune (reuse_actors)", ray_tune)):
            wall, busy = fn(args.trials, seconds)
            rows.append({
                "trainer": "no-op" if seconds == 0 else "100 ms", "runner": label,
                "trials": args.trials, "wall_s": wall, "trials_per_s": args.trials / wall,
                "overhead_ms_per_trial": 1000 * (wall * 2 - busy) / args.trials,
                "utilization": busy / (wall * 2),
            })
    if started:
        ray.shutdown()
    for trainer in ("no-op", "100 ms"):
        hpo_row, tune_row = [r for r in rows if r["trainer"] == trainer]
        hpo_row["overhead_vs_tune"] = (
            hpo_row["overhead_ms_per_trial"] / tune_row["overhead_ms_per_trial"])
    print(f"# hpo Ray backend vs Ray Tune, parallel 2 ({machine()}, ray {ray.__version__})\n")
    print(markdown(rows, ["trainer", "runner", "trials", "wall_s", "trials_per_s",
                          "overhead_ms_per_trial", "utilization", "overhead_vs_tune"]))


if __name__ == "__main__":
    main()
