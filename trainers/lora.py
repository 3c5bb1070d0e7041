"""``lora`` trainer: LoRA adapters (peft) on a classification or causal-LM model.

Hyperparameters: ``lora_r``, ``lora_alpha``, ``lora_dropout``, ``target_modules`` (default per
architecture: BERT ``query,value``; Llama ``q_proj,v_proj``; other architectures peft knows get
peft's default), plus everything the shared loop takes (see ``hpo_trainers.config``). Variants:
``use_dora`` (weight-decomposed LoRA: a trained magnitude vector per adapted layer),
``use_rslora`` (scale by alpha/sqrt(r) instead of alpha/r, steadier at large r), ``bias``
(``none``, ``all``, ``lora_only``: which biases train too) and ``modules_to_save`` (modules
trained in full and saved with the adapter, e.g. ``lm_head``; a classifier's new head always
is).
``quantization: 4bit|8bit`` loads the base model with bitsandbytes (QLoRA); it needs a CUDA
device and the ``bitsandbytes`` package.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from typing import Any

import torch

from hpo.errors import TrainerError

from .config import TrainConfig
from .models import ModelBundle, linear_module_names
from .runner import run_trial

DEFAULT_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "gpt2": ["c_attn"],
}


def train(params: Mapping[str, Any], ctx: Any) -> dict[str, float]:
    """Train LoRA adapters for one trial; report every evaluation to ``ctx``."""
    return run_trial(params, ctx, trainer="lora", prepare=apply_lora, load_kwargs=_load_kwargs)


def default_targets(model: torch.nn.Module, model_type: str) -> list[str]:
    if model_type in DEFAULT_TARGETS:
        return list(DEFAULT_TARGETS[model_type])
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    known = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
    if known:
        return list(known)
    raise TrainerError(
        f"no default LoRA target_modules for model type {model_type!r}; set "
        f"target_modules to some of its Linear layers: {', '.join(linear_module_names(model))}"
    )


def check_targets(model: torch.nn.Module, targets: list[str] | str) -> None:
    """Every named target must match at least one module (peft's matching rules)."""
    names = [name for name, _ in model.named_modules() if name]
    if targets == "all-linear":
        return
    if isinstance(targets, str):
        if not any(re.fullmatch(targets, n) for n in names):
            raise TrainerError(
                f"target_modules regex {targets!r} matches no module; Linear layers: "
                f"{', '.join(linear_module_names(model))}"
            )
        return
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise TrainerError(
            f"target_modules {', '.join(missing)} match no module of this model; Linear layers "
            f"available: {', '.join(linear_module_names(model))}"
        )


def check_modules_to_save(model: torch.nn.Module, names: list[str]) -> None:
    """Every ``modules_to_save`` name must be a module of the model."""
    modules = [name for name, _ in model.named_modules() if name]
    missing = [m for m in names if not any(n == m or n.endswith("." + m) for n in modules)]
    if missing:
        tops = sorted({n.rsplit(".", 1)[-1] for n in modules if n.count(".") <= 1})
        raise TrainerError(
            f"modules_to_save {', '.join(missing)} match no module of this model; top-level "
            f"modules: {', '.join(tops)}"
        )


def _load_kwargs(cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    if cfg.quantization is None:
        return {}
    problems = []
    if device.type != "cuda":
        problems.append(f"the trial runs on {device} (needs a CUDA GPU: resources.gpu >= 1)")
    if importlib.util.find_spec("bitsandbytes") is None:
        problems.append("the bitsandbytes package is not installed (pip install bitsandbytes)")
    if cfg.model in ("tiny-bert", "tiny-llama"):
        problems.append(f"{cfg.model!r} is built from a config; quantize a pretrained model")
    if problems:
        raise TrainerError(
            f"quantization: {cfg.quantization} cannot be used: " + "; ".join(problems)
        )
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if cfg.quantization == "4bit":
        qc = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        )
    else:
        qc = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": qc}


def apply_lora(
    bundle: ModelBundle, cfg: TrainConfig, device: torch.device
) -> tuple[Any, dict[str, Any]]:
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    model = bundle.model
    targets = cfg.target_modules or default_targets(model, bundle.model_type)
    check_targets(model, targets)
    if cfg.modules_to_save:
        check_modules_to_save(model, cfg.modules_to_save)
    if cfg.quantization:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    task_type = TaskType.SEQ_CLS if cfg.task == "classification" else TaskType.CAUSAL_LM
    lora_config = LoraConfig(
        task_type=task_type, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout, target_modules=targets, bias=cfg.bias,
        use_dora=cfg.use_dora, use_rslora=cfg.use_rslora,
        modules_to_save=list(cfg.modules_to_save) if cfg.modules_to_save else None,
    )
    try:
        peft_model = get_peft_model(model, lora_config)
    except ValueError as exc:  # peft's own target/layer checks
        raise TrainerError(
            f"LoRA cannot be applied: {exc}. Linear layers: {', '.join(linear_module_names(model))}"
        ) from None
    bundle.model = peft_model
    shown = targets if isinstance(targets, str) else ",".join(targets)
    return peft_model, {
        "target_modules": shown, "lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha,
        "quantization": cfg.quantization or "none", "use_dora": cfg.use_dora,
        "use_rslora": cfg.use_rslora, "lora_bias": cfg.bias,
    }
