"""The coordinator loop: ask trials, place them on a backend, keep the budget, survive faults.

``run_sweep`` is the Python API behind ``hpo sweep``. The loop asks the study for a trial,
samples its parameters, hands it to the backend, and records what comes back. Trial results
are persisted by whoever ran the trial (see hpo.execute), so this loop only has to account for
trials that never came back: lost workers (failed, retried with the same params up to
``max_retries``) and Ctrl-C (interrupted; rerun the same command to resume).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from hpo import study as studies
from hpo.backends import Backend, JobDone, make_backend
from hpo.config import SweepConfig, load_config, parse_config
from hpo.errors import ConfigError
from hpo.execute import (
    FAILED,
    INTERRUPTED,
    RunnerSpec,
    TrialJob,
    TrialOutcome,
    ask_job,
    persist,
)
from hpo.progress import SweepProgress
from hpo.space import SearchSpace
from hpo.storage_url import mask_url, resolve_url
from hpo.strategy import describe
from hpo.trainer_ref import PYTHON_TRAINER, resolve

_OVERRIDES = ("trials", "parallel", "backend", "storage", "name", "seed", "minutes")


@dataclass
class SweepResult:
    """What a sweep ended with. ``counts`` covers every trial of the study, resumed ones too."""

    name: str
    storage: str
    best_value: float | None
    best_params: dict[str, Any] | None
    best_number: int | None
    counts: dict[str, int]
    wall_time_s: float
    trials_run: int = 0
    interrupted: bool = False
    report_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _as_config(
    config_or_path: SweepConfig | Mapping[str, Any] | str | os.PathLike, objective: Any = None
) -> SweepConfig:
    if isinstance(config_or_path, SweepConfig):
        return config_or_path
    if isinstance(config_or_path, Mapping):
        data = dict(config_or_path)
        if objective is not None and not data.get("trainer") and not data.get("program"):
            data["trainer"] = PYTHON_TRAINER  # the callable given to run_sweep trains
        return parse_config(data)
    return load_config(config_or_path)


def run_sweep(
    config_or_path: SweepConfig | Mapping[str, Any] | str | os.PathLike,
    objective: Callable[..., Any] | None = None,
    *,
    progress: bool = False,
    report: bool | str | os.PathLike = False,
    ray_address: str | None = None,
    **overrides: Any,
) -> SweepResult:
    """Run (or resume) a sweep and return its result.

    ``objective`` is a trainer callable ``f(params, ctx) -> dict | float``; without it the
    config's ``trainer``/``program`` runs. ``overrides``: trials, parallel, backend, storage,
    name, seed, minutes. ``report=True`` writes reports/NAME.html; a path writes there.
    """
    unknown = set(overrides) - set(_OVERRIDES)
    if unknown:
        raise ConfigError(f"run_sweep(): unknown override(s) {sorted(unknown)}; use {_OVERRIDES}")
    config = _as_config(config_or_path, objective)
    minutes = overrides.pop("minutes", None)
    config = config.with_overrides(**{k: v for k, v in overrides.items() if k != "name"})
    if minutes is not None:
        budget = config.budget.model_copy(update={"minutes": minutes})
        config = config.model_copy(update={"budget": budget})
    name = studies.sweep_name(config, overrides.get("name"))
    url = resolve_url(config.storage)
    resolve(config, objective)  # fail on a bad trainer reference before anything runs
    space = SearchSpace.from_config(config.parameters)
    if config.method == "grid":
        space.grid_points()  # refuses an infinite grid before anything runs
    coordinator = Coordinator(config, name, url, space, objective, ray_address=ray_address)
    if config.backend == "agents":  # create the sweep; `hpo agent` processes run it
        return coordinator.prepare_for_agents()
    result = coordinator.run(progress=progress)
    if report:
        result.report_path = _write_report(name, url, None if report is True else report)
    return result


def _write_report(name: str, url: str, path: str | os.PathLike | None) -> str | None:
    try:
        from hpo.reporting import build_report
    except ImportError:
        return None
    return str(build_report(name, storage=url, path=path))


class Coordinator:
    """One sweep's loop on one backend."""

    def __init__(
        self,
        config: SweepConfig,
        name: str,
        url: str,
        space: SearchSpace,
        objective: Callable[..., Any] | None = None,
        *,
        ray_address: str | None = None,
    ) -> None:
        from hpo.tracking import TrackingStore

        self.config, self.name, self.url, self.space = config, name, url, space
        self.tracking = TrackingStore(url)
        self.storage = studies.open_storage(url, name, self.tracking)
        self.study = studies.create_or_load(config, name, self.storage)
        info = describe(config)
        self.tracking.create_sweep(
            name, config=config.to_dict(), config_yaml=config.text, objective=config.metric.name,
            goal=config.metric.goal, method=config.method, pruner=str(info.get("pruner", "none")),
            storage=mask_url(url),
        )
        self.objective = objective
        self.ray_address = ray_address
        self.artifact_dir = Path("artifacts") / name
        self.trials_run = 0
        self._open: dict[int, int] = {}  # asked here and not yet accounted for: number -> id

    # -- setup ------------------------------------------------------------------------------
    def _runner_spec(self) -> RunnerSpec:
        blob = None if self.objective is None else _pickle_objective(self.objective)
        return RunnerSpec(
            config=self.config.to_dict(), storage=self.url, study=self.name, objective=blob,
            artifact_dir=str(self.artifact_dir.resolve()), cwd=os.getcwd(),
        )

    def _backend(self) -> Backend:
        spec = self._runner_spec()
        if self.config.backend == "local" and self.config.parallel <= 1:
            from hpo.backends.inprocess import InProcessBackend
            from hpo.execute import TrialRunner

            runner = TrialRunner(spec)
            if self.objective is not None:
                runner.trainer = self.objective  # keep the very object (closures, state)
            return InProcessBackend(spec, runner)
        return make_backend(
            self.config.backend, spec, parallel=self.config.parallel,
            resources=self.config.resources, ray_address=self.ray_address,
        )

    def _recover_stale(self) -> None:
        """Trials left RUNNING by a coordinator of this host that is gone: mark interrupted."""
        import socket

        host = socket.gethostname()
        stale = []
        for rec in self.tracking.trials(self.name, states=["running"]):
            if rec.host in (None, host) and not _pid_alive(rec.pid):
                stale.append(rec.number)
        running = {
            t.number: t
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        }
        for number in stale:
            if number in running:
                self._finish_interrupted(number, running[number]._trial_id, "coordinator died")
        if stale:
            self.tracking.mark_running_as(self.name, INTERRUPTED, "coordinator died", stale)

    def _enqueue_grid(self) -> None:
        if self.config.method != "grid" or self.study.user_attrs.get(studies.GRID_ATTR):
            return
        for point in self.space.grid_points():
            self.study.enqueue_trial(point, skip_if_exists=True)
        self.study.set_user_attr(studies.GRID_ATTR, True)

    def prepare_for_agents(self) -> SweepResult:
        """Create the study and tracking records (and grid queue) for `hpo agent` processes."""
        self._enqueue_grid()
        result = self._result(0.0, False)
        result.extra["agent_command"] = (
            f"hpo agent --study {self.name} --storage {mask_url(self.url)}"
        )
        return result

    # -- the loop ---------------------------------------------------------------------------
    def run(self, progress: bool = False) -> SweepResult:
        started = time.monotonic()
        self._recover_stale()
        self._enqueue_grid()
        budget = self.config.trial_budget()
        deadline = (
            started + self.config.budget.minutes * 60 if self.config.budget.minutes else math.inf
        )
        counted = studies.counted_trials(self.study)
        bar = SweepProgress(self.name, budget, enabled=progress)
        if bar.enabled:
            bar.update(self.tracking.counts(self.name), self._best())
        backend = self._backend()
        # With several slots, keep one trial asked ahead so a slot that frees up starts its
        # next trial at once instead of waiting for the sampler (asks are serial here).
        prefetch = 1 if backend.capacity > 1 else 0
        interrupted = False
        restore = self._catch_sigint()
        try:
            while True:
                if self._sigint:  # a Ctrl-C that Python swallowed (e.g. inside a GC callback)
                    raise KeyboardInterrupt
                while backend.free_slots() + prefetch > 0 and time.monotonic() < deadline:
                    if budget is not None and counted + len(backend.in_flight()) >= budget:
                        break
                    if self.config.method == "grid" and studies.waiting_trials(self.study) == 0:
                        break
                    if self._target_reached():
                        break
                    backend.submit(self._ask())
                if not backend.in_flight():
                    break
                self._interruptible = True  # Ctrl-C may stop a trainer running in here
                try:
                    finished = backend.poll(0.5)
                finally:
                    self._interruptible = False
                for done in finished:
                    counted += self._handle(done)
                if finished and bar.enabled:
                    bar.update(self.tracking.counts(self.name), self._best())
        except KeyboardInterrupt:
            interrupted = True
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish cleanup first
            try:
                backend.stop()
                self.study = studies.reload(self.study)  # the interrupt may have cut a replay
                running = {t.number for t in self.tracking.trials(self.name, states=["running"])}
                for number, tid in list(self._open.items()):
                    self._finish_interrupted(number, tid, "interrupted (Ctrl-C)", running)
            finally:
                signal.signal(signal.SIGINT, previous)
        else:
            backend.stop()
        finally:
            restore()
            bar.close()
        self.tracking.end_sweep(self.name, "interrupted" if interrupted else "finished")
        self._keep_best_artifact()
        return self._result(time.monotonic() - started, interrupted)

    def _catch_sigint(self) -> Callable[[], None]:
        """Remember Ctrl-C in a flag as well as raising, so no interrupt is ever lost."""
        self._sigint = False
        self._interruptible = False
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum: int, frame: Any) -> None:
            # Raise only while waiting on the backend (or running an in-process trainer);
            # elsewhere (asking, recording) the loop sees the flag at its next turn, so no
            # trial is left half-asked or half-recorded.
            self._sigint = True
            if self._interruptible:
                raise KeyboardInterrupt

        signal.signal(signal.SIGINT, handler)
        return lambda: signal.signal(signal.SIGINT, previous)

    def _ask(self) -> TrialJob:
        job = ask_job(self.study, self.space, self.tracking, self.name, self.config.backend)
        self._open[job.number] = job.trial_id
        self.trials_run += 1
        return job

    def _handle(self, done: JobDone) -> int:
        """Account for a finished or lost job; returns how many budget units it used."""
        self._open.pop(done.job.number, None)
        if done.outcome is not None:
            return 1
        job = done.job
        frozen = self.study._storage.get_trial(job.trial_id)
        if frozen.state.is_finished():  # it finished before its worker died: keep it
            return 1
        reason = f"worker lost: {done.lost}"
        retry = job.attempt < self.config.max_retries
        if retry:  # attrs first: a finished trial can no longer be changed
            self.study._storage.set_trial_user_attr(job.trial_id, studies.RETRIED_ATTR, True)
        persist(self.study, self.tracking, self.name,
                TrialOutcome(job.number, FAILED, None, error=reason))
        if not retry:
            return 1
        self.study.enqueue_trial(
            frozen.params,
            user_attrs={studies.RETRY_OF_ATTR: job.number, "hpo_attempt": job.attempt + 1},
        )
        return 0

    def _finish_interrupted(
        self, number: int, trial_id: int, reason: str, running: set[int] | None = None
    ) -> None:
        storage = self.study._storage
        frozen = storage.get_trial(trial_id)
        if frozen.state.is_finished():
            if running and number in running:  # told, but its tracking record was cut short
                state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}
                self.tracking.end_trial(self.name, number, state.get(frozen.state, FAILED),
                                        value=frozen.value)
            return
        storage.set_trial_user_attr(trial_id, studies.INTERRUPTED_ATTR, True)
        self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        self.tracking.end_trial(self.name, number, INTERRUPTED, value=None, error=reason)

    def _best(self) -> float | None:
        best = self.tracking.best(self.name)
        return best.value if best else None

    def _target_reached(self) -> bool:
        target = self.config.metric.target
        if target is None:
            return False
        best = self._best()
        if best is None:
            return False
        return best <= target if self.config.metric.goal == "minimize" else best >= target

    def _keep_best_artifact(self) -> None:
        if not self.config.trainer_args.get("save_best") or not self.artifact_dir.exists():
            return
        best = self.tracking.best(self.name)
        keep = f"trial-{best.number}" if best else None
        for child in self.artifact_dir.glob("trial-*"):
            if child.name != keep:
                shutil.rmtree(child, ignore_errors=True)

    def _result(self, wall: float, interrupted: bool) -> SweepResult:
        best = self.tracking.best(self.name)
        return SweepResult(
            name=self.name, storage=mask_url(self.url),
            best_value=best.value if best else None,
            best_params=best.params if best else None,
            best_number=best.number if best else None,
            counts=self.tracking.counts(self.name), wall_time_s=wall,
            trials_run=self.trials_run, interrupted=interrupted,
        )


def _pickle_objective(objective: Callable[..., Any]) -> bytes:
    """Pickle the objective for worker processes and Ray actors.

    Functions from the user's own modules (a script, a test file, a notebook) are pickled by
    value, since the worker may not be able to import that module; installed packages are
    pickled by reference as usual.
    """
    import sys
    import sysconfig

    import cloudpickle

    module = sys.modules.get(getattr(objective, "__module__", "") or "")
    path = os.path.realpath(str(getattr(module, "__file__", "") or ""))
    installed = {os.path.realpath(sysconfig.get_paths()[k])
                 for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    by_value = (
        module is not None and bool(getattr(module, "__file__", None))
        and module.__name__ != "__main__"
        and not any(path.startswith(prefix + os.sep) for prefix in installed)
        and "site-packages" not in path and "dist-packages" not in path
    )
    if by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(objective)
    finally:
        if by_value:
            cloudpickle.unregister_pickle_by_value(module)


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["Coordinator", "SweepResult", "run_sweep"]
