"""TrackingStore: everything about every sweep and trial, in the study's own database.

Written concurrently by many trial processes (and Kubernetes agents on PostgreSQL), read by
the CLI and the report. Every public method is one short transaction:

- SQLite: WAL (``prepare_sqlite``), a 60 s busy timeout, ``synchronous=NORMAL`` and write
  transactions opened with ``BEGIN IMMEDIATE`` (a deferred transaction that reads first and
  writes later can fail with 'database is locked' without waiting); any 'locked'/'busy' error
  that still gets through is retried with exponential backoff.
- PostgreSQL: ``pool_pre_ping`` and a retry when the connection was lost (server restarted)
  or the transaction hit a deadlock/serialization failure. Writes are idempotent upserts,
  so a retry never duplicates anything.

Tables are created on first use under a lock (PostgreSQL advisory lock, SQLite
``BEGIN IMMEDIATE``) so that several processes starting at once do not race. Errors are
``StorageError`` (or ``StudyNotFound``) with the password masked.
"""

from __future__ import annotations

import functools
import math
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from importlib import metadata as importlib_metadata
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from hpo.errors import StorageError, StudyNotFound
from hpo.storage_url import engine_kwargs, is_sqlite, mask_url, prepare_sqlite, resolve_url
from hpo.tracking import schema
from hpo.tracking.records import (
    FAILED,
    RUNNING,
    SWEEP_STATUSES,
    TRIAL_STATES,
    MetricRecord,
    SweepRecord,
    TrialRecord,
    jsonable,
)

T = TypeVar("T")

S, TR, M, META = schema.sweeps, schema.trials, schema.metrics, schema.meta_table
J = schema.journal

VERSION_PACKAGES = ("hpo", "optuna", "torch", "transformers", "peft", "ray", "sqlalchemy")
_LOCK_RETRIES = 12  # SQLite 'locked'/'busy' (on top of the 60 s busy timeout per attempt)
_CONN_RETRIES = 2  # lost connection / deadlock on PostgreSQL
_IN_CHUNK = 500  # numbers per IN (...) list
_ADVISORY_KEY = 0x68706F5F74726B  # "hpo_trk": serializes schema creation on PostgreSQL
_JOURNAL_LOCK = 0x68706F6A  # "hpoj" (int4): with hashtext(journal), serializes appends on PG


def _now() -> datetime:
    return datetime.now(UTC)


def _float(value: Any, what: str = "value") -> float | None:
    """A DB-safe float: NaN -> None, +/-inf kept, None kept."""
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    return None if math.isnan(value) else value


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _git_commit() -> str | None:
    """HEAD of the git repository around the current directory, or None. Never raises."""
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=os.getcwd(),
        )
    except Exception:  # noqa: BLE001 - no git, no cwd, timeout: not worth failing a sweep
        return None
    out = proc.stdout.strip()
    return out if proc.returncode == 0 and out else None


@functools.lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
    """Installed versions of the packages that decide a sweep's results (missing ones left out)."""
    out: dict[str, str] = {}
    for name in VERSION_PACKAGES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            module = sys.modules.get(name)  # e.g. hpo run from a checkout, not installed
            version = getattr(module, "__version__", None)
            if isinstance(version, str):
                out[name] = version
        except Exception:  # noqa: BLE001 - broken metadata must not fail a sweep
            continue
    return out


def _is_locked(exc: DBAPIError) -> bool:
    text = str(exc.orig if exc.orig is not None else exc).lower()
    return "locked" in text or "busy" in text


