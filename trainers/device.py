"""Where and how a trial computes: device, precision (autocast/GradScaler), CPU threads, memory."""

from __future__ import annotations

import contextlib
import gc
import resource
import sys
from collections.abc import Iterator

import torch

from hpo.errors import TrainerError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def device_name(described: str | None) -> str:
    """The torch device in a placement's description: hpo's Ray workers describe theirs as
    ``cuda:0 (GPU 3)`` (or ``cuda:0,cuda:1 (GPU 2,3)`` for several); the trial trains on the
    first one named."""
    text = (described or "").strip()
    if not text:
        return "cpu"
    return text.split()[0].split(",")[0]


def resolve_device(name: str | None) -> torch.device:
    """``ctx.device`` as a torch.device; a CUDA device must really be there."""
    try:
        device = torch.device(device_name(name))
    except RuntimeError:
        raise TrainerError(f"device {name!r} is not a torch device name (cpu, cuda:0)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainerError(
                f"the trial was given {name!r} but torch.cuda.is_available() is False: install a "
                "CUDA build of torch on this worker, or run the sweep with resources.gpu: 0"
            )
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def resolve_precision(requested: str, device: torch.device) -> str:
    """``auto|fp32|bf16|fp16`` -> the precision used: auto is bf16 (or fp16) on CUDA, else fp32."""
    cuda = device.type == "cuda"
    if requested == "auto":
        if not cuda:
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if requested == "fp16" and not cuda:
        raise TrainerError("precision fp16 needs a CUDA device; use fp32 (or bf16) on CPU")
    if requested == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise TrainerError("this GPU does not support bf16; use precision: fp16 or auto")
    return requested


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed-precision context for forward passes (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads (restored afterwards); None leaves torch's setting.

    On a shared or small machine fewer threads than cores is often much faster: OpenMP threads
    that wait for a busy core spin instead of working.
    """
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: max allocated on the device; CPU: peak resident set size of this process."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def free_memory(device: torch.device | None) -> None:
    gc.collect()
    if device is not None and device.type == "cuda":
        torch.cuda.empty_cache()
