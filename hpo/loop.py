"""The one trial loop: claim, place, observe, account, for every placement.

``hpo sweep`` (in-process, worker processes, Ray actors) and ``hpo agent`` ("this agent")
run this same loop; only the placement differs. The rules, written once:

1. **Budget.** A loop claims a trial only while the sweep's counted trials are below the
   budget: running ones included, retried and interrupted ones not (their re-queued copy
   counts). The check is inside the claim transaction (hpo.lifecycle), so any number of loops
   on one sweep (a second ``hpo sweep``, many agents) never exceed it together: a second
   coordinator joins the sweep as one more placement and shares its budget.
2. **Grid.** A grid sweep claims only while a grid point (or a re-queued one) waits.
3. **metric.target / hpo stop.** Once the best complete value reaches the target, or
   ``hpo stop`` set the sweep ``stopping``, no loop claims again; running trials finish.
4. **budget.minutes.** No claim after that many minutes from the latest ``hpo sweep`` start.
5. **End.** A loop whose budget or grid is spent waits while any trial of the sweep still
   runs anywhere (a lost one comes back re-queued), then ends; the sweep is marked finished
   when nothing of it runs any more.
6. **Leases.** Every running trial has an owner and a heartbeat (hpo.tracking.leases); every
   loop reaps trials whose owner is gone: failed and, within ``max_retries``, re-queued.
7. **Lost worker.** A worker that dies (os._exit, segfault, OOM kill) fails its trial the
   same way; the placement starts a fresh worker.
8. **Timeout.** A trial running past ``timeout`` seconds is failed and not retried; a worker
   that does not stop is killed.
9. **Ctrl-C / SIGTERM.** Placed trials are stopped, ended ``interrupted`` and re-queued;
   running the same command again resumes the sweep and runs them first.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna

from hpo import study as studies
from hpo.backends.base import Backend, JobDone
from hpo.errors import StorageUnavailable
from hpo.heartbeat import keep_leases
from hpo.lifecycle import LOOP_KIND, Transitions, TrialJob, budget_deadline
from hpo.outage import retry_storage
from hpo.states import FAILED, INTERRUPTED, RUNNING
from hpo.tracking import leases
from hpo.tracking.leases import Owner

log = logging.getLogger("hpo.loop")
_KILL_GRACE_S = 10.0  # a worker past its trial's timeout by this much is killed


@dataclass
class LoopResult:
    """What one loop did: trials it ran, their states, what it reaped, why it stopped."""

    trials_run: int = 0
    states: dict[str, int] = field(default_factory=dict)
    reaped: int = 0
    stopped_because: str = ""
    interrupted: bool = False


class TrialLoop:
    """One loop over one sweep, placing trials on ``placement``."""

    def __init__(
        self,
        study: optuna.Study,
        store: Any,
        sweep: str,
        config: Any,
        space: Any,
        placement: Backend,
        *,
        lease_s: float = 60.0,
        max_trials: int | None = None,
        retry_s: float = 120.0,
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        self.study, self.store, self.sweep = study, store, sweep
        self.config, self.space, self.placement = config, space, placement
        self.lease_s = lease_s
        self.retry_s = retry_s  # how long the loop itself rides out an outage
        self.max_trials = max_trials
        self.on_progress = on_progress
        self.owner = Owner.here(LOOP_KIND)
        et = config.early_terminate
        self.transitions = Transitions(study, sweep, max_retries=config.max_retries,
                                       retry_s=retry_s, pause=bool(et and et.pause))
        self.timeout: float | None = getattr(config, "timeout", None)
        self.result = LoopResult()
        self._open: dict[int, TrialJob] = {}  # claimed here, not yet accounted for
        self._timed_out: dict[int, str] = {}
        self._signal = False
        self._interruptible = False
        self._stop_asked = False
        self._next_stop_check = 0.0

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> LoopResult:
        """Run until the sweep is done for this loop (see the module doc); Ctrl-C/SIGTERM
        interrupt it cleanly."""
        keep_leases(self.store, self.lease_s)
        budget = self.config.trial_budget()
        grid = self.config.method == "grid"
        deadline = budget_deadline(self.study, self.config.budget.minutes)
        prefetch = 1 if self.placement.capacity > 1 else 0
        poll_s = max(0.05, min(0.5, self.lease_s / 8))
        self._next_reap = 0.0
        outage: float | None = None
        restore = self._catch_signals()
        try:
            while True:
                if self._signal:
                    raise KeyboardInterrupt
                try:
                    if self._turn(budget, grid, deadline, prefetch, poll_s):
                        break
                    outage = None
                except StorageUnavailable as exc:  # every call inside already retried
                    outage = outage or time.monotonic()
                    if time.monotonic() - outage > self.retry_s:
                        raise
                    log.warning("storage unavailable (%s); the loop carries on when it is "
                                "back", str(exc).splitlines()[0][:200])
                    time.sleep(1.0)
        except KeyboardInterrupt:
            self.result.interrupted = True
            self.result.stopped_because = "interrupted (Ctrl-C/SIGTERM)"
            self._interrupt_all()
        except BaseException:
            self.placement.stop()  # its claimed trials are reaped by the next loop
            raise
        else:
            self.placement.stop()
        finally:
            restore()
        return self.result

    def _turn(self, budget: int | None, grid: bool, deadline: float, prefetch: int,
              poll_s: float) -> bool:
        """One turn: reap, enforce timeouts, claim into free slots, poll, account. True when
        the loop is done."""
        now = time.monotonic()
        if now >= self._next_reap:
            self.result.reaped += len(self.transitions.reap(self.lease_s, self.owner))
            self._next_reap = time.monotonic() + max(0.2, min(5.0, self.lease_s / 4))
        if now >= self._next_stop_check:  # `hpo stop`: one small read a second
            self._stop_asked = self.store.get_sweep(self.sweep).status == "stopping"
            self._next_stop_check = now + 1.0
        self._enforce_timeouts()
        refused = None
        while self.placement.free_slots() + prefetch > 0:
            final = self._final_stop(deadline)
            if final:
                self.result.stopped_because = final
                break
            claim = self.transitions.claim(self.space, self.owner, budget=budget, grid=grid,
                                           known=frozenset(self._open))
            if isinstance(claim, str):
                refused = claim
                break
            self._open[claim.number] = claim
            self.placement.submit(claim)
        if not self.placement.in_flight():
            if self.result.stopped_because:
                return True
            if refused and not self._others_running():
                self.result.stopped_because = "budget spent" if refused == "budget" \
                    else "grid done"
                return True
            # workers still starting, or others still run trials (one may come back
            # re-queued): let the placement hear from its workers meanwhile
            t0 = time.monotonic()
            self.placement.poll(poll_s)
            time.sleep(max(0.0, poll_s - (time.monotonic() - t0)))
            return False
        self._interruptible = True  # Ctrl-C may stop an in-process trainer here
        try:
            finished = self.placement.poll(poll_s)
        finally:
            self._interruptible = False
        for done in finished:
            self._account(done)
        if finished and self.on_progress is not None:
            try:
                self.on_progress()
            except StorageUnavailable:
                pass  # the progress line can wait for the database
        return False

    def _final_stop(self, deadline: float) -> str | None:
        if self._stop_asked:
            return "stopped (hpo stop)"
        if time.monotonic() >= deadline:
            return "budget.minutes spent"
        if self.max_trials is not None and self.result.trials_run + len(self._open) >= \
                self.max_trials:
            return f"--trials {self.max_trials} reached"
        if self._target_reached():
            return "metric.target reached"
        return None

    def _others_running(self) -> bool:
        running = retry_storage(lambda: leases.running(self.store, self.sweep),
                                "read running trials")
        return bool(running)

    def _target_reached(self) -> bool:
        target = self.config.metric.target
        if target is None:
            return False
        best = retry_storage(lambda: self.store.best(self.sweep), "read the best trial")
        if best is None or best.value is None:
            return False
        return best.value <= target if self.config.metric.goal == "minimize" \
            else best.value >= target

    def _account(self, done: JobDone) -> None:
        job = done.job
        self._open.pop(job.number, None)
        if done.outcome is not None:
            if done.outcome.kept:
                self.result.trials_run += 1
                state = done.outcome.state
                self.result.states[state] = self.result.states.get(state, 0) + 1
                if state == FAILED:  # shown live, not only in the report
                    lines = [ln for ln in (done.outcome.error or "").splitlines() if ln.strip()]
                    log.warning("trial %s of %s failed: %s", job.number, self.sweep,
                                (lines[0] if lines else "no reason given")[:300])
            return
        timed_out = self._timed_out.pop(job.number, None)
        reason = timed_out or f"worker lost: {done.lost}"
        retried = self.transitions.fail(job.number, reason, retry=timed_out is None)
        if retried is None:  # it finished before its worker died: kept as it was recorded
            self.result.trials_run += 1
            return
        log.warning("trial %s of %s: %s%s", job.number, self.sweep, reason,
                    "; re-queued" if retried else "")
        if not retried:
            self.result.trials_run += 1
            self.result.states[FAILED] = self.result.states.get(FAILED, 0) + 1

    def _enforce_timeouts(self) -> None:
        if not self.timeout:
            return
        now = time.monotonic()
        for job in self.placement.in_flight():
            since = self.placement.running_since(job.number)
            if since is None or job.number in self._timed_out:
                continue
            if now - since > self.timeout + _KILL_GRACE_S:
                self._timed_out[job.number] = (
                    f"trial timed out after {self.timeout:g}s (timeout); its worker was killed")
                self.placement.cancel(job.number)

    def _interrupt_all(self) -> None:
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, signal.SIG_IGN)  # finish cleanup first
        try:
            self.placement.stop()
            studies.reset_replay(self.study)  # the interrupt may have cut a replay short
            for number in sorted(self._open):
                self.transitions.interrupt(number, "interrupted (Ctrl-C/SIGTERM)")
            self._open.clear()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _catch_signals(self) -> Callable[[], None]:
        """Ctrl-C and SIGTERM: remember them in a flag, and raise only while waiting on the
        placement (or running an in-process trainer); elsewhere (claiming, recording) the
        loop sees the flag at its next turn, so no transition is cut in half."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            self._signal = True
            if self._interruptible:
                raise KeyboardInterrupt

        for sig in previous:
            signal.signal(sig, handler)

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore


def sweep_status_at_end(store: Any, sweep: str, result: LoopResult) -> None:
    """Mark the sweep interrupted, or finished when nothing of it runs any more."""
    if result.interrupted:
        retry_storage(lambda: store.end_sweep(sweep, INTERRUPTED), "end the sweep")
        return
    counts = retry_storage(lambda: store.counts(sweep), "count trials")
    if counts.get(RUNNING, 0) == 0:
        retry_storage(lambda: store.end_sweep(sweep, "finished"), "end the sweep")


__all__ = ["LoopResult", "TrialLoop", "sweep_status_at_end"]
