"""Idle fraction of workers under ASHA with 8 concurrent slots, hpo vs. Ray Tune and Optuna.

A trainer with a learning curve: 9 steps, each sleeps ``--step-ms`` then reports
loss = (x - 0.3)^2 + 1 / (step + 1) + noise (seeded by x), so ASHA (min resource 1, eta 3:
rungs at steps 1, 3, 9) stops many trials at different rungs. With 8 slots, every contender:

* ``hpo-local``: ``hpo.run_sweep(objective=...)``, ``method: tpe``, ``early_terminate: asha``,
  ``parallel: 8`` (8 worker processes), throw-away SQLite storage;
* ``hpo-ray``: the same on ``backend: ray`` (8 actors at 0.25 CPU, so 8 fit on 2 CPUs);
* ``tune``: ``Tuner`` + ``OptunaSearch`` (TPE) + ``ASHAScheduler(grace_period=1,
  reduction_factor=3, max_t=9)``, ``reuse_actors=True``, ``max_concurrent_trials=8``, 0.25 CPU;
* ``optuna``: TPE + ``SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)``,
  ``study.optimize(n_jobs=8)`` on SQLite (``--optuna-storage memory`` for in-memory).

Busy time is the time inside the trainer's steps (the sleeps), measured in the trainer itself;
reporting and pruning decisions count as idle. utilization = busy / (wall x 8), idle fraction
= 1 - utilization; wall includes start-up (worker processes, actors). Ray is started once.

    RAY_AUTH_MODE=disabled python benchmarks/bench_slots.py [--trials 200] [--step-ms 30]
        [--only hpo-local hpo-ray tune optuna] [--optuna-storage sqlite|memory]
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from benchmarks.common import machine, markdown, sqlite_storage  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)

SLOTS = 8
STEPS = 9
CPU_PER_TRIAL = 0.25
CONTENDERS = ("hpo-local", "hpo-ray", "tune", "optuna")


def _curve(x: float, step_s: float) -> Iterator[tuple[int, float, float]]:
    """The learning curve: yields (step, loss, busy seconds so far) after each step's work."""
    rng = random.Random(repr(x))
    busy = 0.0
    for step in range(1, STEPS + 1):
        t0 = time.perf_counter()
        time.sleep(step_s)
        busy += time.perf_counter() - t0
        yield step, (x - 0.3) ** 2 + 1 / (step + 1) + 0.01 * rng.gauss(0.0, 1.0), busy


def _hpo_trainer(params: dict[str, Any], ctx: Any) -> dict[str, float]:
    """hpo trainer: reports each step (hpo's ASHA may stop it), records ``busy_s``."""
    busy = loss = 0.0
    try:
        for point in _curve(float(params["x"]), float(params["step_s"])):
            step, loss, busy = point
            ctx.report({"loss": loss}, step=step)
    finally:
        ctx.set_attrs(busy_s=busy)
    return {"loss": loss}


def _hpo(trials: int, step_s: float, backend: str) -> dict[str, float]:
    import hpo
    from hpo.tracking import TrackingStore

    with sqlite_storage() as url:
        cfg = {
            "name": "slots", "method": "tpe", "metric": {"name": "loss"},
            "parameters": {"x": {"min": -1.0, "max": 1.0}}, "trainer_args": {"step_s": step_s},
            "early_terminate": {"type": "asha", "min_iter": 1, "eta": 3},
            "backend": backend, "parallel": SLOTS, "resources": {"cpu": CPU_PER_TRIAL},
            "seed": 0, "storage": url, "budget": {"trials": trials},
        }
        t0 = time.perf_counter()
        result = hpo.run_sweep(cfg, objective=_hpo_trainer)
        wall = time.perf_counter() - t0
        done = result.counts["complete"] + result.counts["pruned"]
        assert done == trials, result.counts
        busy = sum(t.attrs.get("busy_s", 0.0) for t in TrackingStore(url).trials("slots"))
    return {"wall_s": wall, "busy_s": busy, "pruned": result.counts["pruned"]}


def hpo_local(trials: int, step_s: float, **_: Any) -> dict[str, float]:
    return _hpo(trials, step_s, "local")


def hpo_ray(trials: int, step_s: float, **_: Any) -> dict[str, float]:
    return _hpo(trials, step_s, "ray")


def _tune_fn(config: dict[str, Any]) -> None:
    from ray import tune

    for _, loss, busy in _curve(config["x"], config["step_s"]):
        tune.report({"loss": loss, "busy_s": busy})


