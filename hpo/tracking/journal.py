"""Optuna's journal storage, kept in the tracking database (table ``hpo_journal``).

Optuna's ``RDBStorage`` maps every study operation onto ORM rows: about 60 SQL statements
and 17 commits per trial, 60-80 ms of CPU on a small machine. Optuna's ``JournalStorage``
instead appends each operation to a log and keeps a replayed copy of the study in memory,
reading only the new lines on each access; Optuna documents ``BaseJournalBackend`` as the
extension point for where that log lives. This backend puts it in the same SQLite or
PostgreSQL database as the tracking tables, one journal per sweep, so

- a sweep is still one database (copy ``hpo.db`` and you have everything);
- every process (coordinator, local worker, Ray actor, Kubernetes agent) that can reach the
  database shares the study, exactly as with ``RDBStorage``;
- appends are serialized in the database, so every process replays the same order and
  Optuna's own conflict rules (e.g. two workers popping the same enqueued trial) hold.

Measured on the 2-core VM (60 TPE trials with one report each): 8 ms of study work per trial
instead of 81 ms with ``RDBStorage`` on the same SQLite file.

No snapshots (Optuna's ``BaseJournalSnapshot``): JournalStorage pickles the whole replay every
100 trials inside the ask that creates the trial (140 ms at 10,000 trials here), which would be
most of the p99 ask latency, and a new process replays 10,000 trials in about a second anyway.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from optuna.storages.journal import BaseJournalBackend

from hpo.tracking.store import TrackingStore


class SQLJournalBackend(BaseJournalBackend):
    """The journal of one sweep, stored through a ``TrackingStore``'s engine."""

    def __init__(self, store: TrackingStore, journal: str) -> None:
        self.store = store
        self.journal = journal

    def __reduce__(self) -> tuple[Any, ...]:  # picklable: reopen from the URL elsewhere
        return (SQLJournalBackend, (self.store, self.journal))

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        return [json.loads(line) for line in self.store.read_journal(self.journal, log_number_from)]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self.store.append_journal(self.journal, [json.dumps(log) for log in logs])


__all__ = ["SQLJournalBackend"]
