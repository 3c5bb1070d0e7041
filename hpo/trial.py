"""TrialContext: what a trainer sees while it runs one trial.

A trainer is ``train(params: dict, ctx: TrialContext) -> dict[str, float]``. It calls
``ctx.report(metrics, step)`` after each evaluation; ``report`` records every metric and
raises :class:`hpo.TrialPruned` when the pruner says stop.

``TrialContext`` itself is standalone (no study: it keeps reports in memory and never prunes
unless ``prune_after_step`` is set), which is how a trainer is run or debugged outside a sweep.
:class:`StudyTrialContext` is the one the sweep uses: reports go to the Optuna trial (so the
pruner sees them) and to the tracking store, in batches (hpo.report_buffer).
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.errors import TrainerError, TrialPaused, TrialPruned
from hpo.outage import retry_storage

if TYPE_CHECKING:
    import optuna

    from hpo.tracking import TrackingStore


def _as_metrics(metrics: Mapping[str, Any], step: int) -> dict[str, float]:
    if not isinstance(metrics, Mapping):
        raise TrainerError(
            f"ctx.report() takes a dict of metric name -> number, got {type(metrics).__name__}"
        )
    if isinstance(step, bool) or not isinstance(step, int):
        try:
            step = int(step)
        except (TypeError, ValueError):
            raise TrainerError(f"ctx.report(step=...) must be an int, got {step!r}") from None
    out: dict[str, float] = {}
    for key, value in metrics.items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            raise TrainerError(
                f"ctx.report(): metric {key!r} must be a number, got {value!r}"
            ) from None
    return out


class TrialContext:
    """Standalone trial context: records reports in memory; prunes only if asked to."""

    def __init__(
        self,
        params: Mapping[str, Any] | None = None,
        *,
        objective: str = "loss",
        goal: str = "minimize",
        number: int = 0,
        sweep: str = "standalone",
        device: str | None = None,
        artifact_dir: str | os.PathLike[str] | None = None,
        prune_after_step: int | None = None,
        resume_of: int | None = None,
    ) -> None:
        self.params: dict[str, Any] = dict(params or {})
        self.objective = objective
        self.goal = goal
        self.number = number
        self.sweep = sweep
        self.device = device or default_device()
        self.artifact_dir = Path(artifact_dir) if artifact_dir else None
        self.prune_after_step = prune_after_step
        self.history: list[tuple[int, dict[str, float]]] = []
        self.attrs: dict[str, Any] = {}
        self.last_step: int | None = None
        self.resume_of: int | None = resume_of
        self.pausing = False  # a pausing ASHA judges this trial (save checkpoints)
        self.max_step: int | None = None  # set_max_step()

    # -- what trainers call -------------------------------------------------------------
    def report(self, metrics: Mapping[str, Any], step: int) -> None:
        """Record ``metrics`` at ``step``; raise ``TrialPruned`` if the pruner says stop."""
        values = _as_metrics(metrics, step)
        step = int(step)
        self.history.append((step, values))
        self.last_step = step
        self._record(step, values)
        value = values.get(self.objective)
        if value is not None and math.isfinite(value):
            self._report_objective(value, step)
            if self.should_prune():
                raise self._stopped(step, value)

    def should_prune(self) -> bool:
        """True when the pruner wants this trial stopped (report() already raises for you)."""
        return self.prune_after_step is not None and (self.last_step or 0) >= self.prune_after_step

    def set_attrs(self, **attrs: Any) -> None:
        """Record extra facts about this trial (parameter counts, tokens/s, artifact paths)."""
        self.attrs.update(attrs)
        self._record_attrs(attrs)

    def set_max_step(self, step: int) -> None:
        """Say the ``step`` this trial's last report will have (a trainer that knows its
        length: epochs, ``max_steps``). ASHA without ``early_terminate.max_iter`` then sets its
        rungs from it instead of waiting for a trial to complete, so it can prune the first
        trials; Hyperband with ``max_iter`` unset likewise. Call it before the first report."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise TrainerError(f"ctx.set_max_step() takes a step >= 1, got {step!r}")
        self.max_step = step
        self._declare_max_step(step)

    # -- checkpoints (pause and resume, hpo.pause) ------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        """Where this trial's checkpoints go (``artifact_dir/trial-<N>/checkpoint``)."""
        root = self.artifact_dir or Path("artifacts") / self.sweep
        return root / f"trial-{self.number}" / "checkpoint"

    def save_checkpoint(self, obj_or_path: Any, step: int | None = None) -> Path:
        """Save training state so the trial can be resumed: an object (pickled: a dict of
        state dicts, say) or a file or directory (copied). Call it before ``report`` at the
        steps the pruner judges; returns where it was saved."""
        from hpo.checkpoints import Checkpoints

        step = self.last_step if step is None else int(step)
        return Checkpoints(self.checkpoint_dir).save(obj_or_path, step)

    def load_checkpoint(self) -> Any | None:
        """The checkpoint this trial resumes from (what the paused trial it continues saved:
        the object, or the path of the saved file or directory), else None."""
        from hpo.checkpoints import Checkpoints

        source = self.resume_dir
        return None if source is None else Checkpoints(source).load()

    @property
    def resume_dir(self) -> Path | None:
        """The checkpoint directory of the trial this one resumes, if it saved one."""
        from hpo.checkpoints import Checkpoints

        if self.resume_of is None:
            return None
        root = self.artifact_dir or Path("artifacts") / self.sweep
        path = root / f"trial-{self.resume_of}" / "checkpoint"
        return path if Checkpoints(path).exists() else None

    @property
    def resume_step(self) -> int | None:
        """The step the checkpoint to resume from was saved at (continue after it)."""
        from hpo.checkpoints import Checkpoints

        source = self.resume_dir
        return None if source is None else Checkpoints(source).step()

    # -- hooks for subclasses --------------------------------------------------------------
    def _stopped(self, step: int, value: float) -> TrialPruned:
        return TrialPruned(f"pruned at step {step} ({self.objective}={value:.6g})")

    def _record(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def _report_objective(self, value: float, step: int) -> None:
        pass

    def _record_attrs(self, attrs: dict[str, Any]) -> None:
        pass

    def _declare_max_step(self, step: int) -> None:
        pass

    def last_objective(self) -> float | None:
        """The last finite value reported for the objective metric, if any."""
        for _, values in reversed(self.history):
            value = values.get(self.objective)
            if value is not None and math.isfinite(value):
                return value
        return None


class StudyTrialContext(TrialContext):
    """Trial context bound to an Optuna trial and the tracking store (used by every backend)."""

    def __init__(
        self,
        trial: optuna.trial.Trial,
        tracking: TrackingStore,
        params: Mapping[str, Any],
        *,
        objective: str,
        goal: str,
        sweep: str,
        device: str | None = None,
        artifact_dir: str | os.PathLike[str] | None = None,
        pausing: bool = False,
    ) -> None:
        super().__init__(
            params,
            objective=objective,
            goal=goal,
            number=trial.number,
            sweep=sweep,
            device=device,
            artifact_dir=artifact_dir,
        )
        from hpo.report_buffer import ReportBuffer

        self._trial = trial
        self._tracking = tracking
        self._pruned = False
        self.reports = ReportBuffer(trial, tracking, sweep, objective)
        self.resume_of = self.reports.resume_of
        self.pausing = pausing
        if self.resume_of is not None:
            self.set_attrs(resume_of=self.resume_of, resume_step=self.resume_step)

    def _stopped(self, step: int, value: float) -> TrialPruned:
        if self.pausing:
            return TrialPaused(f"paused at step {step} ({self.objective}={value:.6g})")
        return super()._stopped(step, value)

    # Reports go through a ReportBuffer (hpo.report_buffer): written in one transaction
    # (hpo.lifecycle.atomic: metric rows and intermediate values together) when the pruner can
    # decide, at least every second, and inside the trial's finish transaction. Every write
    # rides out a storage outage (hpo.outage): a database restarting while the trainer runs
    # must not fail the trial as if the trainer had a bug.
    def _record(self, step: int, metrics: dict[str, float]) -> None:
        self._pruned = self.reports.report(step, metrics)

    def should_prune(self) -> bool:
        return self._pruned

    def _declare_max_step(self, step: int) -> None:
        from hpo import study as studies
        from hpo.strategy import MAX_STEP_ATTR, declare_max_step, reads_declared_step

        study = self._trial.study
        declare_max_step(study.pruner, step)
        if not reads_declared_step(study.pruner):
            return  # no other process needs it: no write
        # stored on the trial, so that a process that does not run it (the one that claims
        # trials and promotes paused ones) learns ASHA's rungs too (AshaPruner.learn)
        retry_storage(lambda: studies.set_trial_attr(study, studies.ask_id(self._trial),
                                                     MAX_STEP_ATTR, step),
                      f"record the last step of trial {self.number}")

    def _record_attrs(self, attrs: dict[str, Any]) -> None:
        retry_storage(lambda: self._tracking.set_trial_attrs(self.sweep, self.number, attrs),
                      f"record attributes of trial {self.number}")


def default_device() -> str:
    """``cuda`` when this process was given a GPU (CUDA_VISIBLE_DEVICES non-empty), else ``cpu``.

    Decided from the environment only, so importing torch is not needed to ask.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() not in ("", "-1"):
        return "cuda:0"
    if visible is None and os.path.exists("/dev/nvidiactl"):
        return "cuda:0"
    return "cpu"


def worker_identity() -> tuple[str, int]:
    """(host, pid) of the process running a trial."""
    return socket.gethostname(), os.getpid()