def _is_transient_pg(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    text = str(exc.orig if exc.orig is not None else exc).lower()
    return isinstance(exc, sa.exc.OperationalError) or "deadlock" in text or "serializ" in text


def _chunks(numbers: Sequence[int]) -> Iterable[list[int]]:
    for i in range(0, len(numbers), _IN_CHUNK):
        yield list(numbers[i : i + _IN_CHUNK])


class TrackingStore:
    """Records sweeps, trials and metrics in the database behind ``url`` (see module doc)."""

    def __init__(self, url: str | None = None) -> None:
        self.url: str = resolve_url(url)
        self.masked_url: str = mask_url(self.url)
        self._password = make_url(self.url).password
        self._sqlite = is_sqlite(self.url)
        self._engine = self._make_engine()
        self._pid = os.getpid()
        try:
            self._ensure_schema()
        except BaseException:
            self._engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"TrackingStore({self.masked_url!r})"

    def __reduce__(self) -> tuple[Any, ...]:  # picklable: reopen from the URL elsewhere
        return (type(self), (self.url,))

    def close(self) -> None:
        """Close pooled connections (the store can still be used; it reconnects)."""
        self._engine.dispose()

    # -- engine and transactions -----------------------------------------------------------
    def _make_engine(self) -> Engine:
        kwargs = engine_kwargs(self.url)
        kwargs["connect_args"] = dict(kwargs.get("connect_args") or {})
        parsed = make_url(self.url)
        if self._sqlite:
            if parsed.database in (None, "", ":memory:"):
                kwargs["poolclass"] = sa.pool.StaticPool
                kwargs["connect_args"]["check_same_thread"] = False
            else:
                kwargs.update(pool_size=2, max_overflow=2)
            prepare_sqlite(self.url)
        else:
            kwargs.update(pool_size=2, max_overflow=2)
            if parsed.drivername.endswith("psycopg2") and "connect_timeout" not in parsed.query:
                kwargs["connect_args"].setdefault("connect_timeout", 10)
        try:
            engine = sa.create_engine(self.url, **kwargs)
        except Exception as exc:  # noqa: BLE001 - bad driver, bad options
            raise StorageError(
                f"Cannot open tracking storage {self.masked_url}: {self._mask(str(exc))}"
            ) from None
        if self._sqlite:
            _sqlite_transactions(engine)
        return engine

    def _mask(self, text: str) -> str:
        text = mask_url(text)
        if self._password:
            text = text.replace(self._password, "***")
        return text

    def _error(self, exc: BaseException, action: str) -> StorageError:
        orig = getattr(exc, "orig", None)
        detail = " ".join(str(orig if orig is not None else exc).split())
        if len(detail) > 500:
            detail = detail[:500] + "..."
        hint = ""
        if isinstance(exc, sa.exc.OperationalError) and not self._sqlite:
            hint = " Check that the database server is running and the URL is right."
        detail = self._mask(detail)
        if not detail.endswith((".", "?", "!")):
            detail += "."
        return StorageError(f"Tracking storage {self.masked_url}: cannot {action}: {detail}{hint}")

    def _run(
        self, action: str, fn: Callable[[Connection], T], *, write: bool = True,
        single_read: bool = False,
    ) -> T:
        """Run ``fn`` in one transaction; retry lock errors and lost connections.

        ``single_read``: ``fn`` runs one SELECT, sent in autocommit mode (one round trip
        instead of BEGIN, SELECT, COMMIT).
        """
        if os.getpid() != self._pid:  # forked: never share pooled sockets with the parent
            self._engine.dispose(close=False)
            self._pid = os.getpid()
        locked = transient = 0
        while True:
            connected = False
            try:
                with self._engine.connect() as conn:
                    connected = True
                    if single_read:
                        return fn(conn.execution_options(isolation_level="AUTOCOMMIT"))
                    if write and self._sqlite:
                        conn.execution_options(hpo_immediate=True)
                    with conn.begin():
                        return fn(conn)
            except DBAPIError as exc:
                if self._sqlite and _is_locked(exc) and locked < _LOCK_RETRIES:
                    time.sleep(min(2.0, 0.02 * 2**locked) * (0.5 + random.random()))
                    locked += 1
                    continue
                if not self._sqlite and _is_transient_pg(exc) and transient < _CONN_RETRIES:
                    time.sleep(0.1 * (transient + 1))
                    transient += 1
                    continue
                raise self._error(exc, action if connected else "connect") from None
            except SQLAlchemyError as exc:
                raise self._error(exc, action if connected else "connect") from None

    # -- schema ----------------------------------------------------------------------------
    def _ensure_schema(self) -> None:
        version = self._run("read the schema version", self._read_version, write=False)
        if version is None:
            self._run("create the tracking tables", self._create_schema)
            version = self._run("read the schema version", self._read_version, write=False)
        self._check_version(version)

    @staticmethod
    def _read_version(conn: Connection) -> str | None:
        if not sa.inspect(conn).has_table(META.name):
            return None
        return conn.scalar(sa.select(META.c.value).where(META.c.key == schema.VERSION_KEY))

    def _create_schema(self, conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_KEY})
        try:
            with conn.begin_nested():
                schema.metadata.create_all(conn, checkfirst=True)
        except (IntegrityError, sa.exc.ProgrammingError, sa.exc.OperationalError):
            # Another process created them between our check and our CREATE (databases
            # without the locks above); they exist now.
            pass
        _upsert(
            conn,
            META,
            [{"key": schema.VERSION_KEY, "value": str(schema.SCHEMA_VERSION)}],
            ["key"],
            update=(),
        )

    def _check_version(self, version: str | None) -> None:
        code = schema.SCHEMA_VERSION
        try:
            found = int(version) if version is not None else None
        except ValueError:
            found = None
        if found == code:
            return
        where = f"Tracking storage {self.masked_url}"
        if found is None:
            raise StorageError(
                f"{where} has an unreadable hpo_meta.schema_version ({version!r}); this hpo "
                f"needs schema version {code}. Use a fresh storage, or drop the hpo_* tables "
                "(the sweeps' history and studies are lost)."
            )
        if found > code:
            raise StorageError(
                f"{where} was written by a newer hpo (tracking schema version {found}); this "
                f"hpo understands version {code}. Upgrade hpo (pip install -U hpo) on this "
                "machine, or point --storage/HPO_STORAGE at another database."
            )
        raise StorageError(
            f"{where} was written by an older hpo (tracking schema version {found}); this hpo "
            f"needs version {code}. Run the older hpo to read it, or use a fresh storage "
            "(or drop the hpo_* tables: the sweeps' history and studies are lost)."
        )

    # -- helpers used inside transactions ---------------------------------------------------
    def _not_found(self, conn: Connection, name: str) -> StudyNotFound:
        names = list(conn.scalars(sa.select(S.c.name).order_by(S.c.name)))
        if names:
            shown = ", ".join(repr(n) for n in names[:50])
            more = f" and {len(names) - 50} more" if len(names) > 50 else ""
            known = f"Existing sweeps: {shown}{more}."
        else:
            known = "The storage holds no sweeps yet."
        return StudyNotFound(
            f"No sweep named {name!r} in {self.masked_url}. {known} "
            "Check the name and --storage (or HPO_STORAGE)."
        )

    def _sweep_row(self, conn: Connection, name: str) -> Any:
        row = conn.execute(sa.select(S).where(S.c.name == name)).first()
        if row is None:
            raise self._not_found(conn, name)
        return row

    def _sweep_id(self, conn: Connection, name: str) -> int:
        sweep_id = conn.scalar(sa.select(S.c.id).where(S.c.name == name))
        if sweep_id is None:
            raise self._not_found(conn, name)
        return int(sweep_id)

    def _trial_id(self, conn: Connection, sweep: str, number: int) -> int:
        """Id of the trial row, created (state running) when a writer got there first."""
        stmt = (
            sa.select(TR.c.id)
            .join(S, S.c.id == TR.c.sweep_id)
            .where(S.c.name == sweep, TR.c.number == number)
        )
        trial_id = conn.scalar(stmt)
        if trial_id is not None:
            return int(trial_id)
        sweep_id = self._sweep_id(conn, sweep)
        _upsert(conn, TR, [_new_trial(sweep_id, number)], ["sweep_id", "number"], update=())
        return int(conn.scalar(stmt))

    # -- writes ----------------------------------------------------------------------------
    def create_sweep(
        self,
        name: str,
        *,
        config: dict,
        config_yaml: str | None,
        objective: str,
        goal: str,
        method: str,
        pruner: str,
        storage: str,
    ) -> None:
        """Record a sweep, or resume it: a resumed sweep keeps its first ``started`` and goes
        back to status "running"; everything else is refreshed."""
        row = {
            "name": name,
            "config": jsonable(config or {}),
            "config_yaml": config_yaml,
            "objective": objective,
            "goal": goal,
            "method": method,
            "pruner": pruner,
            "storage": mask_url(storage) if storage else storage,
            "status": RUNNING,
            "started": _now(),
            "ended": None,
            "host": socket.gethostname(),
            "git_commit": _git_commit(),
            "versions": _versions(),
        }
        update = [k for k in row if k not in ("name", "started")]
        self._run(f"record sweep {name!r}", lambda conn: _upsert(conn, S, [row], ["name"], update))

    def end_sweep(self, name: str, status: str) -> None:
        """Set the sweep's final status ("finished" | "interrupted" | "failed") and ``ended``."""
        _check(status, SWEEP_STATUSES, "sweep status")

        def op(conn: Connection) -> None:
            sweep_id = self._sweep_id(conn, name)
            conn.execute(sa.update(S).where(S.c.id == sweep_id).values(status=status, ended=_now()))

        self._run(f"end sweep {name!r}", op)

    def start_trial(
        self,
        sweep: str,
        number: int,
        params: dict,
        *,
        retry_of: int | None = None,
        worker: str | None = None,
        placement: dict[str, Any] | None = None,
        leased: bool = False,
    ) -> None:
        """Record a trial as "running" from now (restarting the same number resets it).

        ``placement`` ({host, pid, device}) records where it runs in the same write (when the
        process that asks is the one that trains, as agents do); ``leased`` starts its lease.
        """

        def op(conn: Connection) -> None:
            sweep_id = self._sweep_id(conn, sweep)
            row = _new_trial(sweep_id, number)
            now = _now()
            row.update(
                params=jsonable(params or {}), retry_of=retry_of, worker=worker, started=now
            )
            update = [
                "state",
                "params",
                "retry_of",
                "worker",
                "started",
                "ended",
                "duration_s",
                "value",
                "error",
            ]
            if placement:
                row.update({k: placement[k] for k in ("host", "pid", "device")})
                update += ["host", "pid", "device"]
            if leased:
                row["heartbeat"] = now
                update.append("heartbeat")
            _upsert(conn, TR, [row], ["sweep_id", "number"], update=update)

        self._run(f"start trial {number} of sweep {sweep!r}", op)

    def set_trial_worker(
        self, sweep: str, number: int, *, host: str, pid: int, worker: str, device: str
    ) -> None:
        """Record where a trial runs; ``started`` becomes now (it may have waited in a queue)."""

        def op(conn: Connection) -> None:
            trial_id = self._trial_id(conn, sweep, number)
            conn.execute(
                sa.update(TR)
                .where(TR.c.id == trial_id)
                .values(host=host, pid=pid, worker=worker, device=device, started=_now())
            )

        self._run(f"record the worker of trial {number} of sweep {sweep!r}", op)

    def log_metrics(self, sweep: str, number: int, step: int, metrics: dict[str, float]) -> None:
        """One row per (trial, step, name); logging the same step again overwrites it.
        The trial's ``steps`` becomes the largest step reported so far."""
        if not metrics:
            return
        step = int(step)
        logged_at = _now()

        def op(conn: Connection) -> None:
            trial_id = self._trial_id(conn, sweep, number)
            rows = [
                {
                    "trial_id": trial_id,
                    "step": step,
                    "name": str(k),
                    "value": _float(v, f"metric {k!r}"),
                    "logged_at": logged_at,
                }
                for k, v in metrics.items()
            ]
            _upsert(conn, M, rows, ["trial_id", "step", "name"], update=["value", "logged_at"])
            steps = sa.case(
                (TR.c.steps.is_(None), step), (TR.c.steps < step, step), else_=TR.c.steps
            )
            conn.execute(sa.update(TR).where(TR.c.id == trial_id).values(steps=steps))

        self._run(f"log metrics of trial {number} of sweep {sweep!r}", op)

    def end_trial(
        self,
        sweep: str,
        number: int,
        state: str,
        *,
        value: float | None,
        metrics: dict[str, float] | None = None,
        error: str | None = None,
    ) -> None:
        """Finish a trial: state, value (NaN -> None), final metrics (kept when None), error,
        ``ended`` = now and ``duration_s`` since ``started``."""
        _check(state, TRIAL_STATES, "trial state")

        def op(conn: Connection) -> None:
            trial_id = self._trial_id(conn, sweep, number)
            started = conn.scalar(
                sa.select(TR.c.started).where(TR.c.id == trial_id).with_for_update()
            )
            ended = _now()
            values: dict[str, Any] = {
                "state": state,
                "value": _float(value, "trial value"),
                "error": error,
                "ended": ended,
                "duration_s": (ended - started).total_seconds() if started else None,
            }
            if metrics is not None:
                values["metrics"] = jsonable(metrics)
            conn.execute(sa.update(TR).where(TR.c.id == trial_id).values(**values))

        self._run(f"end trial {number} of sweep {sweep!r}", op)

    def set_trial_attrs(self, sweep: str, number: int, attrs: dict) -> None:
        """Merge ``attrs`` into the trial's attrs (top-level keys; new values win)."""
        if not attrs:
            return

        def op(conn: Connection) -> None:
            trial_id = self._trial_id(conn, sweep, number)
            current = conn.scalar(
                sa.select(TR.c.attrs).where(TR.c.id == trial_id).with_for_update()
            )
            merged = _dict(current)
            merged.update(jsonable(attrs))
            conn.execute(sa.update(TR).where(TR.c.id == trial_id).values(attrs=merged))

        self._run(f"set attributes of trial {number} of sweep {sweep!r}", op)

    def mark_running_as(
        self, sweep: str, state: str, reason: str, numbers: list[int] | None = None
    ) -> list[int]:
        """Move still-"running" trials (all, or those in ``numbers``) to ``state`` with
        ``error=reason`` and ``ended=now``; returns the numbers changed, ascending."""
        _check(state, TRIAL_STATES, "trial state")
        wanted = None if numbers is None else sorted({int(n) for n in numbers})
        if wanted == []:
            return []

        def op(conn: Connection) -> list[int]:
            sweep_id = self._sweep_id(conn, sweep)
            base = (
                sa.select(TR.c.id, TR.c.number, TR.c.started)
                .where(TR.c.sweep_id == sweep_id, TR.c.state == RUNNING)
                .order_by(TR.c.number)
                .with_for_update()
            )
            if wanted is None:
                rows = list(conn.execute(base))
            else:
                rows = [
                    r for c in _chunks(wanted) for r in conn.execute(base.where(TR.c.number.in_(c)))
                ]
            ended = _now()
            for row in rows:
                conn.execute(
                    sa.update(TR)
                    .where(TR.c.id == row.id)
                    .values(
                        state=state,
                        error=reason,
                        ended=ended,
                        duration_s=(ended - row.started).total_seconds() if row.started else None,
                    )
                )
            return [int(r.number) for r in rows]

        return self._run(f"mark running trials of sweep {sweep!r} as {state}", op)

    # -- leases and budget slots (agents) ----------------------------------------------------
    def claim_slot(self, sweep: str, budget: int | None) -> bool:
        """Atomically take one trial slot of the sweep's budget; False when it is spent.

        One conditional UPDATE, so any number of agents on PostgreSQL (row lock) or SQLite
        (database lock) never hand out more than ``budget`` slots.
        """

        def op(conn: Connection) -> bool:
            stmt = sa.update(S).where(S.c.name == sweep).values(claimed=S.c.claimed + 1)
            if budget is not None:
                stmt = stmt.where(S.c.claimed < budget)
            return conn.execute(stmt).rowcount == 1

        return self._run(f"claim a trial slot of sweep {sweep!r}", op)

    def release_slot(self, sweep: str) -> None:
        """Give a slot back (its trial was lost and is re-queued for another agent)."""

        def op(conn: Connection) -> None:
            conn.execute(
                sa.update(S).where(S.c.name == sweep, S.c.claimed > 0)
                .values(claimed=S.c.claimed - 1)
            )

        self._run(f"release a trial slot of sweep {sweep!r}", op)

    def heartbeat(self, sweep: str, number: int) -> None:
        """Renew the lease of a running trial."""

        def op(conn: Connection) -> None:
            trial_id = self._trial_id(conn, sweep, number)
            conn.execute(
                sa.update(TR).where(TR.c.id == trial_id, TR.c.state == RUNNING)
                .values(heartbeat=_now())
            )

        self._run(f"heartbeat trial {number} of sweep {sweep!r}", op)

    def expire_lost(
        self, sweep: str, lease_s: float, reason: str = "agent lost"
    ) -> list[TrialRecord]:
        """Fail running trials whose lease ran out; returns the ones THIS call expired.

        Each row is changed by a conditional UPDATE (still running, heartbeat still stale), so
        when several agents reap at once exactly one of them gets each lost trial.
        """

        def op(conn: Connection) -> list[TrialRecord]:
            sweep_id = self._sweep_id(conn, sweep)
            now = _now()
            cutoff = now - timedelta(seconds=lease_s)
            rows = list(conn.execute(
                sa.select(TR.c.id, TR.c.started).where(
                    TR.c.sweep_id == sweep_id, TR.c.state == RUNNING,
                    TR.c.heartbeat.is_not(None), TR.c.heartbeat < cutoff,
                )
            ))
            won = []
            for row in rows:
                res = conn.execute(
                    sa.update(TR).where(
                        TR.c.id == row.id, TR.c.state == RUNNING, TR.c.heartbeat < cutoff
                    ).values(
                        state=FAILED, ended=now, error=f"{reason}: no heartbeat for {lease_s:g}s",
                        duration_s=(now - row.started).total_seconds() if row.started else None,
                    )
                )
                if res.rowcount == 1:
                    won.append(row.id)
            if not won:
                return []
            return [
                _trial_record(sweep, r)
                for r in conn.execute(sa.select(TR).where(TR.c.id.in_(won)).order_by(TR.c.number))
            ]

        return self._run(f"expire lost trials of sweep {sweep!r}", op)

    def delete_sweep(self, name: str) -> None:
        """Delete a sweep with its trials, metrics and study. A missing sweep is not an error."""

        def op(conn: Connection) -> None:
            conn.execute(sa.delete(J).where(J.c.journal == name))
            sweep_id = conn.scalar(sa.select(S.c.id).where(S.c.name == name))
            if sweep_id is None:
                return
            ids = sa.select(TR.c.id).where(TR.c.sweep_id == sweep_id).scalar_subquery()
            conn.execute(sa.delete(M).where(M.c.trial_id.in_(ids)))
            conn.execute(sa.delete(TR).where(TR.c.sweep_id == sweep_id))
            conn.execute(sa.delete(S).where(S.c.id == sweep_id))

        self._run(f"delete sweep {name!r}", op)

    # -- the Optuna journal of each sweep (see hpo.tracking.journal) -------------------------
    def append_journal(self, journal: str, logs: Sequence[str]) -> None:
        """Append JSON log lines to ``journal`` with the next gapless sequence numbers.

        Appends are serialized (PostgreSQL advisory lock, SQLite ``BEGIN IMMEDIATE``), so a
        line is committed only after every line before it: a reader that has read up to N
        never misses a line that commits later with a number below N. A retry after a lost
        connection first checks whether the first try committed, so nothing is written twice.
        """
        batch = uuid.uuid4().hex
        tries = 0

        def op(conn: Connection) -> None:
            nonlocal tries
            tries += 1
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k, hashtext(:j))"),
                             {"k": _JOURNAL_LOCK, "j": journal})
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
                return self._run(f"append to the study journal of {journal!r}", op)
            except StorageError as exc:  # a database without the locks above raced us
                if "UNIQUE" not in str(exc).upper() or attempt == _LOCK_RETRIES - 1:
                    raise
                time.sleep(0.01 * (attempt + 1) * random.random())

    def read_journal(self, journal: str, start: int) -> list[str]:
        """JSON log lines of ``journal`` numbered ``start`` and up, in order."""
        return self._run(
            f"read the study journal of {journal!r}",
            lambda conn: list(conn.scalars(
                sa.select(J.c.log).where(J.c.journal == journal, J.c.seq >= start)
                .order_by(J.c.seq)
            )),
            write=False, single_read=True,
        )

    # -- reads -----------------------------------------------------------------------------
    def list_sweeps(self) -> list[SweepRecord]:
        """Every sweep, oldest first."""
        return self._run(
            "list sweeps",
            lambda conn: [
                _sweep_record(r) for r in conn.execute(sa.select(S).order_by(S.c.started, S.c.name))
            ],
            write=False,
        )

    def get_sweep(self, name: str) -> SweepRecord:
        """The sweep called ``name``; ``StudyNotFound`` (listing existing names) if missing."""
        return self._run(
            f"read sweep {name!r}",
            lambda conn: _sweep_record(self._sweep_row(conn, name)),
            write=False,
        )

    def trials(self, name: str, states: Iterable[str] | None = None) -> list[TrialRecord]:
        """Trials of a sweep ordered by number, optionally only those in ``states``."""
        wanted = None if states is None else [str(s) for s in states]
        if wanted is not None:
            for s in wanted:
                _check(s, TRIAL_STATES, "trial state")

        def op(conn: Connection) -> list[TrialRecord]:
            sweep_id = self._sweep_id(conn, name)
            stmt = sa.select(TR).where(TR.c.sweep_id == sweep_id).order_by(TR.c.number)
            if wanted is not None:
                stmt = stmt.where(TR.c.state.in_(wanted))
            return [_trial_record(name, r) for r in conn.execute(stmt)]

        return self._run(f"read trials of sweep {name!r}", op, write=False)

    def metrics(self, name: str, numbers: Iterable[int] | None = None) -> list[MetricRecord]:
        """Metric rows of a sweep (or of the trials in ``numbers``) ordered by trial, step,
        name."""
        wanted = None if numbers is None else sorted({int(n) for n in numbers})

        def op(conn: Connection) -> list[MetricRecord]:
            sweep_id = self._sweep_id(conn, name)
            stmt = (
                sa.select(TR.c.number, M.c.step, M.c.name, M.c.value, M.c.logged_at)
                .join(TR, TR.c.id == M.c.trial_id)
                .where(TR.c.sweep_id == sweep_id)
                .order_by(TR.c.number, M.c.step, M.c.name)
            )
            if wanted is None:
                parts = [conn.execute(stmt)]
            else:
                parts = [conn.execute(stmt.where(TR.c.number.in_(c))) for c in _chunks(wanted)]
            return [
                MetricRecord(number, step, metric, value, logged_at)
                for part in parts
                for number, step, metric, value, logged_at in part.all()
            ]

        return self._run(f"read metrics of sweep {name!r}", op, write=False)

    def counts(self, name: str) -> dict[str, int]:
        """Trials per state; every state is a key (zeros included)."""

        def op(conn: Connection) -> dict[str, int]:
            sweep_id = self._sweep_id(conn, name)
            out = dict.fromkeys(TRIAL_STATES, 0)
            stmt = (
                sa.select(TR.c.state, sa.func.count())
                .where(TR.c.sweep_id == sweep_id)
                .group_by(TR.c.state)
            )
            for state, n in conn.execute(stmt):
                out[state] = int(n)
            return out

        return self._run(f"count trials of sweep {name!r}", op, write=False)

    def best(self, name: str) -> TrialRecord | None:
        """The complete trial with the best value by the sweep's goal (ties: lowest number)."""

        def op(conn: Connection) -> TrialRecord | None:
            sweep = self._sweep_row(conn, name)
            maximize = str(sweep.goal or "minimize").lower().startswith("max")
            order = TR.c.value.desc() if maximize else TR.c.value.asc()
            stmt = (
                sa.select(TR)
                .where(TR.c.sweep_id == sweep.id, TR.c.state == "complete", TR.c.value.is_not(None))
                .order_by(order, TR.c.number)
                .limit(1)
            )
            row = conn.execute(stmt).first()
            return _trial_record(name, row) if row is not None else None

        return self._run(f"read the best trial of sweep {name!r}", op, write=False)


