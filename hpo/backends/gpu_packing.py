"""``resources: {gpu: auto}``: pack trials onto GPUs by their measured peak memory.

No trial's memory is known before one has run, so the first trials run alone, one per GPU
(exclusive), and report their peak (hpo.gpu_memory). From then on a trial is estimated at
``max peak seen x margin + reserve`` (the reserve covers what torch's allocator does not see:
the CUDA context and library workspaces) and each GPU takes trials while their estimates fit
in ``total x (1 - headroom)``. Trials are spread over the GPUs first (fewest on a GPU wins),
at most ``ceil(parallel / GPUs)`` per GPU. A later, larger peak raises the estimate; a trial
that runs out of memory while sharing a GPU lowers the number allowed per GPU by one; one that
runs out alone before any trial fitted stops the sweep with :class:`GpuDoesNotFit`.

:class:`GpuPacker` is pure arithmetic over an inventory ``{gpu index: total bytes}``, so it is
tested on the CPU with made-up GPUs. The Ray backend uses it for admission (``free_slots``) and
turns its per-GPU count into Ray's fractional ``num_gpus`` (:meth:`GpuPacker.fraction`), so
Ray's own accounting never puts more trials on one GPU than the packer allowed.
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from hpo.errors import BackendError
from hpo.gpu_memory import GpuUsage

log = logging.getLogger(__name__)

GIB = 2**30
MARGIN = 1.1  # a later trial of the same sweep may peak a little higher than the measured one
RESERVE_BYTES = GIB  # per trial, outside torch's allocator: CUDA context, cuBLAS/cuDNN
HEADROOM = 0.05  # of each GPU kept free (fragmentation, the driver, other processes)
RAY_UNIT = 10_000  # Ray's resource precision is 0.0001


class GpuDoesNotFit(BackendError):
    """One trial alone needs more memory than a GPU has."""


@dataclass(frozen=True)
class Placement:
    """Where one trial was placed: a GPU index, and whether it has that GPU to itself."""

    gpu: int
    exclusive: bool


def gib(n: float | None) -> str:
    """Bytes as GiB for messages ("12.3 GiB"; "unknown" for None)."""
    return "unknown" if n is None else f"{n / GIB:.1f} GiB"


class GpuPacker:
    """Decides how many trials run at once on each GPU from their measured peak memory."""

    def __init__(
        self,
        inventory: Mapping[int, int | None],
        *,
        parallel: int | None = None,
        margin: float = MARGIN,
        reserve_bytes: int = RESERVE_BYTES,
        headroom: float = HEADROOM,
        uniform: bool = False,
    ) -> None:
        """``inventory``: GPU index -> total bytes (None: learned from the first trial that
        reports its GPU's total); ``parallel``: the most trials at once over all GPUs;
        ``uniform``: the placement cannot tell GPUs apart (Ray), so every GPU is taken to have
        the smallest total known."""
        if not inventory:
            raise BackendError("resources.gpu: auto found no GPU to pack trials on; use "
                               "gpu: 0 to run on CPUs, or run where GPUs are visible.")
        self.totals: dict[int, int | None] = dict(inventory)
        self.parallel = parallel
        self.margin, self.reserve, self.headroom = margin, reserve_bytes, headroom
        self.uniform = uniform
        self.peak: int | None = None  # the largest peak measured so far
        self.cap: int | None = None  # trials per GPU, lowered after an out-of-memory
        self._load: dict[int, int] = {g: 0 for g in self.totals}
        self._exclusive: set[int] = set()
        if uniform:
            self._uniform_totals()

    # -- the estimate -----------------------------------------------------------------------
    @property
    def estimate(self) -> int | None:
        """Bytes one trial is expected to need (None until a trial was measured)."""
        if self.peak is None:
            return None
        return math.ceil(self.peak * self.margin) + self.reserve

    def usable(self, gpu: int) -> int | None:
        """Bytes of ``gpu`` trials may fill (None: its total is not known yet)."""
        total = self.totals[gpu]
        return None if total is None else int(total * (1 - self.headroom))

    def per_gpu(self, gpu: int) -> int:
        """Trials that may run at once on ``gpu``: 1 until a trial was measured, then as many
        estimates as fit (1 when one fits only alone, 0 when not even that)."""
        est, usable = self.estimate, self.usable(gpu)
        if est is None or usable is None:
            return 1
        n = usable // est
        if n == 0:
            total = self.totals[gpu] or 0
            n = 1 if self.peak is not None and self.peak <= total else 0
        if self.cap is not None:
            n = min(n, self.cap)
        spread = self._spread()
        return min(n, spread) if spread else n

    def _spread(self) -> int | None:
        if not self.parallel:
            return None
        fitting = sum(1 for g in self.totals if self._fits_alone(g)) or len(self.totals)
        return max(1, math.ceil(self.parallel / fitting))

    def _fits_alone(self, gpu: int) -> bool:
        total = self.totals[gpu]
        return self.peak is None or total is None or self.peak <= total

    # -- placing -----------------------------------------------------------------------------
    def place(self) -> Placement | None:
        """Reserve room for one trial: the GPU with the fewest trials that has room (the
        lowest index on a tie), or None when no GPU has room now."""
        if self.parallel is not None and self.placed() >= self.parallel:
            return None
        best = None
        for gpu in sorted(self.totals):
            if gpu in self._exclusive:
                continue
            limit = self.per_gpu(gpu)
            if self._load[gpu] >= limit:
                continue
            if best is None or self._load[gpu] < self._load[best[0]]:
                best = (gpu, limit)
        if best is None:
            return None
        gpu, limit = best
        exclusive = limit == 1
        self._load[gpu] += 1
        if exclusive:
            self._exclusive.add(gpu)
        return Placement(gpu, exclusive)

    def release(self, placement: Placement) -> None:
        """Give back what :meth:`place` reserved."""
        self._load[placement.gpu] = max(0, self._load[placement.gpu] - 1)
        if placement.exclusive or self._load[placement.gpu] == 0:
            self._exclusive.discard(placement.gpu)

    def placed(self) -> int:
        """Trials placed and not released."""
        return sum(self._load.values())

    def load(self, gpu: int) -> int:
        """Trials placed on ``gpu`` now."""
        return self._load[gpu]

    def free_slots(self) -> int:
        """How many more trials :meth:`place` would take right now."""
        free = sum(max(0, self.per_gpu(g) - self._load[g]) for g in self.totals
                   if g not in self._exclusive)
        if self.parallel is not None:
            free = min(free, self.parallel - self.placed())
        return max(0, free)

    def fraction(self) -> float:
        """Ray's ``num_gpus`` for the next trial: 1/(trials per GPU), rounded down to Ray's
        precision, so Ray fits exactly that many on each GPU (1.0 until a trial was
        measured). Meant for placements whose GPUs are alike (``uniform``)."""
        counts = [self.per_gpu(g) for g in self.totals if self.per_gpu(g) > 0]
        per = min(counts) if counts else 1
        return 1.0 if per <= 1 else math.floor(RAY_UNIT / per) / RAY_UNIT

    # -- learning ----------------------------------------------------------------------------
    def observe(
        self, usage: GpuUsage | None, placement: Placement, *, ok: bool = True,
        oom: bool = False, trial: int | None = None,
    ) -> str | None:
        """Learn from a finished trial placed at ``placement``: its measured ``usage``,
        whether it ended well (``ok``: complete or pruned; a failed trial's peak only ever
        raises the estimate) and whether it ran out of GPU memory. Returns a warning to show,
        if any; raises :class:`GpuDoesNotFit` when one trial alone does not fit."""
        name = f"trial {trial}" if trial is not None else "a trial"
        if usage is not None and usage.total_bytes:
            self._learn_total(placement.gpu, usage.total_bytes)
        peak = usage.peak_bytes if usage is not None and usage.peak_bytes else None
        if oom:
            return self._out_of_memory(name, placement, peak)
        if peak is None:
            if ok and self.peak is None:
                return (f"{name} reported no GPU memory (resources.gpu: auto measures "
                        "through torch.cuda, or the trainer's ctx.set_attrs("
                        "peak_gpu_mem_bytes=...)); trials keep a GPU each until one does.")
            return None
        if not ok and self.peak is None:
            return None  # a failed trial's peak may be far below what a full run needs
        self.peak = max(self.peak or 0, peak)
        if not any(self._fits_alone(g) for g in self.totals):
            raise GpuDoesNotFit(self._too_big(name, self.peak))
        return None

    def _out_of_memory(self, name: str, placement: Placement, peak: int | None) -> str:
        if placement.exclusive:
            if self.peak is None:
                raise GpuDoesNotFit(self._too_big(name, peak, ran_out=True,
                                                  total=self.totals.get(placement.gpu)))
            return (f"{name} ran out of GPU memory alone on GPU {placement.gpu} "
                    f"({gib(self.totals.get(placement.gpu))}); trials so far peaked at "
                    f"{gib(self.peak)}: its parameters (batch size, sequence length, model) "
                    "need more memory than theirs.")
        per = self.per_gpu(placement.gpu)
        self.cap = max(1, per - 1)
        if peak is not None:
            self.peak = max(self.peak or 0, peak)
        return (f"{name} ran out of GPU memory while sharing GPU {placement.gpu} with others "
                f"(up to {per} per GPU, each estimated at {gib(self.estimate)}); packing at "
                f"most {self.cap} per GPU from now on. Trials whose memory depends on their "
                "parameters can exceed the first measurement: set resources.gpu to a fixed "
                "fraction to choose the packing yourself.")

    def _too_big(self, name: str, peak: int | None, *, ran_out: bool = False,
                 total: int | None = None) -> str:
        largest = max((t for t in self.totals.values() if t), default=None)
        has = gib(total if total is not None else largest)
        what = (f"ran out of GPU memory alone on a GPU with {has}"
                + (f" (it had reached {gib(peak)})" if peak else "")
                if ran_out else f"peaked at {gib(peak)}, more than the largest GPU has ({has})")
        return (f"resources.gpu: auto: {name} {what}, so one trial alone does not fit on one "
                "GPU. Make a trial smaller (a smaller batch size or sequence length, gradient "
                "checkpointing, bf16, LoRA instead of full fine-tuning) or run on GPUs with "
                "more memory.")

    def _learn_total(self, gpu: int, total: int) -> None:
        if self.uniform:
            known = [t for t in self.totals.values() if t]
            smallest = min([*known, total])
            for g in self.totals:
                self.totals[g] = smallest
        elif self.totals.get(gpu) is None:
            self.totals[gpu] = total

    def _uniform_totals(self) -> None:
        known = [t for t in self.totals.values() if t]
        if known:
            for g in self.totals:
                self.totals[g] = min(known)

    def describe(self) -> str:
        """The packing now, for the sweep's log."""
        if self.estimate is None:
            return "measuring: one trial per GPU until a trial reports its peak GPU memory"
        per = sorted({self.per_gpu(g) for g in self.totals})
        totals = sorted({gib(t) for t in self.totals.values()})
        return (f"trials peak at {gib(self.peak)} (estimated {gib(self.estimate)} with "
                f"margin and reserve); GPUs have {', '.join(totals)}: up to "
                f"{'/'.join(map(str, per))} trial(s) per GPU on {len(self.totals)} GPU(s)")


def nvidia_smi_totals(timeout: float = 10.0) -> list[int]:
    """Total bytes of each GPU nvidia-smi lists on this host ([] without nvidia-smi)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=timeout, check=True).stdout
        return [int(float(line.strip()) * 2**20) for line in out.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return []


def ray_inventory() -> dict[int, int | None]:
    """The GPUs of the Ray cluster as a uniform inventory: ``{0..n-1: total bytes}``, the
    total from nvidia-smi on this host when it has GPUs (the smallest), else learned from the
    first trial. Raises BackendError when the cluster has no GPU."""
    import ray

    count = int(ray.cluster_resources().get("GPU", 0))
    if count < 1:
        raise BackendError(
            "resources.gpu: auto needs GPUs, and the Ray cluster has none. Use gpu: 0 to run "
            "trials on CPUs, or start Ray on GPU nodes (ray start --num-gpus N)."
        )
    totals = nvidia_smi_totals()
    total = min(totals) if totals else None
    return {i: total for i in range(count)}


__all__ = ["GpuDoesNotFit", "GpuPacker", "Placement", "nvidia_smi_totals", "ray_inventory"]
