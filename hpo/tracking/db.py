"""The database under the tracking store and the study journals: engine, transactions, errors.

Written concurrently by many trial processes (and Kubernetes agents on PostgreSQL):

- SQLite: WAL (``prepare_sqlite``), a 60 s busy timeout, ``synchronous=NORMAL`` and write
  transactions opened with ``BEGIN IMMEDIATE`` (a deferred transaction that reads first and
  writes later can fail with 'database is locked' without waiting); any 'locked'/'busy' error
  that still gets through is retried with exponential backoff.
- PostgreSQL: ``pool_pre_ping`` and a retry when the connection was lost (server restarted)
  or the transaction hit a deadlock/serialization failure.

Every method of the store is one short transaction, unless it runs inside
:meth:`Database.transaction`: then it joins that transaction (same connection, same commit),
which is how a trial's state change is written to the study journal and the tracking rows at
once (hpo.lifecycle). Errors are :class:`~hpo.errors.StorageUnavailable` when retrying later
can cure them (server down, connection lost, lock timeout) and plain ``StorageError``
otherwise, always with the password masked.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from hpo.errors import StorageError, StorageUnavailable
from hpo.storage_url import engine_kwargs, is_sqlite, mask_url, prepare_sqlite, resolve_url
from hpo.tracking import schema

T = TypeVar("T")

_LOCK_RETRIES = 12  # SQLite 'locked'/'busy' (on top of the 60 s busy timeout per attempt)
_CONN_RETRIES = 2  # lost connection / deadlock on PostgreSQL
_ADVISORY_KEY = 0x68706F5F74726B  # "hpo_trk": serializes schema creation on PostgreSQL
JOURNAL_LOCK = 0x68706F6A  # "hpoj" (int4): with hashtext(journal), serializes a journal on PG

# PostgreSQL error classes a database coming back (or a retry) cures: connection exceptions,
# admin/crash shutdown, cannot connect now, too many connections, serialization, deadlock.
_TRANSIENT_PGCODES = ("08", "57P01", "57P02", "57P03", "53300", "40001", "40P01", "55P03")


def is_transient(exc: BaseException, sqlite: bool) -> bool:
    """True when ``exc`` (a DBAPIError) says "try again later", not "this is wrong"."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    text = str(orig if orig is not None else exc).lower()
    if sqlite:
        return "locked" in text or "busy" in text or "disk i/o" in text
    code = getattr(orig, "pgcode", None)
    if code:
        return any(code.startswith(c) for c in _TRANSIENT_PGCODES)
    # no SQLSTATE: the client lost or never got a connection (server down, restarting)
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)


def _is_locked(exc: DBAPIError) -> bool:
    text = str(exc.orig if exc.orig is not None else exc).lower()
    return "locked" in text or "busy" in text