# -- module helpers ---------------------------------------------------------------------------
def _check(value: str, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"Unknown {what} {value!r}; expected one of {', '.join(allowed)}.")


def _new_trial(sweep_id: int, number: int) -> dict[str, Any]:
    return {
        "sweep_id": sweep_id,
        "number": int(number),
        "state": RUNNING,
        "value": None,
        "params": {},
        "retry_of": None,
        "worker": None,
        "started": None,
        "ended": None,
        "duration_s": None,
        "error": None,
    }


def _upsert(
    conn: Connection,
    table: sa.Table,
    rows: list[dict[str, Any]],
    keys: list[str],
    update: Iterable[str],
) -> None:
    """INSERT rows; on a key conflict update the ``update`` columns (none: leave the row)."""
    update = list(update)
    name = conn.dialect.name
    if name in ("sqlite", "postgresql"):
        if name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        stmt = insert(table)
        if update:
            stmt = stmt.on_conflict_do_update(
                index_elements=keys, set_={c: stmt.excluded[c] for c in update}
            )
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=keys)
        conn.execute(stmt, rows)
        return
    for row in rows:  # other databases: insert, else update
        try:
            with conn.begin_nested():
                conn.execute(sa.insert(table).values(**row))
        except IntegrityError:
            if update:
                where = sa.and_(*(table.c[k] == row[k] for k in keys))
                conn.execute(sa.update(table).where(where).values({c: row[c] for c in update}))


