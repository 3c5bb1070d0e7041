"""The one vocabulary of trial states and sweep statuses, used by tracking and run code alike.

Trial states (a ``str`` enum, so ``TrialState.COMPLETE == "complete"``):

- ``running``: claimed by a loop (queued for a worker) or being trained; it always has an
  owner and a lease (see hpo.lifecycle).
- ``complete``: finished with a value.
- ``pruned``: stopped early by the pruner (its value, if any, is the last reported one).
- ``failed``: the trainer raised or exited, timed out, or its worker was lost.
- ``interrupted``: the sweep was stopped (Ctrl-C, SIGTERM) while it ran; its parameters are
  queued again and a resumed sweep runs them first.
- ``paused``: stopped at a rung by ``early_terminate: {type: asha, pause: true}`` with its
  checkpoint kept; when the promotion rule later picks it, a new trial (``resume_of`` it)
  continues from that checkpoint (hpo.pause). The paused row itself stays ``paused``.

A finished state (all but ``running``) never changes again.

Sweep statuses: ``running``; ``stopping`` (``hpo stop`` asked every loop to end: they claim
nothing more, let running trials finish, and exit); ``finished`` (budget spent, grid done,
target reached or stopped, and nothing running); ``interrupted``; ``failed``.
"""

from __future__ import annotations

from enum import StrEnum


class TrialState(StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    PAUSED = "paused"


class SweepStatus(StrEnum):
    RUNNING = "running"
    STOPPING = "stopping"  # `hpo stop`: loops claim nothing more and end
    FINISHED = "finished"
    INTERRUPTED = "interrupted"
    FAILED = "failed"


RUNNING = TrialState.RUNNING.value
COMPLETE = TrialState.COMPLETE.value
PRUNED = TrialState.PRUNED.value
FAILED = TrialState.FAILED.value
INTERRUPTED = TrialState.INTERRUPTED.value
PAUSED = TrialState.PAUSED.value

#: Every trial state, in the order ``TrackingStore.counts`` returns them.
TRIAL_STATES: tuple[str, ...] = tuple(s.value for s in TrialState)
#: Every sweep status.
SWEEP_STATUSES: tuple[str, ...] = tuple(s.value for s in SweepStatus)

__all__ = [
    "COMPLETE", "FAILED", "INTERRUPTED", "PAUSED", "PRUNED", "RUNNING", "SWEEP_STATUSES",
    "TRIAL_STATES", "SweepStatus", "TrialState",
]
