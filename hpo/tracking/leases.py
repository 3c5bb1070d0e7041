"""Trial leases: who owns a running trial, and whether that owner is still alive.

Every ``running`` trial row names its owner (``worker`` = ``kind:host:pid``, with ``host`` and
``pid``) and carries a ``heartbeat`` that the owner's process renews for all its trials at
once (:func:`renew`). A trial is lost when its heartbeat is older than the lease, or, at once,
when its owner ran on this host and that process is gone.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hpo.states import RUNNING
from hpo.tracking import schema
from hpo.tracking.db import Database

S, TR = schema.sweeps, schema.trials


@dataclass(frozen=True)
class Owner:
    """A process that owns trials: a loop (``local``, ``agent``) or a worker (``worker``,
    ``ray``)."""

    kind: str
    host: str
    pid: int

    @classmethod
    def here(cls, kind: str) -> Owner:
        """This process, as an owner of the given kind."""
        return cls(kind, socket.gethostname(), os.getpid())

    def __str__(self) -> str:
        return f"{self.kind}:{self.host}:{self.pid}"


@dataclass(frozen=True)
class Lease:
    """The lease of one running trial, as read from its row."""

    number: int
    worker: str | None
    host: str | None
    pid: int | None
    heartbeat: datetime | None

    def lost(self, lease_s: float, now: datetime, host: str) -> str | None:
        """Why this trial's owner is gone (None while it holds the lease)."""
        if self.host == host and self.pid and not pid_alive(self.pid):
            return f"{self.worker or 'owner'} is gone (process {self.pid} exited)"
        if self.heartbeat is None:
            return "no owner recorded"
        beat = self.heartbeat if self.heartbeat.tzinfo else self.heartbeat.replace(tzinfo=UTC)
        if now - beat > timedelta(seconds=lease_s):
            return f"{self.worker or 'owner'}: no heartbeat for {lease_s:g}s"
        return None


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` of this host still runs (a zombie, killed but not yet waited
    for by its parent, does not)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def renew(db: Database, owner: Owner) -> int:
    """Renew the lease of every running trial ``owner`` holds (any sweep); returns how many."""

    def op(conn: Connection) -> int:
        return conn.execute(
            sa.update(TR)
            .where(TR.c.host == owner.host, TR.c.pid == owner.pid, TR.c.state == RUNNING)
            .values(heartbeat=datetime.now(UTC))
        ).rowcount

    return db._run(f"renew the trial leases of {owner}", op)


def running(db: Database, sweep: str) -> list[Lease]:
    """The leases of the sweep's running trials, by number."""

    def op(conn: Connection) -> list[Lease]:
        stmt = (
            sa.select(TR.c.number, TR.c.worker, TR.c.host, TR.c.pid, TR.c.heartbeat)
            .join(S, S.c.id == TR.c.sweep_id)
            .where(S.c.name == sweep, TR.c.state == RUNNING)
            .order_by(TR.c.number)
        )
        return [Lease(int(r.number), r.worker, r.host, r.pid, r.heartbeat)
                for r in conn.execute(stmt)]

    return db._run(f"read the running trials of sweep {sweep!r}", op, write=False)


def take(db: Database, sweep: str, number: int, owner: Owner, device: str | None) -> bool:
    """Make ``owner`` the owner of running trial ``number`` (a worker starting it): its
    ``started`` becomes now. False when the trial is no longer running (it was reaped)."""

    def op(conn: Connection) -> bool:
        sweep_id = conn.scalar(sa.select(S.c.id).where(S.c.name == sweep))
        now = datetime.now(UTC)
        return conn.execute(
            sa.update(TR)
            .where(TR.c.sweep_id == sweep_id, TR.c.number == number, TR.c.state == RUNNING)
            .values(worker=str(owner), host=owner.host, pid=owner.pid, device=device,
                    heartbeat=now, started=now)
        ).rowcount == 1

    return db._run(f"start trial {number} of sweep {sweep!r}", op)


def owner_of(db: Database, sweep: str, number: int) -> tuple[str | None, str | None]:
    """(state, worker) of trial ``number``'s row; (None, None) when it has none."""

    def op(conn: Connection) -> tuple[str | None, str | None]:
        stmt = (
            sa.select(TR.c.state, TR.c.worker).join(S, S.c.id == TR.c.sweep_id)
            .where(S.c.name == sweep, TR.c.number == number)
        )
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(of=TR)
        row = conn.execute(stmt).first()
        return (row.state, row.worker) if row is not None else (None, None)

    return db._run(f"read the owner of trial {number} of sweep {sweep!r}", op)


__all__ = ["Lease", "Owner", "owner_of", "pid_alive", "renew", "running", "take"]
