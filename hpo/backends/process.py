"""Run trials in long-lived worker processes (``parallel: N`` on the local backend).

Each worker is a spawned Python process that loads the study once and then runs jobs sent over
a pipe, so the per-trial cost is a pipe round trip, not a process start. A trainer that
crashes its process (segfault, os._exit, OOM kill) loses only its own trial: the coordinator
sees the worker's sentinel, reports the job as lost, and starts a fresh worker.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from multiprocessing.connection import Connection, wait

from hpo.backends.base import Backend, JobDone
from hpo.errors import BackendError
from hpo.execute import RunnerSpec, TrialJob, TrialRunner


def _worker_main(spec: RunnerSpec, conn: Connection) -> None:
    """Worker process: ignore Ctrl-C (the loop decides), run jobs until EOF.

    A worker whose loop died (kill -9) finishes and records the trial it runs, then exits.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        runner = TrialRunner(spec, kind="local")
    except BaseException as exc:  # report start-up errors instead of dying silently
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # coordinator gone: nothing left to do
            return
        if job is None:
            return
        outcome = runner.run(job)
        try:
            conn.send(("done", outcome))
        except (BrokenPipeError, OSError):
            return


class _Worker:
    def __init__(self, ctx: mp.context.BaseContext, spec: RunnerSpec) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(spec, child), daemon=True)
        self.proc.start()
        child.close()
        self.job: TrialJob | None = None
        self.since: float | None = None
        self.ready = False


class ProcessBackend(Backend):
    name = "local"

    def __init__(self, spec: RunnerSpec, parallel: int) -> None:
        from hpo.backends.main_guard import check_main_guard

        check_main_guard()  # a script without `if __name__ == "__main__":` fails here
        self.spec = spec
        self.capacity = parallel
        self._startup_deaths = 0
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = [_Worker(self._ctx, spec) for _ in range(parallel)]
        self._queue: list[TrialJob] = []

    # A job is given to an idle, ready worker; until then it waits in _queue.
    def submit(self, job: TrialJob) -> None:
        self._queue.append(job)
        self._dispatch()

    def _dispatch(self) -> None:
        for w in self._workers:
            if not self._queue:
                return
            if w.ready and w.job is None:
                w.job = self._queue.pop(0)
                w.since = time.monotonic()
                w.conn.send(w.job)

    def in_flight(self) -> list[TrialJob]:
        return self._queue + [w.job for w in self._workers if w.job is not None]

    def free_slots(self) -> int:
        """Idle workers that are up (a job is claimed only when one can start it at once)."""
        idle = sum(1 for w in self._workers if w.ready and w.job is None)
        return idle - len(self._queue)

    def running_since(self, number: int) -> float | None:
        for w in self._workers:
            if w.job is not None and w.job.number == number:
                return w.since
        return None

    def cancel(self, number: int) -> None:
        for w in self._workers:
            if w.job is not None and w.job.number == number and w.proc.is_alive():
                w.proc.kill()

    def poll(self, timeout: float) -> list[JobDone]:
        done: list[JobDone] = []
        waitables = [w.conn for w in self._workers] + [w.proc.sentinel for w in self._workers]
        ready = wait(waitables, timeout)
        for w in list(self._workers):
            if w.conn in ready:
                try:
                    kind, payload = w.conn.recv()
                except (EOFError, OSError):
                    kind, payload = "eof", None
                if kind == "ready":
                    w.ready = True
                elif kind == "done":
                    done.append(JobDone(w.job, payload))
                    w.job, w.since = None, None
                elif kind == "error":
                    self.stop()
                    raise BackendError(f"A local worker process could not start: {payload}")
                else:
                    self._replace(w, done)
            elif w.proc.sentinel in ready and not w.proc.is_alive():
                self._replace(w, done)
        self._dispatch()
        return done

    def _replace(self, w: _Worker, done: list[JobDone]) -> None:
        w.proc.join(timeout=1)
        code = w.proc.exitcode
        if not w.ready:  # it died before it could run anything
            self._startup_deaths += 1
            if self._startup_deaths >= 3:
                self.stop()
                raise BackendError(
                    f"Local worker processes exit while starting (exit code {code}), three in "
                    "a row. Their error is printed above. If you call hpo.run_sweep from a "
                    "script, put the call under `if __name__ == \"__main__\":`.")
        if w.job is not None:
            how = (
                f"killed by signal {signal.Signals(-code).name}"
                if code is not None and code < 0
                else f"exit code {code}"
            )
            done.append(JobDone(w.job, None, lost=f"worker process {w.proc.pid} died ({how})"))
        self._workers.remove(w)
        w.conn.close()
        self._workers.append(_Worker(self._ctx, self.spec))

    def stop(self) -> list[TrialJob]:
        left = self.in_flight()
        self._queue = []
        for w in self._workers:
            if w.proc.is_alive():
                w.proc.terminate()
        for w in self._workers:
            w.proc.join(timeout=5)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(timeout=5)
            w.conn.close()
        self._workers = []
        return left
