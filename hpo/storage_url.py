"""Storage URLs: the default, env override, driver translation, masking, engine options.

Both the Optuna study storage and the tracking store use the same URL, so everything about
turning a user's URL into a working SQLAlchemy engine lives here.

Credentials: a password in the URL is never written to the database, a report, a log or the
terminal (:func:`mask_url`). To keep it out of files too, pass the URL in ``$HPO_STORAGE``
(``hpo k8s`` fills it from a Kubernetes Secret), or leave the password out of the URL and let
libpq read it from ``$PGPASSFILE`` / ``~/.pgpass`` (or ``$PGPASSWORD``).
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


# scheme://user:PASSWORD@host: the password runs to the last '@' of the URL's authority (an
# unencoded '@' or '/' in it is masked too); the user name may be empty. Bounded repeats keep
# the time linear on any text.
_USERINFO = re.compile(
    r"(?P<head>\b[A-Za-z][\w+.-]{0,40}://[^:/@\s]{0,256}):(?P<pw>\S{0,1024}?)@"
    r"(?=[^@\s/?#]*(?:[/?#\s\"',;)}\]]|$))"
)
# ?password=... (libpq and SQLAlchemy take credentials as query parameters too)
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&](?:[\w.-]{0,40}(?:password|passwd|pwd|secret|token|api_?key)[\w.-]{0,40})=)"
    r"(?P<value>[^&\s\"'#,;)}\]]*)",
    re.IGNORECASE,
)
MASK = "***"


def mask_url(url: str | None) -> str:
    """Hide every credential in a URL, or in any text holding URLs; never raises.

    ``user:PASSWORD@host`` becomes ``user:***@host`` (also with an empty user name, or a
    password holding ``/`` or ``@``, encoded or not) and ``?password=...`` (or ``sslpassword``,
    ``token``, ...) becomes ``?password=***``. A single URL is parsed with SQLAlchemy first, so
    what it would send as the password is what gets hidden. Safe for logs, CLI output, reports
    and the database.
    """
    try:
        text = "" if url is None else str(url)
    except Exception:  # noqa: BLE001 - an object whose str() fails: show nothing of it
        return "<unprintable>"
    stripped = text.strip()
    if "://" in stripped and "\n" not in stripped:
        text = _mask_parsed(text)
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _QUERY_SECRET.sub(lambda m: m["head"] + (MASK if m["value"] else ""), text)


def password_of(url: str | None) -> str | None:
    """The password SQLAlchemy reads from ``url`` (None when there is none or it is no URL)."""
    if not url:
        return None
    try:
        password = make_url(str(url).strip()).password
    except Exception:  # noqa: BLE001 - not a URL: no password we can find
        return None
    return str(password) if password else None


def mask_text(text: str, url: str | None = None) -> str:
    """:func:`mask_url` on ``text``, after every verbatim copy of ``url`` (a storage URL, when
    known) is replaced by its masked form: this also covers a URL no pattern can delimit (a
    quoted value whose password holds a space). The password written elsewhere as plain text
    is left alone (``hpo k8s`` refuses such a file)."""
    if url and password_of(url):
        text = text.replace(url, mask_url(url))
    return mask_url(text)


def _mask_parsed(url: str) -> str:
    """One URL through SQLAlchemy's parser, password hidden; the input unchanged if it is not
    a URL SQLAlchemy reads."""
    try:
        parsed = make_url(url.strip())
        if parsed.password is None:
            return url
        return parsed.render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - garbage in: the regular expressions still apply
        return url


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
