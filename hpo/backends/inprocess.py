"""Run trials one at a time in the coordinator's own process (``parallel: 1``).

Fastest (no process hop) and the only placement that accepts objectives that cannot be
pickled. Ctrl-C reaches the trainer directly and the coordinator marks the trial interrupted.
"""

from __future__ import annotations

from hpo.backends.base import Backend, JobDone
from hpo.execute import RunnerSpec, TrialJob, TrialRunner


class InProcessBackend(Backend):
    name = "local"
    capacity = 1

    def __init__(self, spec: RunnerSpec, runner: TrialRunner | None = None) -> None:
        self._runner = runner or TrialRunner(spec)
        self._pending: list[TrialJob] = []

    def submit(self, job: TrialJob) -> None:
        self._pending.append(job)

    def poll(self, timeout: float) -> list[JobDone]:
        done = []
        while self._pending:
            job = self._pending[0]
            outcome = self._runner.run(job)
            self._pending.pop(0)
            done.append(JobDone(job, outcome))
        return done

    def in_flight(self) -> list[TrialJob]:
        return list(self._pending)

    def stop(self) -> list[TrialJob]:
        left, self._pending = self._pending, []
        return left