class Database:
    """One database URL: a connection pool, short retried transactions, joinable ones."""

    def __init__(self, url: str | None = None) -> None:
        self.url: str = resolve_url(url)
        self.masked_url: str = mask_url(self.url)
        self._password = make_url(self.url).password
        self._sqlite = is_sqlite(self.url)
        self._engine = self._make_engine()
        self._pid = os.getpid()
        self._local = threading.local()
        try:
            self._ensure_schema()
        except BaseException:
            self._engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.masked_url!r})"

    def __reduce__(self) -> tuple[Any, ...]:  # picklable: reopen from the URL elsewhere
        return (type(self), (self.url,))

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql`` (or another SQLAlchemy dialect name)."""
        return self._engine.dialect.name

    def close(self) -> None:
        """Close pooled connections (the store can still be used; it reconnects)."""
        self._engine.dispose()

    # -- engine ----------------------------------------------------------------------------
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
            kwargs.update(pool_size=2, max_overflow=4)
            if parsed.drivername.endswith("psycopg2"):
                if "connect_timeout" not in parsed.query:
                    kwargs["connect_args"].setdefault("connect_timeout", 10)
                # an upsert (ON CONFLICT DO UPDATE: a trial's metric rows) is sent in pages of
                # rows, not one round trip a row (SQLAlchemy's batched INSERT skips it)
                kwargs["executemany_mode"] = "values_plus_batch"
                kwargs["executemany_batch_page_size"] = 1000
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
        transient = is_transient(exc, self._sqlite)
        if transient and not self._sqlite:
            hint = " Check that the database server is running and the URL is right."
        detail = self._mask(detail)
        if not detail.endswith((".", "?", "!")):
            detail += "."
        cls = StorageUnavailable if transient else StorageError
        return cls(f"Tracking storage {self.masked_url}: cannot {action}: {detail}{hint}")

    def _check_fork(self) -> None:
        if os.getpid() != self._pid:  # forked: never share pooled sockets with the parent
            self._engine.dispose(close=False)
            self._pid = os.getpid()
            self._local = threading.local()

    # -- transactions ----------------------------------------------------------------------
    @property
    def in_transaction(self) -> bool:
        """True inside :meth:`transaction` on this thread."""
        return getattr(self._local, "conn", None) is not None

    def locked_journal_view(self, journal: str) -> dict[str, Any] | None:
        """Inside a :meth:`transaction` that holds ``journal``'s lock (SQLite: every write
        transaction locks the database), a dict kept until it ends, where
        hpo.tracking.journal keeps the journal's lines: nobody else can append to it meanwhile,
        so they need not be read again. None otherwise."""
        if getattr(self._local, "conn", None) is None:
            return None
        locked = getattr(self._local, "locked", None)
        if locked != "*" and locked != journal:
            return None
        return self._local.views.setdefault(journal, {})

    def _run(
        self, action: str, fn: Callable[[Connection], T], *, write: bool = True,
        single_read: bool = False,
    ) -> T:
        """Run ``fn`` in one transaction; retry lock errors and lost connections.

        Inside :meth:`transaction` (same thread) ``fn`` joins it instead, without retries:
        the caller retries the whole transaction. ``single_read``: ``fn`` runs one SELECT,
        sent in autocommit mode (one round trip instead of BEGIN, SELECT, COMMIT).
        """
        self._check_fork()
        joined = getattr(self._local, "conn", None)
        if joined is not None:
            try:
                return fn(joined)
            except SQLAlchemyError as exc:
                raise self._error(exc, action) from None
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
                if not self._sqlite and is_transient(exc, False) and transient < _CONN_RETRIES:
                    time.sleep(0.1 * (transient + 1))
                    transient += 1
                    continue
                raise self._error(exc, action if connected else "connect") from None
            except SQLAlchemyError as exc:
                raise self._error(exc, action if connected else "connect") from None

    @contextmanager
    def transaction(self, action: str, journal: str | None = None) -> Iterator[Connection]:
        """One write transaction that every store call on this thread joins until it ends.

        ``journal``: lock that sweep's journal first (PostgreSQL advisory transaction lock;
        SQLite's ``BEGIN IMMEDIATE`` locks the whole database), so that what the caller reads
        of the study cannot change before it commits. Not retried here: on an error the
        transaction is rolled back and the error raised (``StorageUnavailable`` when a retry
        can cure it); the caller decides whether to run it again. Nested calls join the
        outer transaction.
        """
        self._check_fork()
        if getattr(self._local, "conn", None) is not None:
            yield self._local.conn
            return
        try:
            conn = self._engine.connect()
        except SQLAlchemyError as exc:
            raise self._error(exc, "connect") from None
        try:
            if self._sqlite:
                conn.execution_options(hpo_immediate=True)
            try:
                tx = conn.begin()
                if journal is not None and conn.dialect.name == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k, hashtext(:j))"),
                                 {"k": JOURNAL_LOCK, "j": journal})
            except SQLAlchemyError as exc:
                raise self._error(exc, action) from None
            self._local.conn = conn
            self._local.locked = "*" if self._sqlite else journal
            self._local.views = {}
            try:
                yield conn
            except BaseException:
                self._local.conn = None
                try:
                    tx.rollback()
                except Exception:  # noqa: BLE001 - the connection may be gone already
                    pass
                raise
            self._local.conn = None
            try:
                tx.commit()
            except SQLAlchemyError as exc:
                raise self._error(exc, action) from None
        finally:
            self._local.conn = None
            self._local.locked, self._local.views = None, {}
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    # -- schema ----------------------------------------------------------------------------
    def _ensure_schema(self) -> None:
        version = self._run("read the schema version", self._read_version, write=False)
        if version is None:
            self._run("create the tracking tables", self._create_schema)
            version = self._run("read the schema version", self._read_version, write=False)
        self._check_version(version)

    @staticmethod
    def _read_version(conn: Connection) -> str | None:
        if not sa.inspect(conn).has_table(schema.meta_table.name):
            return None
        meta = schema.meta_table
        return conn.scalar(sa.select(meta.c.value).where(meta.c.key == schema.VERSION_KEY))

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
        upsert(
            conn, schema.meta_table,
            [{"key": schema.VERSION_KEY, "value": str(schema.SCHEMA_VERSION)}], ["key"],
            update=(),
        )
        # Plain Optuna on this URL (optuna.load_study(storage=URL), optuna-dashboard URL)
        # would create its empty RDB tables beside hpo's and find none of hpo's studies
        # (they live in hpo_journal). An index named like the first table it creates makes
        # it fail at once, before it creates anything. Not where Optuna's tables exist.
        if conn.dialect.name in ("sqlite", "postgresql") and not sa.inspect(conn).has_table(
                schema.OPTUNA_GUARD):
            conn.execute(sa.text(f"CREATE INDEX IF NOT EXISTS {schema.OPTUNA_GUARD} "
                                 f"ON {schema.meta_table.name} (key)"))

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


def upsert(
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


__all__ = ["JOURNAL_LOCK", "Database", "is_transient", "upsert"]
