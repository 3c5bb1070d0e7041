"""`hpo agent`: the trial loop, pulled by a Kubernetes Job pod (or any process anywhere).

Agents share one sweep through its storage (PostgreSQL for several machines). The sweep is
created once with ``hpo sweep SWEEP.yaml --backend agents --storage URL``; its config lives
in the study, so every agent runs the same sweep. Each agent loops:

1. reap: running trials whose lease ran out (no heartbeat for ``lease_s``) are failed as
   "agent lost", their budget slot is released and their params re-queued once;
2. claim one budget slot atomically in the database (never more than the budget in total);
3. ask (a re-queued trial first), train with a heartbeat thread renewing the lease, tell.

When no slot is left the agent waits while other agents still run trials (one may be lost and
re-queued), then exits 0. Storage outages (a PostgreSQL restart) are retried with backoff.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import optuna

from hpo import study as studies
from hpo.errors import StudyNotFound
from hpo.execute import RunnerSpec, TrialJob, TrialRunner, ask_job
from hpo.outage import is_storage_outage, retry_storage
from hpo.space import SearchSpace
from hpo.storage_url import mask_url, resolve_url
from hpo.trial import default_device, worker_identity

log = logging.getLogger("hpo.agent")


@dataclass
class AgentResult:
    trials_run: int = 0
    states: dict[str, int] = field(default_factory=dict)
    reaped: int = 0
    stopped_because: str = ""


class Heartbeat:
    """Renews one trial's lease from a background thread until stopped."""

    def __init__(self, tracking: Any, sweep: str, number: int, every_s: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, args=(tracking, sweep, number, every_s), daemon=True,
            name=f"hpo-heartbeat-{number}",
        )

    def _beat(self, tracking: Any, sweep: str, number: int, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                tracking.heartbeat(sweep, number)
            except Exception as exc:  # the database may be restarting: try again next beat
                log.warning("heartbeat of trial %s failed: %s", number, exc)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def wait_for_sweep(
    name: str, url: str, max_idle_s: float, tracking: Any = None
) -> optuna.Study:
    """Load the sweep's study, waiting up to ``max_idle_s`` for it to be created."""
    deadline = time.monotonic() + max_idle_s
    announced = False
    while True:
        try:
            return retry_storage(
                lambda: studies.load(name, studies.open_storage(url, name, tracking)),
                f"load sweep {name!r}")
        except StudyNotFound:
            if time.monotonic() >= deadline:
                raise StudyNotFound(
                    f"Sweep {name!r} did not appear in {mask_url(url)} within {max_idle_s:g}s. "
                    "Create it with: hpo sweep SWEEP.yaml --backend agents --storage URL"
                ) from None
            if not announced:
                log.warning("waiting up to %gs for sweep %r to be created in %s",
                            max_idle_s, name, mask_url(url))
                announced = True
            time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))


