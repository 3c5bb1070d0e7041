"""One background thread per process that renews the leases of every trial it holds."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from hpo.tracking import leases
from hpo.tracking.leases import Owner

log = logging.getLogger("hpo.heartbeat")
_keepers: dict[tuple[str, int], LeaseKeeper] = {}
_lock = threading.Lock()


class LeaseKeeper:
    """Renews, every ``every_s`` seconds, the heartbeat of all running trials whose row names
    this process (host and pid) as owner, whatever kind of owner it is."""

    def __init__(self, store: Any, every_s: float) -> None:
        self.store = store
        self.every_s = every_s
        self.owner = Owner.here("any")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="hpo-leases")
        self._thread.start()

    def _beat(self) -> None:
        from hpo.errors import StorageUnavailable

        while not self._stop.wait(self.every_s):
            try:
                leases.renew(self.store, self.owner)
            except StorageUnavailable as exc:  # the database is restarting: next beat
                log.warning("renewing trial leases failed (%s); trying again in %gs",
                            str(exc).splitlines()[0][:200], self.every_s)
            except Exception as exc:  # noqa: BLE001 - the sweep's tables are gone (deleted)
                log.debug("trial leases no longer renewable (%s); keeper stops", exc)
                return

    def stop(self) -> None:
        """Stop renewing (this process's trials then expire after their lease)."""
        self._stop.set()
        self._thread.join(timeout=5)


def keep_leases(store: Any, lease_s: float) -> LeaseKeeper:
    """Start (once per process and database) the thread that renews this process's leases."""
    every = max(0.05, lease_s / 4)
    key = (store.url, os.getpid())
    with _lock:
        keeper = _keepers.get(key)
        if keeper is not None and keeper._thread.is_alive():
            keeper.every_s = min(keeper.every_s, every)
            return keeper
        keeper = _keepers[key] = LeaseKeeper(store, every)
        return keeper


__all__ = ["LeaseKeeper", "keep_leases"]
