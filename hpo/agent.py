"""`hpo agent`: the trial loop (hpo.loop) with "this agent" as the placement.

Agents share one sweep through its storage (PostgreSQL for several machines). The sweep is
created once with ``hpo sweep SWEEP.yaml --backend agents --storage URL``; its config lives
in the study, so every agent runs the same sweep. Each agent claims a trial inside the
sweep's budget (shared by every agent and coordinator, checked in one transaction), trains it
in its own process under a lease its heartbeat thread renews, records the result, and reaps
trials whose agent is gone. When the budget is spent it waits while others still run trials
(one may be lost and re-queued), then exits 0. The database may be down at start (a pod
that starts before PostgreSQL) or restart mid-run: the agent waits up to ``max_idle_s``.
"""

from __future__ import annotations

import logging
import os
import time

import optuna

from hpo import study as studies
from hpo.backends.inprocess import InProcessBackend
from hpo.errors import StorageUnavailable, StudyNotFound
from hpo.execute import RunnerSpec, TrialRunner
from hpo.loop import LoopResult, TrialLoop, sweep_status_at_end
from hpo.outage import retry_storage
from hpo.space import SearchSpace
from hpo.storage_url import mask_url, resolve_url

log = logging.getLogger("hpo.agent")

AgentResult = LoopResult


def wait_for_sweep(
    name: str, url: str, max_idle_s: float, tracking: object = None
) -> optuna.Study:
    """Load the sweep's study, waiting up to ``max_idle_s`` for it to be created."""
    deadline = time.monotonic() + max_idle_s
    announced = False
    while True:
        try:
            return retry_storage(
                lambda: studies.load(name, studies.open_storage(url, name, tracking)),
                f"load sweep {name!r}", total_s=max(1.0, deadline - time.monotonic()))
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
    objective: object = None,
) -> LoopResult:
    """Run trials of sweep ``study`` until its budget is spent or ``trials`` ran here."""
    from hpo.sweep import open_when_up

    url = resolve_url(storage)
    wait_s = max(1.0, max_idle_s)
    try:
        tracking = open_when_up(url, wait_s)  # one pool for the tracking store and journal
    except StorageUnavailable as exc:
        raise StorageUnavailable(f"{exc} (waited {wait_s:g}s: --max-idle)") from None
    loaded = wait_for_sweep(study, url, max_idle_s, tracking)
    config = studies.stored_config(loaded)
    spec = RunnerSpec(config=config.to_dict(), storage=url, study=study, cwd=os.getcwd(),
                      artifact_dir=os.path.abspath(os.path.join("artifacts", study)),
                      lease_s=lease_s)
    runner = TrialRunner(spec, kind="agent", tracking=tracking, study=loaded)
    if objective is not None:
        runner.trainer = objective
    loop = TrialLoop(
        loaded, tracking, study, config, SearchSpace.from_config(config.parameters),
        InProcessBackend(spec, runner), lease_s=lease_s, max_trials=trials,
        retry_s=max(120.0, max_idle_s),
    )
    mirror = None
    if config.mlflow is not None:  # every agent mirrors; they take turns (hpo.mlflow_sync)
        from hpo.mlflow_sync import start_mirror

        mirror = start_mirror(url, study, config.mlflow, shared=True)
    try:
        result = loop.run()
        sweep_status_at_end(tracking, study, result)
    finally:
        if mirror is not None:  # its own trials, and the best model once the sweep ended;
            mirror.stop(timeout_s=30)  # logs what MLflow got (a warning if it missed any)
    if result.interrupted:
        raise KeyboardInterrupt  # the CLI exits 130 (SIGTERM on Kubernetes: the pod is gone)
    return result


__all__ = ["AgentResult", "run_agent", "wait_for_sweep"]
