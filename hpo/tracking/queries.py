"""Reads of the tracking store: sweeps, trials, metrics, counts, the best trial."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hpo.states import TRIAL_STATES
from hpo.tracking import schema
from hpo.tracking.records import MetricRecord, SweepRecord, TrialRecord

S, TR, M = schema.sweeps, schema.trials, schema.metrics
_IN_CHUNK = 500  # numbers per IN (...) list


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


class TrackingQueries:
    """The read half of ``TrackingStore`` (mixed into it; needs ``_run`` and ``_sweep_id``)."""

    _run: Any
    _sweep_id: Any
    _sweep_row: Any

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

    def trial(self, name: str, number: int) -> TrialRecord | None:
        """Trial ``number`` of the sweep, or None when it has no row."""

        def op(conn: Connection) -> TrialRecord | None:
            sweep_id = self._sweep_id(conn, name)
            row = conn.execute(
                sa.select(TR).where(TR.c.sweep_id == sweep_id, TR.c.number == int(number))
            ).first()
            return _trial_record(name, row) if row is not None else None

        return self._run(f"read trial {number} of sweep {name!r}", op, write=False)

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


def _check(value: str, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"Unknown {what} {value!r}; expected one of {', '.join(allowed)}.")


def _chunks(numbers: Sequence[int]) -> Iterable[list[int]]:
    for i in range(0, len(numbers), _IN_CHUNK):
        yield list(numbers[i : i + _IN_CHUNK])


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
