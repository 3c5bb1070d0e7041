"""Run one trial where it was placed: build the context, train, classify, tell, record.

This is the worker half of the loop. Whoever runs it (the coordinator's own process, a local
worker process, a Ray actor, a Kubernetes agent) persists the result itself before returning,
so a trial that finished is never lost to a dead coordinator or a dropped connection.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo.config import SweepConfig, parse_config
from hpo.errors import TrialPruned
from hpo.outage import retry_storage
from hpo.study import load, open_storage
from hpo.trainer_ref import Trainer, resolve
from hpo.trial import StudyTrialContext, default_device, worker_identity

COMPLETE, PRUNED, FAILED, INTERRUPTED = "complete", "pruned", "failed", "interrupted"
_STATE = {COMPLETE: TrialState.COMPLETE, PRUNED: TrialState.PRUNED, FAILED: TrialState.FAIL}


@dataclass(frozen=True)
class TrialJob:
    """One trial to run: Optuna trial number and id, and the user-facing params."""

    number: int
    trial_id: int
    params: dict[str, Any]
    attempt: int = 0
    placed: bool = False  # the tracking row already says where it runs


@dataclass(frozen=True)
class TrialOutcome:
    number: int
    state: str
    value: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    duration_s: float = 0.0
    worker: str = ""


@dataclass(frozen=True)
class RunnerSpec:
    """Everything a worker process needs to run trials of one sweep (picklable)."""

    config: dict[str, Any]
    storage: str
    study: str
    objective: bytes | None = None  # cloudpickled callable from run_sweep(objective=...)
    artifact_dir: str | None = None
    cwd: str | None = None  # the coordinator's working directory (trainer modules live there)


class TrialRunner:
    """Runs trials of one sweep in this process; keeps the study and stores open."""

    def __init__(
        self, spec: RunnerSpec, worker: str | None = None, device: str | None = None,
        *, tracking: Any = None, study: optuna.Study | None = None,
    ) -> None:
        """``tracking``/``study``: this process's already open ones (one pool, one replay)."""
        from hpo.tracking import TrackingStore

        if spec.cwd and os.path.isdir(spec.cwd):
            os.chdir(spec.cwd)  # Ray workers start elsewhere; relative paths are the sweep's
            if spec.cwd not in sys.path:
                sys.path.insert(0, spec.cwd)
        self.spec = spec
        self.device = device
        self.leased = False  # agents: another agent may expire and re-queue a trial
        self.config: SweepConfig = parse_config(spec.config, source=f"sweep {spec.study!r}")
        objective = None
        if spec.objective is not None:
            import cloudpickle

            objective = cloudpickle.loads(spec.objective)
        self.trainer: Trainer = resolve(self.config, objective)
        self.tracking = tracking if tracking is not None else TrackingStore(spec.storage)
        self.study = study if study is not None else load(
            spec.study, open_storage(spec.storage, spec.study, self.tracking))
        host, pid = worker_identity()
        self.host, self.pid = host, pid
        self.worker = worker or f"local:{host}:{pid}"

    def run(self, job: TrialJob) -> TrialOutcome:
        """Train one trial and persist its result (Optuna tell + tracking store)."""
        cfg = self.config
        device = self.device or default_device()
        if not job.placed:
            self.tracking.set_trial_worker(
                self.spec.study, job.number, host=self.host, pid=self.pid,
                worker=self.worker, device=device,
            )
        trial = optuna.trial.Trial(self.study, job.trial_id)
        ctx = StudyTrialContext(
            trial, self.tracking, job.params, objective=cfg.metric.name, goal=cfg.metric.goal,
            sweep=self.spec.study, device=device,
            artifact_dir=self.spec.artifact_dir,
        )
        start = time.perf_counter()
        error = None
        metrics: dict[str, float] = {}
        try:
            result = self.trainer({**cfg.trainer_args, **job.params}, ctx)
            metrics, value, error = _final(result, ctx)
            state = COMPLETE if error is None else FAILED
        except TrialPruned:
            state, value = PRUNED, ctx.last_objective()
        except Exception as exc:  # the trainer's own bug or bad input: fail this trial only
            state, value = FAILED, None
            error = f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc(limit=20)}"
        duration = time.perf_counter() - start
        outcome = TrialOutcome(job.number, state, value, metrics, error, duration, self.worker)
        if self.leased and self.study._storage.get_trial(job.trial_id).state.is_finished():
            # its lease ran out and another agent already failed and re-queued it: the retry
            # owns the result now; recording this one too would count the trial twice
            return TrialOutcome(job.number, FAILED, None, error="lease expired", worker=self.worker)
        persist(self.study, self.tracking, self.spec.study, outcome)
        return outcome


def ask_job(
    study: optuna.Study, space: Any, tracking: Any, sweep: str, worker: str | None = None,
    *, placement: dict[str, Any] | None = None, leased: bool = False,
) -> TrialJob:
    """Ask the study for a trial (a re-queued one first), sample its params, record it.

    ``placement`` is given when this process also trains the trial (agents): the tracking
    row then gets host/pid/device and its lease in the same write.
    """
    from hpo.study import RETRY_OF_ATTR

    trial = study.ask()
    params = space.suggest(trial)
    tracking.start_trial(
        sweep, trial.number, params, retry_of=trial.user_attrs.get(RETRY_OF_ATTR),
        worker=worker, placement=placement, leased=leased,
    )
    attempt = int(trial.user_attrs.get("hpo_attempt", 0))
    return TrialJob(trial.number, trial._trial_id, params, attempt, placed=placement is not None)


def _final(
    result: Any, ctx: StudyTrialContext
) -> tuple[dict[str, float], float | None, str | None]:
    """Final metrics, objective value and, if the trial must fail, why."""
    name = ctx.objective
    if isinstance(result, (int, float)) and not isinstance(result, bool):
        metrics = {name: float(result)}
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


def persist(study: optuna.Study, tracking: Any, sweep: str, outcome: TrialOutcome) -> None:
    """Tell Optuna and end the tracking record. Safe to call again for a finished trial.

    Both writes are retried with backoff while the database is unreachable (a PostgreSQL
    restart, a dropped connection), so a finished trial is not lost to a short outage.
    """
    state = _STATE.get(outcome.state, TrialState.FAIL)

    def tell() -> None:
        if state == TrialState.COMPLETE:
            study.tell(outcome.number, outcome.value, state=state, skip_if_finished=True)
        else:
            study.tell(outcome.number, state=state, skip_if_finished=True)

    def record() -> None:
        tracking.end_trial(
            sweep, outcome.number, outcome.state, value=outcome.value,
            metrics=outcome.metrics or None, error=outcome.error,
        )

    try:
        retry_storage(tell, f"record trial {outcome.number}")
    finally:
        retry_storage(record, f"record trial {outcome.number}")