def run_agent(
    study: str,
    storage: str | None = None,
    *,
    trials: int | None = None,
    max_idle_s: float = 300.0,
    lease_s: float = 60.0,
    objective: Any = None,
) -> AgentResult:
    """Run trials of sweep ``study`` until its budget is spent or ``trials`` ran here."""
    url = resolve_url(storage)
    from hpo.tracking import TrackingStore

    tracking = TrackingStore(url)  # one pool for the tracking store and the study's journal
    loaded = wait_for_sweep(study, url, max_idle_s, tracking)
    config = studies.stored_config(loaded)
    spec = RunnerSpec(config=config.to_dict(), storage=url, study=study, cwd=os.getcwd(),
                      artifact_dir=os.path.abspath(os.path.join("artifacts", study)))
    host, pid = worker_identity()
    runner = TrialRunner(spec, worker=f"agent:{host}:{pid}", tracking=tracking, study=loaded)
    runner.leased = True
    placement = {"host": host, "pid": pid, "device": runner.device or default_device()}
    if objective is not None:
        runner.trainer = objective
    space = SearchSpace.from_config(config.parameters)
    budget = config.trial_budget()
    if config.method == "grid":
        points = len(space.grid_points())
        budget = points if budget is None else min(budget, points)
    poll_s = max(0.2, min(5.0, lease_s / 4))
    deadline = math.inf
    if config.budget.minutes:
        started = tracking.get_sweep(study).started
        elapsed = (datetime.now(UTC) - started).total_seconds() if started else 0.0
        deadline = time.monotonic() + config.budget.minutes * 60 - elapsed
    result = AgentResult()
    outage_started: float | None = None
    next_reap = 0.0
    while trials is None or result.trials_run < trials:
        try:
            if time.monotonic() >= deadline:
                result.stopped_because = "budget.minutes spent"
                break
            if time.monotonic() >= next_reap:  # a lost trial waits at most lease + poll_s
                result.reaped += reap(runner.study, tracking, study, lease_s, config.max_retries)
                next_reap = time.monotonic() + poll_s
            if not retry_storage(lambda: tracking.claim_slot(study, budget), "claim a trial"):
                if retry_storage(lambda: tracking.counts(study), "count trials")["running"] == 0:
                    result.stopped_because = "budget spent"
                    break
                time.sleep(poll_s)  # others still run trials; one may come back re-queued
                continue
            job = retry_storage(
                lambda: ask_job(runner.study, space, tracking, study, runner.worker,
                                placement=placement, leased=True),
                "ask a trial",
            )
            try:
                outcome = _run_leased(runner, tracking, study, job, lease_s)
            except KeyboardInterrupt:  # SIGTERM (pod deleted) or Ctrl-C: hand the trial back
                runner.study = studies.reload(runner.study)  # it may have cut a replay short
                requeue(runner.study, tracking, study, job.number, config.max_retries,
                        reason="agent stopped (SIGTERM/Ctrl-C); re-queued")
                result.stopped_because = "stopped by signal"
                raise
            outage_started = None
        except Exception as exc:
            # The database went away mid-step. Whatever this step held (a slot, a running
            # trial) is recovered through its lease by whichever agent reaps next.
            if not is_storage_outage(exc):
                raise
            now = time.monotonic()
            outage_started = outage_started or now
            if now - outage_started > max(300.0, max_idle_s):
                raise
            log.warning("storage unavailable (%s); retrying", str(exc).splitlines()[0][:200])
            time.sleep(min(5.0, poll_s * 2))
            continue
        result.trials_run += 1
        result.states[outcome.state] = result.states.get(outcome.state, 0) + 1
    else:
        result.stopped_because = f"--trials {trials} reached"
    return result


def _run_leased(runner: TrialRunner, tracking: Any, sweep: str, job: TrialJob, lease_s: float):
    with Heartbeat(tracking, sweep, job.number, every_s=max(0.05, lease_s / 4)):
        return runner.run(job)


def reap(study: optuna.Study, tracking: Any, sweep: str, lease_s: float, max_retries: int) -> int:
    """Fail trials whose agent is gone and re-queue their params once; returns how many."""
    lost = retry_storage(lambda: tracking.expire_lost(sweep, lease_s), "reap lost trials")
    for rec in lost:
        retried = requeue(study, tracking, sweep, rec.number, max_retries)
        log.warning("trial %s of %s: agent lost (no heartbeat for %gs)%s", rec.number, sweep,
                    lease_s, "; re-queued" if retried else "")
    return len(lost)


def requeue(
    study: optuna.Study, tracking: Any, sweep: str, number: int, max_retries: int,
    reason: str | None = None,
) -> bool:
    """Fail trial ``number`` in the study and, within ``max_retries``, re-queue its params
    and give its budget slot back. ``reason`` also ends its tracking record (when the caller
    has not). Returns whether it was re-queued."""
    storage = study._storage
    tid = studies.trial_id(study, number)
    frozen = storage.get_trial(tid)
    if frozen.state.is_finished():
        return False
    attempt = int(frozen.user_attrs.get("hpo_attempt", 0))
    retry = attempt < max_retries
    if retry:
        storage.set_trial_user_attr(tid, studies.RETRIED_ATTR, True)
    study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
    if reason is not None:
        tracking.end_trial(sweep, number, "failed", value=None, error=reason)
    if retry:
        study.enqueue_trial(frozen.params, user_attrs={
            studies.RETRY_OF_ATTR: number, "hpo_attempt": attempt + 1})
        tracking.release_slot(sweep)
    return retry


__all__ = ["AgentResult", "reap", "run_agent"]
