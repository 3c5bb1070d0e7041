"""Riding out a storage outage (PostgreSQL restarting, a dropped connection).

Every write that records a trial goes through :func:`retry_storage`, so a database that comes
back within two minutes loses nothing and fails no trial. Only errors that a database coming
back would cure are retried; bad data still fails at once.
"""

from __future__ import annotations

import logging
import time
from typing import Any


def is_storage_outage(exc: BaseException) -> bool:
    """True for errors that a database coming back would cure (``StorageUnavailable``: down,
    restarting, connection lost, lock timeout), not for real errors (bad data, wrong schema),
    which are reported at once."""
    from hpo.errors import StorageUnavailable
    from hpo.tracking.db import is_transient

    if isinstance(exc, StorageUnavailable):
        return True
    return is_transient(exc, sqlite=False)


def retry_storage(fn: Any, what: str, *, total_s: float = 120.0) -> Any:
    """Call ``fn()``; on a storage outage retry with backoff (0.5 s doubling to 8 s)."""
    deadline = time.monotonic() + total_s
    delay = 0.5
    while True:
        try:
            return fn()
        except Exception as exc:
            remaining = deadline - time.monotonic()
            if not is_storage_outage(exc) or remaining <= 0:
                raise
            wait = min(delay, remaining)
            logging.getLogger("hpo").warning(
                "%s: storage unavailable (%s); retrying in %.1fs", what,
                str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__, wait,
            )
            time.sleep(wait)
            delay = min(delay * 2, 8.0)
