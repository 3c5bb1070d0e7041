"""Per-trial time limits for trainers that run in the calling process.

Trainers in worker processes or Ray actors are stopped by their loop, which kills the worker
(hpo.loop). A trainer running in the loop's own process gets :class:`TrialTimeout` raised in
its thread: by ``SIGALRM`` in the main thread, else asynchronously through
``PyThreadState_SetAsyncExc`` (delivered at the next Python bytecode: a trainer stuck inside
one long C call sees it when that call returns).
"""

from __future__ import annotations

import ctypes
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class TrialTimeout(BaseException):  # noqa: N818 - a BaseException, so `except Exception` in a
    """A trial ran past its ``timeout``."""  # trainer cannot swallow it


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`TrialTimeout` in this thread once ``seconds`` have passed inside."""
    if not seconds:
        yield
        return
    message = f"trial timed out after {seconds:g}s (timeout)"
    if threading.current_thread() is threading.main_thread():
        def on_alarm(signum: int, frame: Any) -> None:
            raise TrialTimeout(message)

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        return
    target = threading.get_ident()
    done = threading.Event()
    lock = threading.Lock()
    state = {"finished": False}

    def watchdog() -> None:
        if done.wait(seconds):
            return
        with lock:  # never fire once the block has left: the exception would land elsewhere
            if not state["finished"]:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(target), ctypes.py_object(TrialTimeout))

    thread = threading.Thread(target=watchdog, daemon=True, name="hpo-trial-timeout")
    thread.start()
    try:
        yield
    finally:
        with lock:
            state["finished"] = True
        done.set()
        thread.join()


__all__ = ["TrialTimeout", "time_limit"]
