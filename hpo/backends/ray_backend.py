"""Run trials on Ray: one long-lived actor per concurrent trial slot, reused across trials.

Placement only: the coordinator still asks and the study's pruner still decides. Each actor
holds a TrialRunner (study + tracking store opened once), asks Ray for ``resources`` (cpu,
fractional gpu), and persists each trial's result to the storage itself, so the storage must
be reachable from every Ray node: PostgreSQL for multi-node clusters; the SQLite default works
when all workers share the coordinator's filesystem (one node, the local Ray).

Actors are created with ``max_restarts=0``: when one dies (kill -9, node lost) its trial comes
back as lost (failed + retried by the coordinator) and a fresh actor takes the slot.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from typing import Any

from hpo.backends.base import Backend, JobDone
from hpo.errors import BackendError
from hpo.execute import RunnerSpec, TrialJob
from hpo.storage_url import is_sqlite

log = logging.getLogger(__name__)


def init_ray(address: str | None = None) -> bool:
    """Connect to Ray (``address``/RAY_ADDRESS) or start a local one. True if we started it.

    A Ray already initialized in this process is reused as it is, and never shut down by hpo.
    """
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address is None:
        kwargs.update(
            include_dashboard=False,
            _temp_dir=os.environ.get("HPO_RAY_TMPDIR", os.path.join(tempfile.gettempdir(), "ray")),
        )
    if address:
        _check_reachable(address)
    try:
        ray.init(address=address, **kwargs)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        where = f"the Ray cluster at {address!r}" if address else "a local Ray"
        raise BackendError(
            f"Cannot start or join {where}: {first}. "
            + ("Check the address (ray://host:10001 or host:6379) and that the cluster is up."
               if address else "Check free memory and /tmp space, or pass --ray-address.")
        ) from None
    return address is None


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast when nothing listens at a host:port address (ray.init would retry for minutes)."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "local" or another form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise BackendError(
            f"Cannot reach the Ray cluster at {address!r} ({exc.strerror or exc}). Start it "
            "(ray start --head) or fix --ray-address / RAY_ADDRESS."
        ) from None


class _TrialActor:
    """Ray actor body: a TrialRunner living in one Ray worker process."""

    def __init__(self, spec: RunnerSpec) -> None:
        import ray

        from hpo.execute import TrialRunner

        ctx = ray.get_runtime_context()
        gpus = ctx.get_accelerator_ids().get("GPU", [])
        device = "cpu" if not gpus else ",".join(f"cuda:{i}" for i in range(len(gpus)))
        if gpus:
            device += f" (GPU {','.join(map(str, gpus))})"
        node = ray.util.get_node_ip_address()
        self.node = node
        self.runner = TrialRunner(spec, kind="ray", device=device)

    def run(self, job: TrialJob):
        return self.runner.run(job)

    def pid(self) -> int:
        return os.getpid()


class RayBackend(Backend):
    name = "ray"

    def __init__(
        self, spec: RunnerSpec, parallel: int, *, resources: Any = None, address: str | None = None
    ) -> None:
        import ray

        self.spec = spec
        self.capacity = max(1, parallel)
        self._started = init_ray(address)
        if address and is_sqlite(spec.storage):
            log.warning("SQLite storage on a Ray cluster only works if every node shares this "
                        "filesystem; use PostgreSQL for multi-node sweeps.")
        cpu = float(getattr(resources, "cpu", 1) or 1)
        gpu = float(getattr(resources, "gpu", 0) or 0)
        self._actor_cls = ray.remote(_TrialActor).options(
            num_cpus=cpu, num_gpus=gpu, max_restarts=0, max_concurrency=1
        )
        self._idle: list[Any] = [self._new_actor() for _ in range(self.capacity)]
        self._running: dict[Any, tuple[Any, TrialJob]] = {}  # ObjectRef -> (actor, job)
        self._since: dict[int, float] = {}
        self._queue: list[TrialJob] = []

    def _new_actor(self) -> Any:
        return self._actor_cls.remote(self.spec)

    def submit(self, job: TrialJob) -> None:
        self._queue.append(job)
        self._dispatch()

    def _dispatch(self) -> None:
        while self._queue and self._idle:
            actor = self._idle.pop()
            job = self._queue.pop(0)
            self._since[job.number] = time.monotonic()
            self._running[actor.run.remote(job)] = (actor, job)

    def running_since(self, number: int) -> float | None:
        return self._since.get(number)

    def cancel(self, number: int) -> None:
        for actor, job in self._running.values():
            if job.number == number:
                self._kill(actor)

    def in_flight(self) -> list[TrialJob]:
        return self._queue + [job for _, job in self._running.values()]

    def poll(self, timeout: float) -> list[JobDone]:
        import ray
        from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

        if not self._running:
            return []
        refs = list(self._running)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)  # replace each at once
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        done: list[JobDone] = []
        for ref in ready:
            actor, job = self._running.pop(ref)
            self._since.pop(job.number, None)
            try:
                done.append(JobDone(job, ray.get(ref)))
                self._idle.append(actor)
            except (RayActorError, WorkerCrashedError) as exc:
                if "creation task" in str(exc):  # the actor never started: a setup error
                    self.stop()
                    raise BackendError(f"A Ray worker could not start: {_cause(exc)}") from None
                done.append(JobDone(job, None, lost=f"Ray worker died ({_short(exc)})"))
                self._kill(actor)
                self._idle.append(self._new_actor())
            except RayTaskError as exc:  # failed outside the trainer (e.g. storage): lost
                done.append(JobDone(job, None, lost=f"Ray task error: {_cause(exc)}"))
                self._kill(actor)
                self._idle.append(self._new_actor())
        self._dispatch()
        return done

    def _kill(self, actor: Any) -> None:
        import ray

        try:
            ray.kill(actor, no_restart=True)
        except Exception:
            pass

    def stop(self) -> list[TrialJob]:
        import ray

        left = self.in_flight()
        for actor, _ in self._running.values():
            self._kill(actor)
        for actor in self._idle:
            self._kill(actor)
        self._running, self._idle, self._queue = {}, [], []
        if self._started and ray.is_initialized():
            ray.shutdown()
        return left


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _cause(exc: BaseException) -> str:
    """The innermost useful line of a Ray error (the user's error, not Ray's wrapping)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Error" in line or "error:" in line:
            return line[:500]
    return _short(exc)
