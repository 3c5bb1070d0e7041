"""Trials/second of the sweep loop for a no-op and a 100 ms trainer, hpo vs. plain Optuna, same run.

Same sampler (TPE multivariate + constant liar), pruner (ASHA) and storage for both; parallel 2.
Plain Optuna runs two ways: ``n_jobs=2`` threads in one process, and two processes each calling
``study.optimize`` on the shared storage (what Optuna's docs suggest for real parallelism).
Per trainer (``--seconds``, default a no-op and 100 ms): trials/s, and overhead per trial in ms
= wall x parallel / trials - seconds (slot time not spent in the trainer's own work).

    python benchmarks/bench_loop.py [--trials 200] [--storages sqlite postgres] [--seconds 0 0.1]
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing as mp
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import hpo  # noqa: E402
from benchmarks.common import machine, markdown, storages  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)

PARALLEL = 2


def _sampler() -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=0)


def _work(seconds: float) -> None:
    """The trainer's own work: nothing, or a sleep of ``seconds``."""
    if seconds:
        time.sleep(seconds)


def _objective(trial: optuna.Trial, seconds: float = 0.0) -> float:
    x = trial.suggest_float("x", -5, 5)
    _work(seconds)
    return x * x


def _trainer(params: dict[str, Any], ctx: hpo.TrialContext) -> dict[str, float]:
    """hpo trainer doing what ``_objective`` does (``seconds`` comes from ``trainer_args``)."""
    _work(float(params.get("seconds", 0.0)))
    return {"loss": float(params["x"]) ** 2}


def _optuna_worker(url: str, name: str, n: int, seconds: float) -> None:
    study = optuna.load_study(study_name=name, storage=url, sampler=_sampler(),
                              pruner=optuna.pruners.SuccessiveHalvingPruner())
    study.optimize(functools.partial(_objective, seconds=seconds), n_trials=n)


def optuna_threads(url: str, trials: int, seconds: float) -> float:
    study = optuna.create_study(study_name="optuna-threads", storage=url, sampler=_sampler(),
                                pruner=optuna.pruners.SuccessiveHalvingPruner())
    t0 = time.perf_counter()
    study.optimize(functools.partial(_objective, seconds=seconds), n_trials=trials,
                   n_jobs=PARALLEL)
    return time.perf_counter() - t0


def optuna_processes(url: str, trials: int, seconds: float) -> float:
    optuna.create_study(study_name="optuna-procs", storage=url)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_optuna_worker,
                         args=(url, "optuna-procs", trials // PARALLEL, seconds))
             for _ in range(PARALLEL)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return time.perf_counter() - t0


def hpo_sweep(url: str, trials: int, seconds: float, backend: str = "local") -> float:
    cfg = {
        "name": f"hpo-{backend}", "method": "tpe", "metric": {"name": "loss"},
        "parameters": {"x": {"min": -5.0, "max": 5.0}}, "trainer_args": {"seconds": seconds},
        "early_terminate": {"type": "asha", "min_iter": 1, "eta": 3},
        "parallel": PARALLEL, "seed": 0, "storage": url, "backend": backend,
        "budget": {"trials": trials},
    }
    t0 = time.perf_counter()
    result = hpo.run_sweep(cfg, objective=_trainer)
    assert result.counts["complete"] == trials, result.counts
    return time.perf_counter() - t0


RUNNERS: list[tuple[str, Callable[[str, int, float], float]]] = [
    (f"hpo local ({PARALLEL} worker processes)", hpo_sweep),
    (f"optuna optimize n_jobs={PARALLEL} (threads)", optuna_threads),
    (f"optuna {PARALLEL} processes x optimize", optuna_processes),
]


def _trainer_label(seconds: float) -> str:
    return "no-op" if seconds == 0 else f"{1000 * seconds:g} ms"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--storages", nargs="+", default=["sqlite", "postgres"])
    ap.add_argument("--seconds", nargs="+", type=float, default=[0.0, 0.1],
                    help="trainer durations to measure (0 = no-op)")
    args = ap.parse_args(argv)
    rows = []
    for seconds in args.seconds:
        for sname, make in storages(args.storages):
            for label, fn in RUNNERS:
                with make() as url:
                    wall = fn(url, args.trials, seconds)
                rows.append({
                    "trainer": _trainer_label(seconds), "storage": sname, "runner": label,
                    "trials": args.trials, "wall_s": wall, "trials_per_s": args.trials / wall,
                    "ms_per_trial": 1000 * wall / args.trials,
                    "overhead_ms_per_trial": 1000 * (wall * PARALLEL / args.trials - seconds),
                })
    for seconds in args.seconds:
        for sname in args.storages:
            sub = [r for r in rows
                   if r["storage"] == sname and r["trainer"] == _trainer_label(seconds)]
            base = sub[0]["trials_per_s"]
            for r in sub:
                r["hpo_vs_this"] = base / r["trials_per_s"]
    trainers = ", ".join(_trainer_label(s) for s in args.seconds)
    print(f"# loop throughput, {trainers} trainer, parallel {PARALLEL} ({machine()})\n")
    print(markdown(rows, ["trainer", "storage", "runner", "trials", "wall_s", "trials_per_s",
                          "ms_per_trial", "overhead_ms_per_trial", "hpo_vs_this"]))


if __name__ == "__main__":
    main()
