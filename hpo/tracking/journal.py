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
import random
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from optuna.storages.journal import BaseJournalBackend
from sqlalchemy.engine import Connection

from hpo.errors import StorageError
from hpo.tracking import schema
from hpo.tracking.db import _LOCK_RETRIES, JOURNAL_LOCK, Database

J = schema.journal


def append_journal(db: Database, journal: str, logs: Sequence[str]) -> None:
    """Append JSON log lines to ``journal`` with the next gapless sequence numbers.

    Appends are serialized (PostgreSQL advisory lock, SQLite ``BEGIN IMMEDIATE``), so a line
    is committed only after every line before it: a reader that has read up to N never misses
    a line that commits later with a number below N. A retry after a lost connection first
    checks whether the first try committed, so nothing is written twice. Inside
    ``db.transaction`` the lines commit (or roll back) with the rest of that transaction.
    """
    view = db.locked_journal_view(journal)
    if view is not None and "start" in view:  # the lock is held and every line is known
        first, batch = view["start"] + len(view["lines"]), uuid.uuid4().hex
        db._run(f"append to the study journal of {journal!r}", lambda conn: conn.execute(
            sa.insert(J), [{"journal": journal, "seq": first + i, "log": line, "batch": batch}
                           for i, line in enumerate(logs)]))
        view["lines"].extend(logs)
        return
    batch = uuid.uuid4().hex
    tries = 0

    def op(conn: Connection) -> None:
        nonlocal tries
        tries += 1
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k, hashtext(:j))"),
                         {"k": JOURNAL_LOCK, "j": journal})
        if tries > 1 and conn.scalar(
            sa.select(sa.func.count()).where(J.c.journal == journal, J.c.batch == batch)
        ):
            return  # the earlier try committed before its connection was lost
        nxt = conn.scalar(sa.select(sa.func.max(J.c.seq)).where(J.c.journal == journal))
        start = -1 if nxt is None else int(nxt)
        conn.execute(sa.insert(J), [
            {"journal": journal, "seq": start + 1 + i, "log": line, "batch": batch}
            for i, line in enumerate(logs)
        ])

    for attempt in range(_LOCK_RETRIES):
        try:
            return db._run(f"append to the study journal of {journal!r}", op)
        except StorageError as exc:  # a database without the locks above raced us
            if ("UNIQUE" not in str(exc).upper() or attempt == _LOCK_RETRIES - 1
                    or db.in_transaction):
                raise
            time.sleep(0.01 * (attempt + 1) * random.random())


def read_journal(db: Database, journal: str, start: int) -> list[str]:
    """JSON log lines of ``journal`` numbered ``start`` and up, in order.

    Inside a transaction that holds the journal's lock, the lines read and appended in it are
    kept (``Database.locked_journal_view``): reading again costs no query (Optuna's
    JournalStorage reads the journal before nearly every call)."""
    view = db.locked_journal_view(journal)
    if view is not None and "start" in view and start >= view["start"]:
        return view["lines"][start - view["start"]:]
    # one line before ``start`` too, to know that the journal really ends where this read does
    # (a replica still ahead of a rolled-back transaction asks past the end)
    first = max(0, start - 1)
    rows = db._run(
        f"read the study journal of {journal!r}",
        lambda conn: list(conn.execute(
            sa.select(J.c.seq, J.c.log).where(J.c.journal == journal, J.c.seq >= first)
            .order_by(J.c.seq)
        )),
        write=False, single_read=True,
    )
    lines = [log for seq, log in rows if seq >= start]
    if view is not None and (start == 0 or (rows and rows[0][0] == start - 1)):
        view["start"], view["lines"] = start, list(lines)
    return lines


class SQLJournalBackend(BaseJournalBackend):
    """The journal of one sweep, stored through a ``TrackingStore``'s engine."""

    def __init__(self, store: Database, journal: str) -> None:
        self.store = store
        self.journal = journal

    def __reduce__(self) -> tuple[Any, ...]:  # picklable: reopen from the URL elsewhere
        return (SQLJournalBackend, (self.store, self.journal))

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        return [json.loads(line) for line in read_journal(self.store, self.journal,
                                                          log_number_from)]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        append_journal(self.store, self.journal, [json.dumps(log) for log in logs])


__all__ = ["SQLJournalBackend", "append_journal", "read_journal"]
