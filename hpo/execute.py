"""Run one trial where it was placed: take its lease, build the context, train, classify,
record.

This is the worker half of the loop. Whoever runs it (the loop's own process, a local worker
process, a Ray actor, a Kubernetes agent) records the result itself before returning (the
``finish`` transition of hpo.lifecycle), so a trial that finished is never lost to a dead
loop or a dropped connection. Any trainer fault fails only its trial: an exception,
``sys.exit``, a timeout; ``os._exit`` and crashes end the worker, which its loop reports.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, replace
from typing import Any

import optuna

from hpo import gpu_memory
from hpo.checkpoints import Checkpoints
from hpo.config import SweepConfig, parse_config
from hpo.errors import TrialPaused, TrialPruned
from hpo.heartbeat import keep_leases
from hpo.lifecycle import Transitions, TrialJob, TrialOutcome
from hpo.outage import retry_storage
from hpo.states import COMPLETE, FAILED, INTERRUPTED, PAUSED, PRUNED
from hpo.study import load, open_storage
from hpo.timeouts import TrialTimeout, time_limit
from hpo.tracking.leases import Owner
from hpo.trainer_ref import Trainer, resolve
from hpo.trial import StudyTrialContext, default_device

DEFAULT_LEASE_S = 60.0


@dataclass(frozen=True)
class RunnerSpec:
    """Everything a worker process needs to run trials of one sweep (picklable)."""

    config: dict[str, Any]
    storage: str
    study: str
    objective: bytes | None = None  # cloudpickled callable from run_sweep(objective=...)
    artifact_dir: str | None = None
    cwd: str | None = None  # the coordinator's working directory (trainer modules live there)
    lease_s: float = DEFAULT_LEASE_S


class TrialRunner:
    """Runs trials of one sweep in this process; keeps the study and stores open."""

    def __init__(
        self, spec: RunnerSpec, kind: str = "local", device: str | None = None,
        *, tracking: Any = None, study: optuna.Study | None = None,
    ) -> None:
        """``kind`` names this owner in trial rows (local, ray, agent);
        ``tracking``/``study``: this process's already open ones (one pool, one replay)."""
        from hpo.tracking import TrackingStore

        if spec.cwd and os.path.isdir(spec.cwd):
            os.chdir(spec.cwd)  # Ray workers start elsewhere; relative paths are the sweep's
            if spec.cwd not in sys.path:
                sys.path.insert(0, spec.cwd)
        self.spec = spec
        self.device = device
        self.config: SweepConfig = parse_config(spec.config, source=f"sweep {spec.study!r}")
        objective = None
        if spec.objective is not None:
            import cloudpickle

            objective = cloudpickle.loads(spec.objective)
        self.trainer: Trainer = resolve(self.config, objective)
        self.tracking = tracking if tracking is not None else TrackingStore(spec.storage)
        self.study = study if study is not None else load(
            spec.study, open_storage(spec.storage, spec.study, self.tracking))
        self.owner = Owner.here(kind)
        self.worker = str(self.owner)
        self.timeout: float | None = getattr(self.config, "timeout", None)
        self.transitions = Transitions(self.study, spec.study,
                                       max_retries=self.config.max_retries)
        et = self.config.early_terminate
        self.pausing = bool(et and et.pause)
        keep_leases(self.tracking, spec.lease_s)

    def run(self, job: TrialJob) -> TrialOutcome:
        """Train one trial and record its result (``kept`` False: it was reaped meanwhile)."""
        cfg = self.config
        device = self.device or default_device()
        if not self.transitions.start(job, self.owner, device):
            return TrialOutcome(job.number, FAILED, None, error="reaped before it started",
                                worker=self.worker, kept=False)
        trial = retry_storage(lambda: optuna.trial.Trial(self.study, job.trial_id),
                              f"load trial {job.number}")
        ctx = StudyTrialContext(
            trial, self.tracking, job.params, objective=cfg.metric.name, goal=cfg.metric.goal,
            sweep=self.spec.study, device=device,
            artifact_dir=self.spec.artifact_dir, pausing=self.pausing,
        )
        gpu_memory.reset()
        start = time.perf_counter()
        error = None
        metrics: dict[str, float] = {}
        try:
            try:
                with time_limit(self.timeout):
                    result = self.trainer({**cfg.trainer_args, **job.params}, ctx)
                metrics, value, error = _final(result, ctx)
                state = COMPLETE if error is None else FAILED
            except TrialPaused:
                state, value = PAUSED, ctx.last_objective()
            except TrialPruned:
                state, value = PRUNED, ctx.last_objective()
            except KeyboardInterrupt:
                raise  # Ctrl-C / SIGTERM: the loop interrupts the trial and re-queues it
            except TrialTimeout as exc:
                state, value, error = FAILED, None, str(exc)
            except BaseException as exc:  # the trainer's bug, bad input, sys.exit: this trial
                state, value = FAILED, None
                error = f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc(limit=20)}"
            duration = time.perf_counter() - start
            ctx.reports.close()  # no background writes from here: finish writes the rest
            gpu_memory.record(ctx, release=cfg.resources.gpu == "auto")
            outcome = TrialOutcome(job.number, state, value, metrics, error, duration,
                                   self.worker)
            kept = self.transitions.finish(job, outcome, self.owner,
                                           reports=ctx.reports.write_pending)
            ctx.reports.close(written=kept)
            if kept and state in (COMPLETE, PRUNED):  # only a paused trial is resumed later
                Checkpoints(ctx.checkpoint_dir).delete()
        finally:
            ctx.reports.close()
        return outcome if kept else replace(outcome, kept=False)


def _final(
    result: Any, ctx: StudyTrialContext
) -> tuple[dict[str, float], float | None, str | None]:
    """Final metrics, objective value and, if the trial must fail, why. A sweep without a
    metric (W&B grid/random) records whatever the trainer returns, with no value."""
    name = ctx.objective
    if isinstance(result, (int, float)) and not isinstance(result, bool):
        metrics = {name or "value": float(result)}
    elif isinstance(result, dict):
        try:
            metrics = {str(k): float(v) for k, v in result.items()}
        except (TypeError, ValueError) as exc:
            return {}, None, f"trainer returned a non-numeric metric: {exc}"
    elif result is None:
        metrics = {}
    else:
        return {}, None, (
            f"trainer returned {type(result).__name__}; return a dict of metrics "
            f"(with {name!r}) or a number"
        )
    if name is None:
        return metrics, None, None
    value = metrics.get(name)
    if value is None:
        value = ctx.last_objective()
        if value is None:
            found = ", ".join(sorted(metrics)) or "nothing"
            return metrics, None, (
                f"objective metric {name!r} was never reported or returned (got: {found}); "
                "return it from the trainer or fix metric.name"
            )
    if not math.isfinite(value):
        return metrics, None, f"objective metric {name!r} is {value} (not finite)"
    return metrics, value, None


__all__ = ["COMPLETE", "FAILED", "INTERRUPTED", "PRUNED", "RunnerSpec", "TrialJob",
           "TrialOutcome", "TrialRunner"]
