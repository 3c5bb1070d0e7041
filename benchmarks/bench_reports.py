"""Cost of one intermediate report: hpo (batched and unbatched) vs Optuna RDB vs in-memory.

A trainer reports ``--steps`` (100) steps in each of ``--trials`` (6) trials, one slot, with no
training work between reports, under the same pruner for everyone (``--pruners``: none;
asha = successive halving min_resource 1, reduction factor 3, i.e. rungs 1, 3, 9, 27, 81;
median = MedianPruner(n_startup_trials 5, n_warmup_steps 0, interval_steps 1): a decision
at every step). Per contender, in the same run:

* ``in call``: mean time inside the report call (hpo: ``ctx.report``; Optuna:
  ``trial.report`` + ``trial.should_prune``), over all reports;
* ``amortized``: (wall time of the run with reports - the same run with one report per
  trial) / number of extra reports: what a report costs all told, the final write included
  (hpo writes the last batch inside the trial's finish transaction). Each pair of runs is
  repeated (``--repeats``, default 5); a row has the medians and the amortized range.

Contenders: ``hpo`` (hpo.run_sweep with an objective, in-process, the default batching),
``hpo_unbatched`` (``HPO_REPORT_FLUSH_S=0``: every report its own transaction, what hpo did
before), ``optuna_rdb`` (Optuna's RDBStorage on the same kind of database), ``optuna_memory``
(InMemoryStorage). Databases: SQLite files on disk (a temporary directory) and fresh
PostgreSQL schemas (``HPO_BENCH_POSTGRES_URL``).

    .venv/bin/python benchmarks/bench_reports.py                    # the table in README
    .venv/bin/python benchmarks/bench_reports.py --storages sqlite --pruners asha --trials 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, markdown, storages  # noqa: E402

PRUNERS = {
    "none": None,
    "asha": {"type": "asha", "min_iter": 1, "eta": 3},
    "median": {"type": "median", "n_startup_trials": 5, "n_warmup_steps": 0,
               "interval_steps": 1},
}


def _optuna_pruner(kind: str) -> Any:
    import optuna

    if kind == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0,
                                           interval_steps=1)
    return optuna.pruners.NopPruner()


def _loss(trial: int, step: int, steps: int) -> float:
    """Each trial better than the ones before at every step: the pruner decides at every
    rung (or step) but never stops one, so every run reports all its steps."""
    return 1.0 / (1 + trial) + 2.0 * (1 - step / steps) ** 2


def run_hpo(url: str, name: str, pruner: str, trials: int, steps: int,
            batched: bool) -> tuple[float, float, int]:
    """(wall s, s inside ctx.report, reports) of one hpo sweep."""
    import hpo

    spent = [0.0, 0]

    def trainer(params: dict[str, Any], ctx: Any) -> dict[str, float]:
        loss = 0.0
        for step in range(1, steps + 1):
            loss = _loss(ctx.number, step, steps)
            t0 = time.perf_counter()
            ctx.report({"loss": loss, "lr": 0.01}, step=step)
            spent[0] += time.perf_counter() - t0
            spent[1] += 1
        return {"loss": loss}

    cfg: dict[str, Any] = {
        "name": name, "method": "random", "seed": 0, "storage": url,
        "metric": {"name": "loss", "goal": "minimize"},
        "parameters": {"x": {"min": -1.0, "max": 1.0}}, "budget": {"trials": trials},
    }
    if PRUNERS[pruner]:
        cfg["early_terminate"] = PRUNERS[pruner]
    old = os.environ.get("HPO_REPORT_FLUSH_S")
    os.environ["HPO_REPORT_FLUSH_S"] = "1" if batched else "0"
    try:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hpo.run_sweep(cfg, objective=trainer, progress=False)
        wall = time.perf_counter() - t0
    finally:
        if old is None:
            os.environ.pop("HPO_REPORT_FLUSH_S", None)
        else:
            os.environ["HPO_REPORT_FLUSH_S"] = old
    return wall, spent[0], spent[1]


def run_optuna(url: str | None, name: str, pruner: str, trials: int,
               steps: int) -> tuple[float, float, int]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spent = [0.0, 0]
    storage = optuna.storages.RDBStorage(url) if url else optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name=name, storage=storage, pruner=_optuna_pruner(pruner),
                                sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("x", -1.0, 1.0)
        loss = 0.0
        for step in range(1, steps + 1):
            loss = _loss(trial.number, step, steps)
            t0 = time.perf_counter()
            trial.report(loss, step)
            prune = trial.should_prune()
            spent[0] += time.perf_counter() - t0
            spent[1] += 1
            if prune:
                raise optuna.TrialPruned()
        return loss

    t0 = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return time.perf_counter() - t0, spent[0], spent[1]


def measure(db: str, url_ctx: Any, contender: str, pruner: str, trials: int,
            steps: int, repeats: int = 1) -> dict[str, Any]:
    """One row: the run with ``steps`` reports and the same run with one report a trial;
    with ``repeats`` > 1, each pair runs that often and the row has the medians (a run lasts
    well under a second: one pair alone is noisy, it even gave a negative amortized cost)."""
    if repeats > 1:
        rows = [measure(db, url_ctx, contender, pruner, trials, steps) for _ in range(repeats)]
        mid = dict(rows[0])
        for key in ("in call ms", "amortized ms", "run s"):
            mid[key] = statistics.median(r[key] for r in rows)
        mid["amortized range"] = (f"{min(r['amortized ms'] for r in rows):.3g}-"
                                  f"{max(r['amortized ms'] for r in rows):.3g}")
        return mid
    out = {}
    for n in (1, steps):
        if contender == "optuna_memory":
            cm: Any = contextlib.nullcontext(None)
        else:
            cm = url_ctx()
        with cm as url:
            name = f"r{n}"
            if contender.startswith("hpo"):
                out[n] = run_hpo(url, name, pruner, trials, n, contender == "hpo")
            else:
                out[n] = run_optuna(url if contender == "optuna_rdb" else None, name, pruner,
                                    trials, n)
    (wall, inside, reports), (wall1, _, reports1) = out[steps], out[1]
    return {
        "storage": "memory" if contender == "optuna_memory" else db, "pruner": pruner,
        "contender": contender, "reports": reports,
        "in call ms": 1000 * inside / max(1, reports),
        "amortized ms": 1000 * (wall - wall1) / max(1, reports - reports1),
        "run s": wall,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storages", default="sqlite,postgres")
    parser.add_argument("--pruners", default="none,asha,median")
    parser.add_argument("--contenders", default="hpo,hpo_unbatched,optuna_rdb,optuna_memory")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5,
                        help="run each pair this often; the table has the medians")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    rows = []
    contenders = args.contenders.split(",")
    for db, ctx in storages(args.storages.split(",")):  # warm up: imports, first connections
        for contender in contenders:
            measure(db, ctx, contender, "asha", 1, 2)
    for pruner in args.pruners.split(","):
        memory_done = False
        for db, ctx in storages(args.storages.split(",")):
            for contender in contenders:
                if contender == "optuna_memory":
                    if memory_done:
                        continue
                    memory_done = True
                row = measure(db, ctx, contender, pruner, args.trials, args.steps,
                              args.repeats)
                rows.append(row)
                print(f"{row['storage']:8} {pruner:6} {contender:14} in call "
                      f"{row['in call ms']:.3f} ms, amortized {row['amortized ms']:.3f} ms",
                      file=sys.stderr)
    print(f"{machine()}; {args.trials} trials x {args.steps} reports, one slot; medians of "
          f"{args.repeats} runs\n")
    print(markdown(rows, ["storage", "pruner", "contender", "reports", "in call ms",
                          "amortized ms", "amortized range", "run s"]))


if __name__ == "__main__":
    main()
