"""Run trials on Ray: one long-lived actor per concurrent trial slot, reused across trials.

Placement only: the coordinator still asks and the study's pruner still decides. Each actor
holds a TrialRunner (study + tracking store opened once), asks Ray for ``resources`` (cpu,
fractional gpu), and persists each trial's result to the storage itself, so the storage must
be reachable from every Ray node: PostgreSQL for multi-node clusters; the SQLite default works
when all workers share the coordinator's filesystem (one node, the local Ray).

Actors are created with ``max_restarts=0``: when one dies (kill -9, node lost) its trial comes
back as lost (failed + retried by the coordinator) and a fresh actor takes the slot.

``resources: {gpu: auto}`` (hpo.backends.gpu_packing): the first trials get a whole GPU each
and report their peak GPU memory; later ones are admitted by a GpuPacker and run in actors
with ``num_gpus = 1 / (trials per GPU)``, so Ray fits exactly that many on each GPU. Actors
whose share is out of date (the estimate changed) are retired when idle.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from hpo.backends.base import Backend, JobDone
from hpo.backends.gpu_packing import GpuDoesNotFit, GpuPacker, Placement, ray_inventory
from hpo.errors import BackendError
from hpo.execute import COMPLETE, FAILED, PRUNED, RunnerSpec, TrialJob
from hpo.gpu_memory import is_oom
from hpo.storage_url import is_sqlite

log = logging.getLogger(__name__)


def init_ray(address: str | None = None) -> bool:
    """Connect to Ray (``address``/RAY_ADDRESS) or start a local one. True if we started it.

    A Ray already initialized in this process is reused as it is, and never shut down by hpo.
    """
    try:
        import ray
    except ImportError:
        raise BackendError("backend: ray needs Ray: pip install 'hpo[ray]'") from None

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

    def run(self, job: TrialJob, measure: bool = False):
        """The trial's outcome; with ``measure``, (outcome, its GpuUsage or None)."""
        if not measure:
            return self.runner.run(job)
        from hpo import gpu_memory

        gpu_memory.reset()
        outcome = self.runner.run(job)
        return outcome, gpu_memory.last()

    def pid(self) -> int:
        return os.getpid()


