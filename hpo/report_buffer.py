"""A trial's reports, written in batches: at least every second and inside the trial's
``finish`` transaction; the pruner is asked only at the steps where it can decide.

Writing every ``ctx.report`` as its own transaction costs a database commit per report. The
pruner reads the study only at some steps (hpo.prune_steps), so the buffer keeps reports in
memory and writes them, in one transaction (hpo.lifecycle.atomic: the metric rows and the
intermediate values together), when

- never for the pruner: it is asked (at the steps where it can decide) about the trial as
  stored plus the reports still in memory, and reads other trials from this process's replica
  of the study, read again from the database at most every ``flush_s`` (Hyperband: at every
  decision); with one slot it decides as it would with every report written at once, with
  several it may see another trial's newest values up to ``flush_s`` late;
- the oldest buffered report is a second old (``flush_s``): at the next report, or from a
  background thread when the trainer is between reports; a pruner whose rungs are not known
  yet (hpo.prune_steps: they learn them once a trial completed) is asked at the trial's first
  report and then at these writes, so a trial running while the first one completes starts
  being judged up to ``flush_s`` later than with every report written at once;
- the trial ends: :meth:`ReportBuffer.write_pending` runs inside ``finish``, so a finished
  trial has all its reports.

A worker killed with ``kill -9`` loses at most the last ``flush_s`` of intermediate values of
its running trial; an interrupted trial (Ctrl-C) the same. ``HPO_REPORT_FLUSH_S=0`` writes every
report at once (the unbatched behaviour, for comparison).
"""

from __future__ import annotations

import copy
import math
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from optuna.pruners import HyperbandPruner

from hpo import pause
from hpo import study as studies
from hpo.lifecycle import atomic
from hpo.outage import retry_storage
from hpo.prune_steps import can_prune
from hpo.strategy import BestSoFarPruner

if TYPE_CHECKING:
    import optuna

    from hpo.tracking import TrackingStore

DEFAULT_FLUSH_S = 1.0


def flush_interval() -> float:
    """Seconds a report may wait in memory (``HPO_REPORT_FLUSH_S``; default one second)."""
    raw = os.environ.get("HPO_REPORT_FLUSH_S")
    if raw is None:
        return DEFAULT_FLUSH_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"HPO_REPORT_FLUSH_S={raw!r} is not a number of seconds") from None
    return max(0.0, value) if math.isfinite(value) else DEFAULT_FLUSH_S


