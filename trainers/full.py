"""``full`` trainer: fine-tune every weight of a classification or causal-LM model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .config import TrainConfig
from .models import ModelBundle
from .runner import run_trial


def train(params: Mapping[str, Any], ctx: Any) -> dict[str, float]:
    """Fine-tune all weights for one trial; report every evaluation to ``ctx``."""
    return run_trial(params, ctx, trainer="full", prepare=all_weights)


def all_weights(
    bundle: ModelBundle, cfg: TrainConfig, device: torch.device
) -> tuple[Any, dict[str, Any]]:
    model = bundle.model
    for p in model.parameters():
        p.requires_grad_(True)
    return model, {}
