"""Agents on PostgreSQL: throughput vs. number of agents, and ask latency vs. study size.

1. Finished trials/second for a no-op trainer with 1, 4, 16, 64 `hpo agent` processes, and
   plain Optuna RDB with the same number of processes each running ``study.optimize`` (TPE,
   same storage). Throughput is measured on the trials' own timestamps (first start to last
   end), so process start-up is not counted for either.
2. Ask latency p50/p99 at 100, 1,000 and 10,000 finished trials: hpo's agent ask (the claim
   transaction: budget check + ask + sample + row, then the finish transaction) vs. Optuna's
   ``study.ask`` + sample + tell, TPE, one long-lived process each (the first ask, which loads
   the study, is reported separately).

    python benchmarks/bench_agents.py [--agents 1 4 16 64] [--trials 400] [--sizes 100 1000 10000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import hpo  # noqa: E402
from benchmarks.common import machine, markdown, postgres_storage  # noqa: E402
from hpo.tracking import TrackingStore  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = {"x": {"min": -5.0, "max": 5.0}, "y": {"min": -5.0, "max": 5.0}}


def _tpe() -> optuna.samplers.TPESampler:
    return optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=None)


def _objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", -5, 5) ** 2 + trial.suggest_float("y", -5, 5) ** 2


def hpo_agents(url: str, n_agents: int, trials: int) -> float:
    hpo.run_sweep({"name": "agents", "method": "tpe", "metric": {"name": "loss"},
                   "parameters": SPACE, "trainer": "examples.objectives:noop",
                   "backend": "agents", "storage": url, "budget": {"trials": trials}})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-m", "hpo.cli", "agent", "--study", "agents",
                               "--storage", url], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(n_agents)]
    for p in procs:
        p.wait()
    rows = TrackingStore(url).trials("agents")
    assert len(rows) == trials, len(rows)
    return trials / (max(r.ended for r in rows) - min(r.started for r in rows)).total_seconds()


def _optuna_proc(url: str, n: int) -> None:
    study = optuna.load_study(study_name="optuna", storage=url, sampler=_tpe())
    study.optimize(_objective, n_trials=n)


def optuna_procs(url: str, n_procs: int, trials: int) -> float:
    optuna.create_study(study_name="optuna", storage=url)
    ctx = mp.get_context("spawn")
    share = [trials // n_procs + (1 if i < trials % n_procs else 0) for i in range(n_procs)]
    procs = [ctx.Process(target=_optuna_proc, args=(url, k)) for k in share if k]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = sum(1 for p in procs if p.exitcode != 0)
    done = optuna.load_study(study_name="optuna", storage=url).get_trials(deepcopy=False)
    if failed or len(done) != trials:
        print(f"optuna: {failed} of {len(procs)} processes crashed; {len(done)} of {trials} "
              "trials recorded", flush=True)
        return float("nan")
    span = max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)
    return trials / span.total_seconds()


def _seed_trials(study: optuna.Study, n: int) -> None:
    dist = {k: optuna.distributions.FloatDistribution(-5, 5) for k in SPACE}
    import random

    rnd = random.Random(0)
    batch = []
    for _ in range(n):
        params = {k: rnd.uniform(-5, 5) for k in SPACE}
        batch.append(optuna.trial.create_trial(params=params, distributions=dist,
                                               value=sum(v * v for v in params.values())))
    study.add_trials(batch)


def ask_latency(url: str, size: int, asks: int, optuna_url: str | None = None) -> list[dict]:
    """``optuna_url``: Optuna's own database (plain Optuna refuses hpo's: hpo.tracking.schema)."""
    optuna_url = optuna_url or url
    from hpo.lifecycle import Transitions, TrialOutcome
    from hpo.space import SearchSpace
    from hpo.tracking.leases import Owner

    hpo.run_sweep({"name": "lat", "method": "tpe", "metric": {"name": "loss"},
                   "parameters": SPACE, "trainer": "examples.objectives:noop",
                   "backend": "agents", "storage": url})
    from hpo import study as studies

    hstudy = studies.load("lat", url)
    _seed_trials(hstudy, size)
    ostudy = optuna.create_study(study_name="o", storage=optuna_url, sampler=_tpe())
    _seed_trials(ostudy, size)
    tracking = TrackingStore(url)
    space = SearchSpace.from_config(studies.stored_config(hstudy).parameters)
    hstudy = studies.load("lat", studies.open_storage(url, "lat", tracking))  # empty cache
    transitions, owner = Transitions(hstudy, "lat"), Owner.here("loop")

    def hpo_ask():  # the claim transaction (budget check + ask + sample + row), then finish
        job = transitions.claim(space, owner, budget=None, grid=False)
        transitions.finish(job, TrialOutcome(job.number, "complete", 1.0), owner)

    def optuna_ask():
        t = ostudy.ask()
        _objective(t)
        ostudy.tell(t, 1.0)

    ostudy = optuna.load_study(study_name="o", storage=optuna_url, sampler=_tpe())
    rows = []
    for label, fn in (("hpo agent ask", hpo_ask), ("optuna ask", optuna_ask)):
        times = []
        for _ in range(asks + 1):
            t0 = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t0))
        first, rest = times[0], sorted(times[1:])
        rows.append({"finished_trials": size, "who": label, "first_ask_ms": first,
                     "p50_ms": statistics.median(rest),
                     "p99_ms": rest[min(len(rest) - 1, int(0.99 * len(rest)))]})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--agents", type=int, nargs="*", default=[1, 4, 16, 64],
                    help="agent counts (none: only the ask-latency part)")
    ap.add_argument("--trials", type=int, default=400)
    ap.add_argument("--sizes", type=int, nargs="*", default=[100, 1000, 10000],
                    help="finished trials before timing asks (none: only throughput)")
    ap.add_argument("--asks", type=int, default=100)
    args = ap.parse_args(argv)
    rows = []
    for n in args.agents:
        with postgres_storage() as url:
            h = hpo_agents(url, n, args.trials)
        with postgres_storage() as url:
            o = optuna_procs(url, n, args.trials)
        rows.append({"processes": n, "hpo_agents_trials_per_s": h,
                     "optuna_rdb_trials_per_s": o, "ratio": h / o})
        print(rows[-1], flush=True)
    if rows:
        print(f"\n# agents on PostgreSQL, no-op trainer, {args.trials} trials ({machine()})\n")
        print(markdown(rows, ["processes", "hpo_agents_trials_per_s", "optuna_rdb_trials_per_s",
                              "ratio"]))
    lat = []
    for size in args.sizes:
        with postgres_storage() as url, postgres_storage() as optuna_url:
            lat += ask_latency(url, size, args.asks, optuna_url)
    if lat:
        print("\n# ask latency (TPE, PostgreSQL)\n")
        print(markdown(lat, ["finished_trials", "who", "first_ask_ms", "p50_ms", "p99_ms"]))


if __name__ == "__main__":
    main()
