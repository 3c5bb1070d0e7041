"""A trial's peak GPU memory, measured in the process that ran it.

``hpo.execute`` calls :func:`reset` before each trial and :func:`record` after it, on every
placement. Both are no-ops unless the trainer already imported torch and initialized CUDA
(this module never imports torch or starts a CUDA context itself). ``record`` writes the trial
attributes ``peak_gpu_mem_bytes`` (torch.cuda.max_memory_allocated), ``peak_gpu_reserved_bytes``
(max_memory_reserved: what the caching allocator held, the figure packing needs) and
``gpu_total_bytes`` (the GPU's memory).

A trainer that does not use torch (JAX, a subprocess) can report its own figures with
``ctx.set_attrs(peak_gpu_mem_bytes=..., gpu_total_bytes=...)``; ``record`` then keeps them.
``resources: {gpu: auto}`` (hpo.backends.gpu_packing) packs later trials by this measurement.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

PEAK_ATTR = "peak_gpu_mem_bytes"
RESERVED_ATTR = "peak_gpu_reserved_bytes"
TOTAL_ATTR = "gpu_total_bytes"


@dataclass(frozen=True)
class GpuUsage:
    """What one trial used on its busiest GPU: peak bytes (what torch's caching allocator
    held, or the trainer's own figure), that GPU's total bytes, and the peak of live tensors
    (None where unknown)."""

    peak_bytes: int | None
    total_bytes: int | None = None
    allocated_bytes: int | None = None


_last: GpuUsage | None = None


def _cuda() -> Any:
    """torch.cuda when torch is imported and CUDA initialized in this process, else None."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    try:
        return cuda if cuda is not None and cuda.is_initialized() else None
    except Exception:  # a half-imported or broken torch: nothing to measure
        return None


def reset() -> None:
    """Start a trial's measurement: forget the last one, reset torch's peak statistics."""
    global _last
    _last = None
    cuda = _cuda()
    if cuda is None:
        return
    try:
        for index in range(cuda.device_count()):
            cuda.reset_peak_memory_stats(index)
    except Exception as exc:
        log.debug("cannot reset CUDA peak memory statistics: %s", exc)


def measure() -> GpuUsage | None:
    """This process's peak GPU memory since :func:`reset` (None without CUDA in use)."""
    cuda = _cuda()
    if cuda is None:
        return None
    try:
        best = None
        for index in range(cuda.device_count()):
            allocated = int(cuda.max_memory_allocated(index))
            reserved = max(allocated, int(cuda.max_memory_reserved(index)))
            if best is None or reserved > best[1]:
                best = (allocated, reserved, index)
        if best is None or best[1] == 0:
            return None
        total = int(cuda.get_device_properties(best[2]).total_memory)
        return GpuUsage(best[1], total, best[0])
    except Exception as exc:
        log.debug("cannot read CUDA peak memory: %s", exc)
        return None


def record(ctx: Any, release: bool = False) -> GpuUsage | None:
    """After a trial: record its peak GPU memory as trial attributes (a trainer's own
    ``peak_gpu_mem_bytes`` wins) and keep it for :func:`last`; ``release`` empties torch's
    cache so the next trial in this process starts without the last one's memory. Never
    raises: a measurement is not worth failing a trial for."""
    global _last
    try:
        own = getattr(ctx, "attrs", {}) or {}
        if own.get(PEAK_ATTR) is not None:
            total = own.get(TOTAL_ATTR)
            _last = GpuUsage(int(own[PEAK_ATTR]), int(total) if total is not None else None)
            return _last
        usage = measure()
        if usage is None:
            return None
        _last = usage
        ctx.set_attrs(**{PEAK_ATTR: usage.allocated_bytes, RESERVED_ATTR: usage.peak_bytes,
                         TOTAL_ATTR: usage.total_bytes})
        return usage
    except Exception as exc:
        log.debug("cannot record the trial's GPU memory: %s", exc)
        return _last
    finally:
        if release and (cuda := _cuda()) is not None:
            try:
                cuda.empty_cache()
            except Exception:
                pass


def last() -> GpuUsage | None:
    """The usage :func:`record` kept for the latest trial of this process (None if none)."""
    return _last


def is_oom(error: str | None) -> bool:
    """Whether a trial's error text is a GPU out-of-memory error."""
    text = (error or "").lower()
    return "out of memory" in text and ("cuda" in text or "outofmemoryerror" in text
                                        or "hip" in text or "gpu" in text)


__all__ = ["GpuUsage", "is_oom", "last", "measure", "record", "reset"]