def _sqlite_transactions(engine: Engine) -> None:
    """Let SQLAlchemy, not pysqlite, emit BEGIN: BEGIN IMMEDIATE for writes (so a writer waits
    for the lock up front instead of failing on upgrade), plain BEGIN for reads."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; fewer fsyncs
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("hpo_immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _sweep_record(row: Any) -> SweepRecord:
    return SweepRecord(
        name=row.name,
        config=_dict(row.config),
        config_yaml=row.config_yaml,
        objective=row.objective,
        goal=row.goal,
        method=row.method,
        pruner=row.pruner,
        storage=row.storage,
        status=row.status,
        started=row.started,
        ended=row.ended,
        host=row.host,
        git_commit=row.git_commit,
        versions=_dict(row.versions),
    )


def _trial_record(sweep: str, row: Any) -> TrialRecord:
    return TrialRecord(
        sweep=sweep,
        number=int(row.number),
        state=row.state,
        value=row.value,
        params=_dict(row.params),
        metrics=_dict(row.metrics),
        steps=row.steps,
        started=row.started,
        ended=row.ended,
        duration_s=row.duration_s,
        host=row.host,
        pid=row.pid,
        worker=row.worker,
        device=row.device,
        error=row.error,
        attrs=_dict(row.attrs),
        retry_of=row.retry_of,
    )
