"""The optimizer a trial asks for: ``adamw`` (default), ``adafactor``, ``sgd`` or ``adamw_8bit``.

Every choice gets the same two parameter groups: weight decay on matrices, none on biases and
norms. ``adafactor`` is transformers' Adafactor driven by the trial's ``learning_rate`` and
schedule (no relative step, no parameter scaling), so it sweeps like the others. ``adamw_8bit``
is bitsandbytes' AdamW8bit; it needs the package and a CUDA device, and is refused up front
(:func:`check_optimizer`) when either is missing.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from hpo.errors import TrainerError

from .config import TrainConfig


def check_optimizer(cfg: TrainConfig, device: torch.device) -> None:
    """Refuse an optimizer this worker cannot run, before any model is loaded."""
    if cfg.optimizer != "adamw_8bit":
        return
    problems = []
    if importlib.util.find_spec("bitsandbytes") is None:
        problems.append("the bitsandbytes package is not installed (pip install bitsandbytes)")
    if device.type != "cuda":
        problems.append(f"the trial runs on {device} (8-bit AdamW needs a CUDA GPU)")
    if problems:
        raise TrainerError(
            "optimizer adamw_8bit cannot be used: " + "; ".join(problems)
            + ". Use optimizer: adamw (or adafactor for less optimizer memory)."
        )


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters split into decayed (ndim >= 2) and not decayed (biases, norms)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise TrainerError("the model has no trainable parameters (check target_modules)")
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> Any:
    """``cfg.optimizer`` over the model's trainable parameters."""
    groups = param_groups(model, cfg.weight_decay)
    lr = cfg.learning_rate
    if cfg.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(groups, lr=lr, scale_parameter=False, relative_step=False,
                         warmup_init=False)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)
    if cfg.optimizer == "adamw_8bit":
        check_optimizer(cfg, device)
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(groups, lr=lr)
    params = [p for g in groups for p in g["params"]]
    fused = device.type == "cuda" and all(p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, lr=lr, fused=fused or None)