def ray_tune(trials: int, step_s: float, **_: Any) -> dict[str, float]:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    with tempfile.TemporaryDirectory(prefix="tune-bench-") as tmp:
        tuner = tune.Tuner(
            tune.with_resources(_tune_fn, {"cpu": CPU_PER_TRIAL}),
            param_space={"x": tune.uniform(-1.0, 1.0), "step_s": step_s},
            tune_config=tune.TuneConfig(
                metric="loss", mode="min", num_samples=trials, max_concurrent_trials=SLOTS,
                search_alg=OptunaSearch(sampler=_sampler()),
                scheduler=ASHAScheduler(grace_period=1, reduction_factor=3, max_t=STEPS),
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(storage_path=tmp, verbose=0),
        )
        t0 = time.perf_counter()
        grid = tuner.fit()
        wall = time.perf_counter() - t0
        assert len(grid) == trials and not grid.errors, grid.errors
        busy = sum(r.metrics.get("busy_s", 0.0) for r in grid)
        pruned = sum(r.metrics.get("training_iteration", STEPS) < STEPS for r in grid)
    return {"wall_s": wall, "busy_s": busy, "pruned": pruned}


def _sampler() -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=0)


def _optuna_objective(trial: optuna.Trial, step_s: float) -> float:
    x = trial.suggest_float("x", -1.0, 1.0)
    busy = loss = 0.0
    try:
        for point in _curve(x, step_s):
            step, loss, busy = point
            trial.report(loss, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
    finally:
        trial.set_user_attr("busy_s", busy)
    return loss


def plain_optuna(trials: int, step_s: float, optuna_storage: str = "sqlite",
                 **_: Any) -> dict[str, float]:
    with sqlite_storage() as url:
        study = optuna.create_study(
            storage=url if optuna_storage == "sqlite" else None, sampler=_sampler(),
            pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3))
        t0 = time.perf_counter()
        study.optimize(functools.partial(_optuna_objective, step_s=step_s), n_trials=trials,
                       n_jobs=SLOTS)
        wall = time.perf_counter() - t0
        done = study.get_trials(deepcopy=False)
        assert len(done) == trials, len(done)
        busy = sum(t.user_attrs.get("busy_s", 0.0) for t in done)
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in done)
    return {"wall_s": wall, "busy_s": busy, "pruned": pruned}


RUNNERS: dict[str, tuple[str, Callable[..., dict[str, float]]]] = {
    "hpo-local": (f"hpo local ({SLOTS} worker processes)", hpo_local),
    "hpo-ray": (f"hpo ray backend ({SLOTS} actors)", hpo_ray),
    "tune": ("ray tune (OptunaSearch + ASHA, reuse_actors)", ray_tune),
    "optuna": (f"optuna optimize n_jobs={SLOTS} (threads, {{storage}})", plain_optuna),
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--step-ms", type=float, default=30.0, help="work per step (ms)")
    ap.add_argument("--only", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    ap.add_argument("--optuna-storage", choices=("sqlite", "memory"), default="sqlite")
    args = ap.parse_args(argv)
    step_s = args.step_ms / 1000
    ray_started = False
    if {"hpo-ray", "tune"} & set(args.only):
        import ray

        if not ray.is_initialized():  # one Ray for every contender (reused if already up)
            ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
                     log_to_driver=False)
            ray_started = True
    rows = []
    try:
        for key in args.only:
            label, fn = RUNNERS[key]
            label = label.format(storage=args.optuna_storage)
            m = fn(args.trials, step_s, optuna_storage=args.optuna_storage)
            utilization = m["busy_s"] / (m["wall_s"] * SLOTS)
            rows.append({
                "runner": label, "trials": args.trials, "wall_s": m["wall_s"],
                "trials_per_s": args.trials / m["wall_s"], "busy_s": m["busy_s"],
                "utilization": utilization, "idle_fraction": 1 - utilization,
                "pruned_share": m["pruned"] / args.trials,
            })
    finally:
        if ray_started:
            import ray

            ray.shutdown()
    versions = machine()
    if {"hpo-ray", "tune"} & set(args.only):
        import ray

        versions += f", ray {ray.__version__}"
    print(f"# worker idle fraction under ASHA, {SLOTS} slots, {STEPS} steps x "
          f"{args.step_ms:g} ms ({versions})\n")
    print(markdown(rows, ["runner", "trials", "wall_s", "trials_per_s", "busy_s",
                          "utilization", "idle_fraction", "pruned_share"]))


if __name__ == "__main__":
    main()
