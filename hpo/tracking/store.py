"""TrackingStore: everything about every sweep and trial, in the study's own database.

Written concurrently by many trial processes (and Kubernetes agents on PostgreSQL), read by
the CLI and the report. Each public method is one short transaction (see hpo.tracking.db for
retries and for joining a larger transaction); writes are idempotent upserts, so a retry never
duplicates anything. Reads live in hpo.tracking.queries, trial leases in hpo.tracking.leases,
the study journals in hpo.tracking.journal. Tables are created on first use under a lock.
"""

from __future__ import annotations

import functools
import math
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hpo.errors import StudyNotFound
from hpo.states import RUNNING, SWEEP_STATUSES, TRIAL_STATES
from hpo.storage_url import mask_url
from hpo.tracking import schema
from hpo.tracking.db import Database, upsert
from hpo.tracking.journal import append_journal, read_journal
from hpo.tracking.queries import (
    TrackingQueries,
    _check,
    _dict,
)
from hpo.tracking.records import jsonable

S, TR, M, META = schema.sweeps, schema.trials, schema.metrics, schema.meta_table
J = schema.journal

VERSION_PACKAGES = ("hpo", "optuna", "torch", "transformers", "peft", "ray", "sqlalchemy")


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


class TrackingStore(TrackingQueries, Database):
    """Records sweeps, trials and metrics in the database behind ``url`` (see module doc)."""

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
        upsert(conn, TR, [_new_trial(sweep_id, number)], ["sweep_id", "number"], update=())
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
        self._run(f"record sweep {name!r}", lambda conn: upsert(conn, S, [row], ["name"], update))

    def end_sweep(self, name: str, status: str) -> None:
        """Set the sweep's final status ("finished" | "interrupted" | "failed") and ``ended``."""
        _check(status, SWEEP_STATUSES, "sweep status")

        def op(conn: Connection) -> None:
            sweep_id = self._sweep_id(conn, name)
            conn.execute(sa.update(S).where(S.c.id == sweep_id).values(status=status, ended=_now()))

        self._run(f"end sweep {name!r}", op)

    def request_stop(self, name: str) -> bool:
        """Ask every loop of a running sweep to stop (``hpo stop``): status ``stopping``.
        False when the sweep was not running."""

        def op(conn: Connection) -> bool:
            sweep_id = self._sweep_id(conn, name)
            return conn.execute(
                sa.update(S).where(S.c.id == sweep_id, S.c.status == "running")
                .values(status="stopping")
            ).rowcount == 1

        return self._run(f"stop sweep {name!r}", op)

    def take_turn(self, key: str, every_s: float) -> bool:
        """True for at most one caller per ``every_s`` seconds across every process sharing
        this database (a compare-and-set on ``hpo_meta``): several agents of one sweep take
        turns at a periodic job (the MLflow mirror) instead of each doing it."""
        import hashlib

        row_key = "turn:" + hashlib.sha1(key.encode()).hexdigest()[:32]
        now = _now()

        def op(conn: Connection) -> bool:
            last = conn.scalar(sa.select(META.c.value).where(META.c.key == row_key))
            if last is None:
                upsert(conn, META, [{"key": row_key, "value": now.isoformat()}], ["key"], [])
                return conn.scalar(sa.select(META.c.value).where(META.c.key == row_key)) \
                    == now.isoformat()
            try:
                due = (now - datetime.fromisoformat(last)).total_seconds() >= every_s
            except ValueError:
                due = True  # unreadable: take it
            if not due:
                return False
            return conn.execute(sa.update(META).where(META.c.key == row_key,
                                                      META.c.value == last)
                                .values(value=now.isoformat())).rowcount == 1

        return self._run(f"take a turn at {key!r}", op)

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
            upsert(conn, TR, [row], ["sweep_id", "number"], update=update)

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
        self.log_metrics_batch(sweep, number, [(step, metrics)])

    def log_metrics_batch(
        self, sweep: str, number: int, reports: list[tuple[int, dict[str, float]]]
    ) -> None:
        """:meth:`log_metrics` for several steps of one trial, in one statement (a step given
        twice keeps its last values)."""
        logged_at = _now()
        by_key: dict[tuple[int, str], float] = {}
        for step, metrics in reports:
            for k, v in metrics.items():
                by_key[(int(step), str(k))] = _float(v, f"metric {k!r}")
        if not by_key:
            return
        top = max(step for step, _ in by_key)

        def op(conn: Connection) -> None:
            trial_id = self._trial_id(conn, sweep, number)
            rows = [{"trial_id": trial_id, "step": step, "name": name, "value": value,
                     "logged_at": logged_at} for (step, name), value in by_key.items()]
            upsert(conn, M, rows, ["trial_id", "step", "name"], update=["value", "logged_at"])
            steps = sa.case(
                (TR.c.steps.is_(None), top), (TR.c.steps < top, top), else_=TR.c.steps
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

    # -- the Optuna journal of each sweep (functions in hpo.tracking.journal) ----------------
    def append_journal(self, journal: str, logs: Sequence[str]) -> None:
        """Append JSON log lines to ``journal`` (see hpo.tracking.journal.append_journal)."""
        append_journal(self, journal, logs)

    def read_journal(self, journal: str, start: int) -> list[str]:
        """JSON log lines of ``journal`` numbered ``start`` and up, in order."""
        return read_journal(self, journal, start)


# -- module helpers ---------------------------------------------------------------------------
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