class ReportBuffer:
    """Buffered reports of one running trial (one per StudyTrialContext)."""

    def __init__(
        self, trial: optuna.trial.Trial, tracking: TrackingStore, sweep: str, objective: str | None,
        *, flush_s: float | None = None,
    ) -> None:
        self._trial = trial
        self._study = trial.study
        self._tracking = tracking
        self._sweep = sweep
        self._objective = objective
        self._number = trial.number
        self.flush_s = flush_interval() if flush_s is None else flush_s
        self._pending: list[tuple[int, dict[str, float]]] = []
        self._oldest: float | None = None
        self._steps: set[int] = set()  # steps with a finite objective, written or not
        self._committed: set[int] = set()  # steps whose intermediate values are stored
        self._in_finish: set[int] = set()
        self._asked = False  # the pruner was asked about this trial
        self._frozen = retry_storage(lambda: studies.get_trial(self._study, trial._trial_id),
                                     f"read trial {self._number}")
        # a resumed trial (hpo.pause) carries its parent's rungs: judged next at the one above
        self._inherited = pause.inherited_attrs(self._frozen)
        self.resume_of: int | None = self._frozen.user_attrs.get(studies.RESUME_OF_ATTR)
        self._attrs: dict[str, Any] = {**self._inherited, **self._frozen.system_attrs}
        # what the pruner reads other trials from: at most flush_s old (hpo.study.lagging_view)
        self._judge = self._study if isinstance(self._study.pruner, HyperbandPruner) or (
            isinstance(self._study.pruner, BestSoFarPruner)
            and isinstance(self._study.pruner.pruner, HyperbandPruner)) \
            else studies.lagging_view(self._study, self.flush_s)
        self._lock = threading.RLock()
        self._closed = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.flushes = 0  # transactions written (for tests and benchmarks)
        self.decisions = 0  # times the pruner was asked

    # -- what the context calls --------------------------------------------------------------
    def report(self, step: int, metrics: dict[str, float]) -> bool:
        """Keep one report; write what is due. Returns whether the pruner says stop."""
        with self._lock:
            self._pending.append((step, metrics))
            if self._oldest is None:
                self._oldest = time.monotonic()
            value = metrics.get(self._objective) if self._objective else None
            objective = value is not None and math.isfinite(value)
            if objective:
                self._steps.add(step)
            due = objective and self._pruner_due()
            time_due = self.flush_s <= 0 or time.monotonic() - self._oldest >= self.flush_s
            if time_due:
                self._flush()
            else:
                self._start_thread()
            # rungs not known yet (None): asked at the trial's first report, then at writes
            if due is True or (due is None and (time_due or not self._asked)):
                return self._decide()
            return False

    def write_pending(self) -> None:
        """Write the buffered reports in the caller's transaction (``finish``); the buffer is
        emptied by :meth:`close` once that transaction committed."""
        with self._lock:
            self._in_finish = self._write(list(self._pending))

    def close(self, *, written: bool = False) -> None:
        """Stop the background flush; ``written``: the pending reports are in the database."""
        with self._lock:
            self._closed = True
            if written:
                self._committed |= self._in_finish
                self._pending.clear()
                self._oldest = None
        self._wake.set()

    def flush(self) -> None:
        """Write the buffered reports now (one transaction)."""
        with self._lock:
            self._flush()

    # -- internals -----------------------------------------------------------------------------
    def _pruner_due(self) -> bool | None:
        return can_prune(self._study.pruner, self._study, self._frozen, self._steps, self._attrs)

    def _decide(self) -> bool:
        """Ask the pruner about the trial as stored plus the reports still in memory.

        The pruner reads this trial's values from the trial it is given and other trials'
        from the study (rung attributes, completed trials), so the buffered reports need not
        be written first: the decision is the one it would make with every report written.
        (Optuna's ``Trial.should_prune`` would judge its own cache, which the writes here
        bypass.)"""
        tid = self._trial._trial_id

        def ask() -> bool:
            stored = studies.own_trial(self._study, tid)
            view = copy.copy(stored)  # the replica's own object: never change it
            values = dict(stored.intermediate_values)
            for step, value in self._pending_values().items():
                values.setdefault(step, value)
            view.intermediate_values = values
            if self._inherited:
                view.system_attrs = {**self._inherited, **stored.system_attrs}
            return bool(self._study.pruner.prune(self._judge, view))

        pruned = retry_storage(ask, f"ask the pruner about trial {self._number}")
        self._asked = True
        self.decisions += 1
        self._attrs = {**self._inherited, **studies.own_trial(self._study, tid).system_attrs}
        return pruned

    def _pending_values(self) -> dict[int, float]:
        """Objective values of buffered reports not stored yet (a step's first value)."""
        return self._values_of(self._pending) if self._objective else {}

    def _values_of(self, batch: list[tuple[int, dict[str, float]]]) -> dict[int, float]:
        values: dict[int, float] = {}
        for step, metrics in batch:
            value = metrics.get(self._objective)
            if value is not None and math.isfinite(value) and step not in self._committed:
                values.setdefault(step, value)
        return values

    def _flush(self) -> None:
        if not self._pending:
            return
        batch = list(self._pending)
        self._committed |= atomic(self._study, f"report {len(batch)} steps of trial "
                                  f"{self._number}", lambda: self._write(batch))
        del self._pending[:len(batch)]
        self._oldest = time.monotonic() if self._pending else None
        self.flushes += 1

    def _write(self, batch: list[tuple[int, dict[str, float]]]) -> set[int]:
        """The metric rows and the intermediate values the pruner reads; a step reported twice
        keeps its first objective value (Optuna's rule) and its last metric row. Returns the
        steps whose intermediate values it wrote."""
        if not batch:
            return set()
        self._tracking.log_metrics_batch(self._sweep, self._number, batch)
        if not self._objective or len(self._study.directions) > 1:
            return set()  # multi-objective studies cannot prune: no intermediate values
        values = self._values_of(batch)
        studies.set_intermediates(self._study, self._trial._trial_id, values)
        return set(values)

    def _start_thread(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._background, daemon=True,
                                            name=f"hpo-reports-{self._number}")
            self._thread.start()

    def _background(self) -> None:
        """Write reports that waited ``flush_s`` while the trainer is between reports."""
        while not self._closed:
            with self._lock:
                wait = self.flush_s if self._oldest is None else max(
                    0.05, self._oldest + self.flush_s - time.monotonic())
            self._wake.wait(wait)
            with self._lock:
                if self._closed:
                    return
                if self._oldest is not None and time.monotonic() - self._oldest >= self.flush_s:
                    try:
                        self._flush()
                    except Exception:  # noqa: BLE001 - the next report or finish writes them
                        pass
