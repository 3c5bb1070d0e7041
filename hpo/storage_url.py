"""Storage URLs: the default, env override, driver translation, masking, engine options.

Both the Optuna study storage and the tracking store use the same URL, so everything about
turning a user's URL into a working SQLAlchemy engine lives here.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from hpo.errors import StorageError

DEFAULT_STORAGE = "sqlite:///hpo.db"
ENV_VAR = "HPO_STORAGE"


def resolve_url(url: str | None = None) -> str:
    """Return the storage URL to use: the given one, else ``$HPO_STORAGE``, else the default.

    A bare ``postgresql://`` (or ``postgres://``) is translated to ``postgresql+psycopg2://``
    because SQLAlchemy 2.1 would otherwise pick psycopg 3, which hpo does not install.
    """
    url = url or os.environ.get(ENV_VAR) or DEFAULT_STORAGE
    url = url.strip()
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://") :]
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy.exc.ArgumentError
        raise StorageError(
            f"Storage URL {mask_url(url)!r} is not a valid database URL ({exc}). "
            "Use e.g. sqlite:///hpo.db or postgresql+psycopg2://user@host:5432/db."
        ) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql", "mysql"):
        raise StorageError(
            f"Storage URL {mask_url(url)!r}: unsupported database "
            f"{parsed.get_backend_name()!r}. Use sqlite:/// or postgresql+psycopg2://."
        )
    return url


def mask_url(url: str) -> str:
    """Hide the password in a URL (``user:***@host``); safe for logs, CLI output and reports."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", str(url))


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for in-memory databases."""
    db = make_url(url).database
    if not db or db == ":memory:":
        return None
    return Path(db)


def prepare_sqlite(url: str) -> None:
    """Create the SQLite file's folder and switch the file to WAL mode (persists in the file).

    WAL lets readers (reports, ``hpo status``) and several trial processes work at once
    without 'database is locked'.
    """
    path = sqlite_path(url)
    if path is None:
        return
    if path.parent and not path.parent.exists():
        raise StorageError(
            f"Storage {url!r}: folder {str(path.parent)!r} does not exist. Create it first "
            "(note: an absolute SQLite path needs four slashes, sqlite:////abs/path.db)."
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            with sqlite3.connect(path, timeout=60) as conn:
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            # Switching to WAL needs the file to itself and SQLite does not wait for that (no
            # busy handler): another process creating the tables at the same moment makes it
            # fail with "database is locked". The mode sticks, so retry until one of us set it.
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise StorageError(f"Cannot open SQLite storage {str(path)!r}: {exc}") from None
            time.sleep(0.05)
        except sqlite3.Error as exc:
            raise StorageError(f"Cannot open SQLite storage {str(path)!r}: {exc}") from None


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy ``create_engine`` keyword arguments suited to the database behind ``url``."""
    if is_sqlite(url):
        return {"connect_args": {"timeout": 60}}
    # small pools: every trial process (worker, actor, agent) holds its own, and 64 agents
    # must fit in PostgreSQL's max_connections (default 100) together
    return {"pool_pre_ping": True, "pool_recycle": 300, "pool_size": 2, "max_overflow": 2}