class RayBackend(Backend):
    name = "ray"

    def __init__(
        self, spec: RunnerSpec, parallel: int, *, resources: Any = None, address: str | None = None,
        gpu_inventory: Mapping[int, int | None] | None = None,
    ) -> None:
        """``gpu_inventory`` (gpu: auto only): GPU index -> total bytes, instead of asking the
        cluster (Ray's GPU count, nvidia-smi's totals)."""
        import ray

        self.spec = spec
        self.capacity = max(1, parallel)
        self._started = init_ray(address)
        if address and is_sqlite(spec.storage):
            log.warning("SQLite storage on a Ray cluster only works if every node shares this "
                        "filesystem; use PostgreSQL for multi-node sweeps.")
        cpu = float(getattr(resources, "cpu", 1) or 1)
        gpu = getattr(resources, "gpu", 0) or 0
        self.packer: GpuPacker | None = None
        if gpu == "auto":
            try:
                inventory = gpu_inventory if gpu_inventory is not None else ray_inventory()
                self.packer = GpuPacker(inventory, parallel=self.capacity, uniform=True)
            except BackendError:
                self._shutdown()
                raise
            gpu = self.packer.fraction()
        self._remote = ray.remote(_TrialActor)
        self._cpu, self._gpu = cpu, float(gpu)
        self._share: dict[int, float] = {}  # id(actor) -> its num_gpus (gpu: auto)
        self._placed: dict[int, Placement] = {}  # trial number -> its GPU (gpu: auto)
        self._warned_no_peak = False  # 'reported no GPU memory' is said once
        self._plan = ""
        self._idle: list[Any] = [
            self._new_actor(float(gpu))
            for _ in range(self.capacity if self.packer is None else self.packer.free_slots())
        ]
        self._running: dict[Any, tuple[Any, TrialJob]] = {}  # ObjectRef -> (actor, job)
        self._since: dict[int, float] = {}
        self._queue: list[TrialJob] = []

    def actor_options(self, num_gpus: float) -> dict[str, Any]:
        """Ray options of a trial actor asking for ``num_gpus``."""
        return {"num_cpus": self._cpu, "num_gpus": num_gpus, "max_restarts": 0,
                "max_concurrency": 1}

    def _new_actor(self, num_gpus: float | None = None) -> Any:
        if num_gpus is None:  # a replacement: the share trials get now
            num_gpus = self.packer.fraction() if self.packer is not None else self._gpu
        actor = self._remote.options(**self.actor_options(num_gpus)).remote(self.spec)
        self._share[id(actor)] = num_gpus
        return actor

    def submit(self, job: TrialJob) -> None:
        self._queue.append(job)
        self._dispatch()

    def free_slots(self) -> int:
        """gpu: auto: the trials the packer has room for now (a claimed trial can start)."""
        if self.packer is None:
            return super().free_slots()
        return min(self.packer.free_slots(), self.capacity - len(self.in_flight())) \
            - len(self._queue)

    def _dispatch(self) -> None:
        if self.packer is not None:
            self._dispatch_packed()
            return
        while self._queue and self._idle:
            actor = self._idle.pop()
            job = self._queue.pop(0)
            self._since[job.number] = time.monotonic()
            self._running[actor.run.remote(job)] = (actor, job)

    def _dispatch_packed(self) -> None:
        assert self.packer is not None
        share = self.packer.fraction()
        for actor in [a for a in self._idle if self._share.get(id(a)) != share]:
            self._idle.remove(actor)  # its share is out of date: free its GPU share
            self._kill(actor)
        while self._queue:
            placement = self.packer.place()
            if placement is None:
                break
            actor = self._idle.pop() if self._idle else self._new_actor(share)
            job = self._queue.pop(0)
            self._placed[job.number] = placement
            self._since[job.number] = time.monotonic()
            self._running[actor.run.remote(job, True)] = (actor, job)
        while len(self._idle) + len(self._running) > self.capacity:
            self._kill(self._idle.pop())

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
                result = ray.get(ref)
                if self.packer is not None:
                    result = self._learn(job, actor, *result)
                else:
                    self._idle.append(actor)
                done.append(JobDone(job, result))
            except (RayActorError, WorkerCrashedError) as exc:
                if "creation task" in str(exc):  # the actor never started: a setup error
                    self.stop()
                    raise BackendError(f"A Ray worker could not start: {_cause(exc)}") from None
                done.append(JobDone(job, None, lost=f"Ray worker died ({_short(exc)})"))
                self._replace(actor, job)
            except RayTaskError as exc:  # failed outside the trainer (e.g. storage): lost
                done.append(JobDone(job, None, lost=f"Ray task error: {_cause(exc)}"))
                self._replace(actor, job)
        self._dispatch()
        return done

    def _replace(self, actor: Any, job: TrialJob) -> None:
        """A lost trial's actor: killed; a fresh one takes the slot (gpu: auto: made when a
        trial needs it, with the share of that time)."""
        self._kill(actor)
        if self.packer is None:
            self._idle.append(self._new_actor())
        elif job.number in self._placed:
            self.packer.release(self._placed.pop(job.number))

    def _learn(self, job: TrialJob, actor: Any, outcome: Any, usage: Any) -> Any:
        """gpu: auto: release the trial's GPU, learn its peak, keep the actor if its share is
        still the one trials get."""
        assert self.packer is not None
        placement = self._placed.pop(job.number, None)
        if placement is not None:
            self.packer.release(placement)
            state = getattr(outcome, "state", None)
            try:
                note = self.packer.observe(
                    usage, placement, ok=state in (COMPLETE, PRUNED), trial=job.number,
                    oom=state == FAILED and is_oom(getattr(outcome, "error", None)))
            except GpuDoesNotFit:
                self._kill(actor)
                self.stop()
                raise
            if note and ("out of memory" in note or not self._warned_no_peak):
                self._warned_no_peak = self._warned_no_peak or "out of memory" not in note
                log.warning("%s", note)
            plan = self.packer.describe()
            if plan != self._plan:
                self._plan = plan
                log.info("resources.gpu auto: %s (num_gpus %g per trial)", plan,
                         self.packer.fraction())
        if self._share.get(id(actor)) == self.packer.fraction():
            self._idle.append(actor)
        else:
            self._kill(actor)
        return outcome

    def _kill(self, actor: Any) -> None:
        import ray

        self._share.pop(id(actor), None)
        try:
            ray.kill(actor, no_restart=True)
        except Exception:
            pass

    def stop(self) -> list[TrialJob]:
        left = self.in_flight()
        for actor, _ in self._running.values():
            self._kill(actor)
        for actor in self._idle:
            self._kill(actor)
        self._running, self._idle, self._queue = {}, [], []
        if self.packer is not None:
            for placement in self._placed.values():
                self.packer.release(placement)
            self._placed = {}
        self._shutdown()
        return left

    def _shutdown(self) -> None:
        import ray

        if self._started and ray.is_initialized():
            ray.shutdown()
            self._started = False


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
