"""Gradient (activation) checkpointing: keep fewer activations, recompute them in backward.

Turned on with ``gradient_checkpointing: true`` on the base model, before LoRA wraps it, with
non-reentrant ``torch.utils.checkpoint`` (gradients reach LoRA weights even though the frozen
embeddings' outputs need no grad). Each transformer layer's forward then runs twice per step:
less memory for longer sequences or larger batches, at roughly a third more compute.
"""

from __future__ import annotations

from typing import Any

from hpo.errors import TrainerError


def enable_gradient_checkpointing(model: Any) -> None:
    """Checkpoint every layer of a transformers model; a clear error if it cannot be."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise TrainerError(
            f"gradient_checkpointing: {type(model).__name__} does not support it; set "
            "gradient_checkpointing: false"
        )
    kwargs = {"use_reentrant": False}
    try:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    except ValueError as exc:
        raise TrainerError(f"gradient_checkpointing cannot be enabled: {exc}") from None
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "use_cache", None):
        config.use_cache = False  # a KV cache is useless in training and clashes with recompute


def checkpointed_layers(model: Any) -> int:
    """How many modules of ``model`` have checkpointing switched on."""
    return sum(1 for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True)
