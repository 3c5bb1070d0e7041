"""The Backend interface: submit jobs up to a concurrency limit, poll for finished ones."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from hpo.lifecycle import TrialJob, TrialOutcome


@dataclass(frozen=True)
class JobDone:
    """A job that left the backend: with its outcome, or lost (the worker died) with a reason."""

    job: TrialJob
    outcome: TrialOutcome | None
    lost: str | None = None


class Backend(ABC):
    """Places trials. Search and pruning are not its business (the study decides those)."""

    name: str = "backend"
    capacity: int = 1

    @abstractmethod
    def submit(self, job: TrialJob) -> None:
        """Start ``job``; only called while ``len(self.in_flight()) < self.capacity``."""

    @abstractmethod
    def poll(self, timeout: float) -> list[JobDone]:
        """Wait up to ``timeout`` seconds; return the jobs that finished or were lost."""

    @abstractmethod
    def in_flight(self) -> list[TrialJob]:
        """Jobs submitted and not yet returned by ``poll``."""

    @abstractmethod
    def stop(self) -> list[TrialJob]:
        """Stop every worker now; return the jobs that were still running."""

    def free_slots(self) -> int:
        return self.capacity - len(self.in_flight())

    def running_since(self, number: int) -> float | None:
        """``time.monotonic()`` when trial ``number`` was handed to a worker (None: queued,
        or the placement runs trials in the loop's own process and times them itself)."""
        return None

    def cancel(self, number: int) -> None:  # noqa: B027 - optional, no-op by default
        """Kill the worker running trial ``number``; the next ``poll`` reports it lost."""
