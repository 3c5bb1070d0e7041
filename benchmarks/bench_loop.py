"""Trials/second of the sweep loop for a no-op trainer, hpo vs. plain Optuna, same run.

Same sampler (TPE multivariate + constant liar), pruner (ASHA) and storage for both; parallel 2.
Plain Optuna runs two ways: ``n_jobs=2`` threads in one process, and two processes each calling
``study.optimize`` on the shared storage (what Optuna's docs suggest for real parallelism).

    python benchmarks/bench_loop.py [--trials 200] [--storages sqlite postgres]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import hpo  # noqa: E402
from benchmarks.common import machine, markdown, storages  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _sampler():
    return optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=0)


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5, 5)
    return x * x


def _optuna_worker(url: str, name: str, n: int) -> None:
    study = optuna.load_study(study_name=name, storage=url, sampler=_sampler(),
                              pruner=optuna.pruners.SuccessiveHalvingPruner())
    study.optimize(_objective, n_trials=n)


def optuna_threads(url: str, trials: int) -> float:
    study = optuna.create_study(study_name="optuna-threads", storage=url, sampler=_sampler(),
                                pruner=optuna.pruners.SuccessiveHalvingPruner())
    t0 = time.perf_counter()
    study.optimize(_objective, n_trials=trials, n_jobs=2)
    return time.perf_counter() - t0


def optuna_processes(url: str, trials: int) -> float:
    optuna.create_study(study_name="optuna-procs", storage=url)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_optuna_worker, args=(url, "optuna-procs", trials // 2))
             for _ in range(2)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return time.perf_counter() - t0


def hpo_sweep(url: str, trials: int, backend: str = "local") -> float:
    cfg = {
        "name": f"hpo-{backend}", "method": "tpe", "metric": {"name": "loss"},
        "parameters": {"x": {"min": -5.0, "max": 5.0}},
        "early_terminate": {"type": "asha", "min_iter": 1, "eta": 3},
        "trainer": "examples.objectives:noop", "parallel": 2, "seed": 0,
        "storage": url, "backend": backend, "budget": {"trials": trials},
    }
    t0 = time.perf_counter()
    result = hpo.run_sweep(cfg)
    assert result.counts["complete"] == trials, result.counts
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--storages", nargs="+", default=["sqlite", "postgres"])
    args = ap.parse_args()
    rows = []
    for sname, make in storages(args.storages):
        for label, fn in [("hpo local (2 worker processes)", hpo_sweep),
                          ("optuna optimize n_jobs=2 (threads)", optuna_threads),
                          ("optuna 2 processes x optimize", optuna_processes)]:
            with make() as url:
                wall = fn(url, args.trials)
            rows.append({"storage": sname, "runner": label, "trials": args.trials,
                         "wall_s": wall, "trials_per_s": args.trials / wall,
                         "ms_per_trial": 1000 * wall / args.trials})
    for sname in args.storages:
        sub = [r for r in rows if r["storage"] == sname]
        base = sub[0]["trials_per_s"]
        for r in sub:
            r["hpo_vs_this"] = base / r["trials_per_s"]
    print(f"# loop throughput, no-op trainer, parallel 2 ({machine()})\n")
    print(markdown(rows, ["storage", "runner", "trials", "wall_s", "trials_per_s",
                          "ms_per_trial", "hpo_vs_this"]))


if __name__ == "__main__":
    main()
