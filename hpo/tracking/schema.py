"""Tracking tables (SQLAlchemy 2.x declarative), all prefixed ``hpo_`` so they can share a
database with other applications' tables (Optuna's own RDB tables included) without clashing.

- ``hpo_meta``: key/value; ``schema_version`` is checked by every ``TrackingStore``.
- ``hpo_sweeps``: one row per sweep (= Optuna study name).
- ``hpo_trials``: one row per trial, unique on (sweep_id, number).
- ``hpo_metrics``: one row per (trial, step, metric name); the primary key is also the index
  that serves ``metrics()`` in (trial, step) order.
- ``hpo_journal``: the Optuna study of each sweep, as Optuna's journal (an append-only log of
  operations, one journal per sweep name, numbered 0, 1, 2, ... with no gaps); see
  hpo.tracking.journal.

Bump ``SCHEMA_VERSION`` on any incompatible change; stores of another version are refused.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import DateTime, TypeDecorator

SCHEMA_VERSION = 2  # 2: Optuna studies live in hpo_journal
VERSION_KEY = "schema_version"
# an index on hpo_meta named like Optuna's first RDB table: plain Optuna on an hpo URL fails
# ("already an index named studies") instead of adding empty tables (hpo.tracking.db)
OPTUNA_GUARD = "studies"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so the value is stored as
    naive UTC and gets its ``tzinfo`` back on read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _json() -> JSON:
    return JSON(none_as_null=True)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Meta(Base):
    __tablename__ = "hpo_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class Sweep(Base):
    __tablename__ = "hpo_sweeps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    config: Mapped[Any | None] = mapped_column(_json())
    config_yaml: Mapped[str | None] = mapped_column(Text)
    objective: Mapped[str | None] = mapped_column(String(256))
    goal: Mapped[str | None] = mapped_column(String(32))
    method: Mapped[str | None] = mapped_column(String(64))
    pruner: Mapped[str | None] = mapped_column(String(256))
    storage: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32))
    started: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended: Mapped[datetime | None] = mapped_column(UTCDateTime())
    host: Mapped[str | None] = mapped_column(String(256))
    git_commit: Mapped[str | None] = mapped_column(String(64))
    versions: Mapped[Any | None] = mapped_column(_json())


class Trial(Base):
    __tablename__ = "hpo_trials"
    __table_args__ = (
        UniqueConstraint("sweep_id", "number"),
        Index("ix_hpo_trials_sweep_id_state_number", "sweep_id", "state", "number"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("hpo_sweeps.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(32))
    value: Mapped[float | None] = mapped_column(Double())
    params: Mapped[Any | None] = mapped_column(_json())
    metrics: Mapped[Any | None] = mapped_column(_json())
    steps: Mapped[int | None] = mapped_column(Integer)
    started: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended: Mapped[datetime | None] = mapped_column(UTCDateTime())
    duration_s: Mapped[float | None] = mapped_column(Double())
    host: Mapped[str | None] = mapped_column(String(256))
    pid: Mapped[int | None] = mapped_column(Integer)
    worker: Mapped[str | None] = mapped_column(String(256))
    device: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(Text)
    attrs: Mapped[Any | None] = mapped_column(_json())
    retry_of: Mapped[int | None] = mapped_column(Integer)
    # last sign of life from the agent running this trial (NULL: not leased, never expired)
    heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Metric(Base):
    __tablename__ = "hpo_metrics"

    trial_id: Mapped[int] = mapped_column(
        ForeignKey("hpo_trials.id", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    value: Mapped[float | None] = mapped_column(Double())
    logged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class JournalEntry(Base):
    __tablename__ = "hpo_journal"

    journal: Mapped[str] = mapped_column(String(256), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    log: Mapped[str] = mapped_column(Text)  # JSON text: NaN/inf allowed (JSONB refuses them)
    # one id per append call: a retried append whose first try did commit is not written twice
    batch: Mapped[str] = mapped_column(String(36), index=True)


metadata = Base.metadata
meta_table = Meta.__table__
sweeps = Sweep.__table__
trials = Trial.__table__
metrics = Metric.__table__
journal = JournalEntry.__table__
