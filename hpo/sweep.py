"""``run_sweep``, the Python API behind ``hpo sweep``: validate, open the sweep, run the loop.

The loop itself and its rules (budget, grid, target, minutes, retries, Ctrl-C) are in
hpo.loop; the trial transitions it makes are in hpo.lifecycle. This module builds the
placement from the config and turns what the loop did into a :class:`SweepResult`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo import study as studies
from hpo.backends import Backend, make_backend
from hpo.config import SweepConfig, check_program, load_config, parse_config
from hpo.errors import ConfigError
from hpo.execute import RunnerSpec
from hpo.lifecycle import atomic
from hpo.loop import TrialLoop, sweep_status_at_end
from hpo.outage import retry_storage
from hpo.progress import SweepProgress
from hpo.space import MAX_GRID, SearchSpace
from hpo.storage_url import mask_url, resolve_url
from hpo.strategy import describe
from hpo.trainer_ref import PYTHON_TRAINER, resolve

_OVERRIDES = (
    "trials", "parallel", "backend", "storage", "name", "seed", "minutes", "timeout",
)


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
    name, seed, minutes, timeout. ``report=True`` writes reports/NAME.html; a path writes
    there. Another ``run_sweep``/``hpo sweep`` on the same sweep at the same time joins it
    and shares its budget (hpo.loop).
    """
    unknown = set(overrides) - set(_OVERRIDES)
    if unknown:
        raise ConfigError(f"run_sweep(): unknown override(s) {sorted(unknown)}; use {_OVERRIDES}")
    config = _as_config(config_or_path, objective)
    # every override is validated by the config before anything is created
    config = config.with_overrides(**{k: v for k, v in overrides.items() if k != "name"})
    name = studies.sweep_name(config, overrides.get("name"))
    url = resolve_url(config.storage)
    resolve(config, objective)  # fail on a bad trainer reference before anything runs
    if objective is None and config.backend != "agents":
        check_program(config)  # a program the trials will not find fails here, not N times
    space = SearchSpace.from_config(config.parameters)
    if config.method == "grid" and (not space.is_finite() or space.grid_size() > MAX_GRID):
        space.grid_points()  # raises the clear error (before building anything)
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
    """One ``hpo sweep`` process: opens the sweep and runs the trial loop (hpo.loop) on a
    placement built from the config (in-process, worker processes or Ray actors)."""

    def __init__(
        self,
        config: SweepConfig,
        name: str,
        url: str,
        space: SearchSpace,
        objective: Callable[..., Any] | None = None,
        *,
        ray_address: str | None = None,
        wait_s: float = 120.0,
    ) -> None:
        self.config, self.name, self.url, self.space = config, name, url, space
        self.tracking = open_when_up(url, wait_s)
        info = describe(config)

        def open_sweep() -> Any:
            study = studies.create_or_load(
                config, name, studies.open_storage(url, name, self.tracking))
            self.tracking.create_sweep(
                name, config=config.to_dict(), config_yaml=config.text,
                objective=config.metric.name, goal=config.metric.goal, method=config.method,
                pruner=str(info.get("pruner", "none")), storage=mask_url(url),
            )
            return study

        self.study = retry_storage(open_sweep, f"open sweep {name!r}", total_s=wait_s)
        self.objective = objective
        self.ray_address = ray_address
        self.artifact_dir = Path("artifacts") / name
        self.trials_run = 0

    # -- setup ------------------------------------------------------------------------------
    def _runner_spec(self) -> RunnerSpec:
        blob = None if self.objective is None else _pickle_objective(self.objective)
        return RunnerSpec(
            config=self.config.to_dict(), storage=self.url, study=self.name, objective=blob,
            artifact_dir=str(self.artifact_dir.resolve()), cwd=os.getcwd(),
        )

    def _backend(self) -> Backend:
        spec = self._runner_spec()
        if self.config.backend == "local" and self.config.parallel <= 1 and self.objective:
            # run_sweep(objective=...) with one slot: in this process, the very object
            # (closures, state, unpicklable captures)
            from hpo.backends.inprocess import InProcessBackend
            from hpo.execute import TrialRunner

            runner = TrialRunner(spec, kind="local", tracking=self.tracking, study=self.study)
            runner.trainer = self.objective
            return InProcessBackend(spec, runner)
        return make_backend(
            self.config.backend, spec, parallel=self.config.parallel,
            resources=self.config.resources, ray_address=self.ray_address,
        )

    def _enqueue_grid(self) -> None:
        if self.config.method != "grid" or self.study.user_attrs.get(studies.GRID_ATTR):
            return

        def enqueue() -> None:  # all points and the marker in one transaction
            for point in self.space.grid_points():
                self.study.enqueue_trial(point, skip_if_exists=True)
            self.study.set_user_attr(studies.GRID_ATTR, True)

        atomic(self.study, f"queue the grid of sweep {self.name!r}", enqueue)

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
        self._enqueue_grid()
        bar = SweepProgress(self.name, self.config.trial_budget(), enabled=progress)

        def update() -> None:
            if bar.enabled:
                bar.update(self.tracking.counts(self.name), self._best())

        update()
        mirror = None
        if self.config.mlflow is not None:  # MLflow follows the database (hpo.mlflow_sync)
            from hpo.mlflow_sync import start_mirror

            mirror = start_mirror(self.url, self.name, self.config.mlflow)
        try:
            backend = self._backend()
            loop = TrialLoop(self.study, self.tracking, self.name, self.config, self.space,
                             backend, on_progress=update)
            outcome = loop.run()
        except BaseException:
            if mirror is not None:
                mirror.stop(timeout_s=10)
            raise
        finally:
            bar.close()
        self.trials_run = outcome.trials_run
        sweep_status_at_end(self.tracking, self.name, outcome)
        self._keep_best_artifact()
        result = self._result(time.monotonic() - started, outcome.interrupted)
        result.extra["stopped_because"] = outcome.stopped_because
        if mirror is not None:
            result.extra["mlflow"] = mirror.stop().as_dict()
        return result

    def _best(self) -> float | None:
        best = self.tracking.best(self.name)
        return best.value if best else None

    def _keep_best_artifact(self) -> None:
        if not self.config.trainer_args.get("save_best") or not self.artifact_dir.exists():
            return
        best = self.tracking.best(self.name)
        keep = f"trial-{best.number}" if best else None
        for child in self.artifact_dir.glob("trial-*"):
            if child.name != keep:
                shutil.rmtree(child, ignore_errors=True)

    def _result(self, wall: float, interrupted: bool) -> SweepResult:
        best = retry_storage(lambda: self.tracking.best(self.name), "read the best trial")
        return SweepResult(
            name=self.name, storage=mask_url(self.url),
            best_value=best.value if best else None,
            best_params=best.params if best else None,
            best_number=best.number if best else None,
            counts=retry_storage(lambda: self.tracking.counts(self.name), "count trials"),
            wall_time_s=wall, trials_run=self.trials_run, interrupted=interrupted,
        )


def open_when_up(url: str, wait_s: float) -> Any:
    """The tracking store at ``url``, waiting up to ``wait_s`` for the database to come up
    (a log line says so); real errors (wrong schema, bad URL) are raised at once."""
    from hpo.tracking import TrackingStore

    return retry_storage(lambda: TrackingStore(url), f"open {mask_url(url)}", total_s=wait_s)


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


__all__ = ["Coordinator", "SweepResult", "run_sweep"]
