"""A trial's transitions, each written to the study journal and the tracking rows at once.

Every transition below is ONE database transaction that locks the sweep's journal first, reads
the study as it is under that lock, and writes the Optuna journal lines and the tracking rows
together, so no crash point leaves them disagreeing:

- **claim** (a loop): resume a promotable paused trial (hpo.pause), else check the budget
  and the end of a grid, ask the study (a re-queued trial first); sample the parameters, and
  write the trial's row as ``running``, owned by the loop with a fresh lease.
- **start** (whoever trains it): take over the row's lease; refused once the trial was reaped.
- **report**: intermediate values and their metric rows, a batch at a time
  (hpo.report_buffer); the last batch is written inside **finish**.
- **finish**: tell the result and end the row, only while the trial is still running and
  owned by the caller; a late result of a reaped trial is dropped (its retry owns it now).
- **fail**: tell FAIL, end the row with the reason and, within ``max_retries``, mark it
  retried and queue the same parameters again as the next attempt.
- **interrupt**: end the row ``interrupted`` and queue the same parameters again (same
  attempt): a resumed sweep runs them first.
- **reap**: fail (and retry) the running trials whose owner is gone: lease run out, or the
  owner ran on this host and its process exited. A claimed trial whose loop died before a
  worker started it is handed back as interrupted.

A finished trial is never changed again. Transactions that fail because the database is
unavailable are rolled back, this process's replica of the journal is replayed again, and the
whole transition is retried with backoff for up to ``retry_s``.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import optuna
from optuna.trial import TrialState as OptunaState

from hpo import pause
from hpo import study as studies
from hpo.errors import StorageUnavailable
from hpo.states import COMPLETE, FAILED, INTERRUPTED, PAUSED, PRUNED, RUNNING
from hpo.tracking import leases
from hpo.tracking.leases import Owner

log = logging.getLogger("hpo.lifecycle")
T = TypeVar("T")

_TELL = {COMPLETE: OptunaState.COMPLETE, PRUNED: OptunaState.PRUNED, PAUSED: OptunaState.PRUNED,
         FAILED: OptunaState.FAIL}
_FROM_OPTUNA = {OptunaState.COMPLETE: COMPLETE, OptunaState.PRUNED: PRUNED}
LOOP_KIND = "loop"  # owner kind of a trial claimed by a loop and not yet started by a worker


@dataclass(frozen=True)
class TrialJob:
    """One claimed trial: Optuna trial number and id, the user-facing params, the attempt."""

    number: int
    trial_id: int
    params: dict[str, Any]
    attempt: int = 0


@dataclass(frozen=True)
class TrialOutcome:
    """What running a trial gave. ``kept`` is False when the result was not recorded (the
    trial had been reaped meanwhile)."""

    number: int
    state: str
    value: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    duration_s: float = 0.0
    worker: str = ""
    kept: bool = True


def atomic(
    study: optuna.Study, action: str, fn: Callable[[], T], *, retry_s: float = 120.0
) -> T:
    """Run ``fn`` in one transaction that locks ``study``'s journal; see the module doc.

    On any failure the replica of the journal is replayed again (the rolled-back lines are
    gone); ``StorageUnavailable`` is retried with backoff until ``retry_s`` is spent.
    """
    store = studies.store_of(study)
    if store is None:  # a study on another Optuna storage: no joint transaction possible
        return fn()
    if store.in_transaction:  # a transition inside another: part of its transaction
        return fn()
    deadline = time.monotonic() + retry_s
    delay = 0.25
    while True:
        try:
            with store.transaction(action, journal=study.study_name):
                return fn()
        except BaseException as exc:
            studies.reset_replay(study)
            if not isinstance(exc, StorageUnavailable) or time.monotonic() + delay > deadline:
                raise
            log.warning("%s: storage unavailable (%s); retrying in %.1fs", action,
                        str(exc).splitlines()[0][:200], delay)
            time.sleep(delay)
            delay = min(delay * 2, 8.0)


class Transitions:
    """The transitions of one sweep's trials, made by one process (see the module doc)."""

    def __init__(
        self, study: optuna.Study, sweep: str, *, max_retries: int = 1, retry_s: float = 120.0,
        pause: bool = False,
    ) -> None:
        """``pause``: resume promotable paused trials before new ones (hpo.pause)."""
        store = studies.store_of(study)
        if store is None:
            raise TypeError("hpo.lifecycle needs a study opened by hpo.study.open_storage")
        self.study, self.store, self.sweep = study, store, sweep
        self.max_retries = max_retries
        self.retry_s = retry_s
        self.pause = pause

    def _atomic(self, action: str, fn: Callable[[], T]) -> T:
        return atomic(self.study, action, fn, retry_s=self.retry_s)

    # -- claim ----------------------------------------------------------------------------
    def claim(
        self, space: Any, owner: Owner, *, budget: int | None, grid: bool,
        known: frozenset[int] = frozenset(),
    ) -> TrialJob | str:
        """Claim the next trial for ``owner``; or why not: ``"budget"`` (spent, running trials
        included) or ``"grid"`` (no grid point left to run).

        ``known``: trials this owner already holds. A claim whose commit was cut off by a lost
        connection may have committed anyway: the retry adopts such a trial instead of
        claiming another one.
        """
        attempts = 0

        def op() -> TrialJob | str:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                adopted = self._adopt(owner, known)
                if adopted is not None:
                    return adopted
            resume = pause.next_resume(self.study) if self.pause else None
            if resume is not None:  # promotions first, past the budget too (hpo.pause)
                paused, rungs = resume
                trial = studies.start_copy(self.study, paused, {
                    studies.RESUME_OF_ATTR: paused.number,
                    pause.RUNGS_ATTR: {str(k): v for k, v in rungs.items()}})
            else:
                if budget is not None and \
                        studies.counted_trials(self.study, running=True) >= budget:
                    return "budget"
                if grid and studies.waiting_trials(self.study) == 0:
                    return "grid"
                trial = self.study.ask()
            params = space.suggest(trial)
            self.store.start_trial(
                self.sweep, trial.number, params,
                retry_of=trial.user_attrs.get(studies.RETRY_OF_ATTR), worker=str(owner),
                placement={"host": owner.host, "pid": owner.pid, "device": None}, leased=True,
            )
            attempt = int(trial.user_attrs.get(studies.ATTEMPT_ATTR, 0))
            return TrialJob(trial.number, studies.ask_id(trial), params, attempt)

        return self._atomic(f"claim a trial of sweep {self.sweep!r}", op)

    def _adopt(self, owner: Owner, known: frozenset[int]) -> TrialJob | None:
        for lease in leases.running(self.store, self.sweep):
            if lease.worker == str(owner) and lease.number not in known:
                tid = studies.trial_id(self.study, lease.number)
                frozen = studies.get_trial(self.study, tid)
                if frozen.state != OptunaState.RUNNING:
                    continue
                rec = self.store.trial(self.sweep, lease.number)
                attempt = int(frozen.user_attrs.get(studies.ATTEMPT_ATTR, 0))
                return TrialJob(lease.number, tid, dict(rec.params), attempt)
        return None

    # -- start / finish -----------------------------------------------------------------------
    def start(self, job: TrialJob, owner: Owner, device: str | None) -> bool:
        """``owner`` starts training ``job``; False when it was reaped meanwhile."""
        from hpo.outage import retry_storage

        return bool(retry_storage(
            lambda: leases.take(self.store, self.sweep, job.number, owner, device),
            f"start trial {job.number}", total_s=self.retry_s))

    def finish(
        self, job: TrialJob, outcome: TrialOutcome, owner: Owner,
        *, reports: Callable[[], None] | None = None,
    ) -> bool:
        """Record ``outcome`` if ``owner`` still holds the trial; returns whether it did.
        ``reports``: writes the trial's buffered reports, in the same transaction."""

        def op() -> bool:
            state, worker = leases.owner_of(self.store, self.sweep, job.number)
            frozen = studies.get_trial(self.study, job.trial_id)
            if frozen.state.is_finished() or state != RUNNING or worker != str(owner):
                return False
            if reports is not None:
                reports()
            tell = _TELL.get(outcome.state, OptunaState.FAIL)
            if outcome.state == PAUSED:  # Optuna: pruned; hpo.pause may resume it later
                studies.set_trial_attr(self.study, job.trial_id, pause.PAUSED_ATTR, True)
            if tell == OptunaState.COMPLETE:
                # a sweep without a metric has no value; Optuna needs one (its grid and
                # random samplers ignore it; hpo's tracking row keeps None)
                value = 0.0 if outcome.value is None else outcome.value
                self.study.tell(job.number, value, state=tell)
            else:
                self.study.tell(job.number, state=tell)
            self.store.end_trial(
                self.sweep, job.number, outcome.state, value=outcome.value,
                metrics=outcome.metrics or None, error=outcome.error,
            )
            return True

        kept = self._atomic(f"record trial {job.number} of sweep {self.sweep!r}", op)
        if not kept:
            log.warning("trial %s of %s: result dropped (the trial was reaped and re-queued "
                        "while it ran; the retry owns it now)", job.number, self.sweep)
        return kept

    # -- fail / interrupt / reap ---------------------------------------------------------------
    def fail(self, number: int, reason: str, *, retry: bool = True) -> bool | None:
        """Fail running trial ``number`` with ``reason``; within ``max_retries`` (and with
        ``retry``) queue its params again. Returns whether it was re-queued, None when it
        had already finished."""

        def op() -> bool | None:
            frozen = self._running(number)
            if frozen is None:
                return None
            attempt = int(frozen.user_attrs.get(studies.ATTEMPT_ATTR, 0))
            again = retry and attempt < self.max_retries
            if again:  # attrs first: a finished trial can no longer be changed
                studies.set_trial_attr(self.study, studies.trial_id(self.study, number),
                                       studies.RETRIED_ATTR, True)
            self.study.tell(number, state=OptunaState.FAIL)
            self.store.end_trial(self.sweep, number, FAILED, value=None, error=reason)
            if again:
                self._requeue(frozen, number, attempt + 1)
            return again

        return self._atomic(f"fail trial {number} of sweep {self.sweep!r}", op)

    def interrupt(self, number: int, reason: str) -> bool:
        """End running trial ``number`` as interrupted and queue its params again (same
        attempt). False when it had finished already."""

        def op() -> bool:
            frozen = self._running(number)
            if frozen is None:
                return False
            attempt = int(frozen.user_attrs.get(studies.ATTEMPT_ATTR, 0))
            studies.set_trial_attr(self.study, studies.trial_id(self.study, number),
                                   studies.INTERRUPTED_ATTR, True)
            self.study.tell(number, state=OptunaState.FAIL)
            self.store.end_trial(self.sweep, number, INTERRUPTED, value=None, error=reason)
            self._requeue(frozen, number, attempt)
            return True

        return self._atomic(f"interrupt trial {number} of sweep {self.sweep!r}", op)

    def _running(self, number: int) -> optuna.trial.FrozenTrial | None:
        """The study's trial ``number`` if it is still running; else make its row agree with
        the study (rows of older hpo versions could lag behind) and return None."""
        frozen = studies.get_trial(self.study, studies.trial_id(self.study, number))
        if frozen.state == OptunaState.RUNNING:
            return frozen
        state, _ = leases.owner_of(self.store, self.sweep, number)
        if state == RUNNING and frozen.state.is_finished():
            ended = PAUSED if frozen.user_attrs.get(pause.PAUSED_ATTR) else \
                _FROM_OPTUNA.get(frozen.state, FAILED)
            self.store.end_trial(self.sweep, number, ended, value=frozen.value)
        return None

    def _requeue(self, frozen: optuna.trial.FrozenTrial, number: int, attempt: int) -> None:
        self.study.enqueue_trial(frozen.params, user_attrs={
            studies.RETRY_OF_ATTR: number, studies.ATTEMPT_ATTR: attempt})

    def reap(self, lease_s: float, me: Owner | None = None) -> list[tuple[int, str]]:
        """Fail (and retry) running trials whose owner is gone; returns (number, why).

        A cheap read decides whether anything looks lost; only then one transaction rechecks
        and acts, so a reap pass on a healthy sweep costs two reads.
        """
        host = socket.gethostname()

        def lost_now() -> dict[int, tuple[str, bool]]:
            now = datetime.now(UTC)
            rows = leases.running(self.store, self.sweep)
            out: dict[int, tuple[str, bool]] = {}
            for lease in rows:
                if me is not None and lease.host == me.host and lease.pid == me.pid:
                    continue  # our own: our heartbeat keeps it
                why = lease.lost(lease_s, now, host)
                if why:
                    out[lease.number] = (why, (lease.worker or "").startswith(LOOP_KIND + ":"))
            held = {lease.number for lease in rows}
            for number in studies.running_trials(self.study):
                if number not in held:  # RUNNING in the study with no running row
                    out[number] = ("no owner recorded", False)
            return out

        from hpo.outage import retry_storage

        if not retry_storage(lost_now, f"look for lost trials of {self.sweep!r}",
                             total_s=self.retry_s):
            return []

        def op() -> list[tuple[int, str]]:
            done = []
            for number, (why, unstarted) in sorted(lost_now().items()):
                if unstarted:  # its loop died before a worker started it: not its fault
                    if self.interrupt(number, f"interrupted: {why}"):
                        done.append((number, why))
                elif self.fail(number, f"worker lost: {why}") is not None:
                    done.append((number, why))
            return done

        reaped = self._atomic(f"reap lost trials of sweep {self.sweep!r}", op)
        for number, why in reaped:
            log.warning("trial %s of %s: %s; re-queued", number, self.sweep, why)
        return reaped


def budget_deadline(study: optuna.Study, minutes: float | None) -> float:
    """``time.monotonic()`` value after which no loop claims a trial (``budget.minutes``
    counts from the latest ``hpo sweep`` start of the sweep)."""
    if not minutes:
        return math.inf
    started = study.user_attrs.get(studies.RUN_STARTED_ATTR)
    elapsed = max(0.0, time.time() - float(started)) if started else 0.0
    return time.monotonic() + minutes * 60 - elapsed


__all__ = ["LOOP_KIND", "TrialJob", "TrialOutcome", "Transitions", "atomic", "budget_deadline"]
