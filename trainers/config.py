"""TrainConfig: a trainer's ``params`` dict, checked, typed and defaulted.

``params`` is the sweep's fixed ``trainer_args`` merged with the trial's sampled values. Values
may arrive as strings (YAML reads ``1e-4`` as a string), numpy scalars or, for list-valued
hyperparameters such as ``target_modules``, as a categorical's string form; all are coerced
here. An unknown key is an error (a typo in a sweep would otherwise silently search nothing)
unless ``strict_params: false``.

Fine-tuning options beyond the usual hyperparameters: ``optimizer`` (adamw, adafactor, sgd with
``momentum``, adamw_8bit), ``gradient_checkpointing``, ``packing`` and ``completion_only_loss``
(causal LM), and for LoRA ``use_dora``, ``use_rslora``, ``bias`` (none, all, lora_only) and
``modules_to_save``. ``show_library_warnings: true`` lets transformers/peft warnings through to
the console instead of recording them on the trial (``hpo_trainers.capture``).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from hpo.errors import TrainerError

TASKS = {
    "classification": "classification",
    "text-classification": "classification",
    "text_classification": "classification",
    "seq_cls": "classification",
    "causal_lm": "causal_lm",
    "causal-lm": "causal_lm",
    "clm": "causal_lm",
    "lm": "causal_lm",
}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
    "constant_with_warmup", "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay",
)
LORA_ONLY = (
    "lora_r", "lora_alpha", "lora_dropout", "target_modules", "quantization", "use_dora",
    "use_rslora", "bias", "modules_to_save",
)
OPTIMIZERS = ("adamw", "adafactor", "sgd", "adamw_8bit")
OPTIMIZER_ALIASES = {  # HF TrainingArguments.optim spellings
    "adamw_torch": "adamw", "adamw_torch_fused": "adamw", "adam": "adamw",
    "adamw_bnb_8bit": "adamw_8bit", "adamw8bit": "adamw_8bit", "bnb_adamw_8bit": "adamw_8bit",
}
LORA_BIAS = ("none", "all", "lora_only")
ALIASES = {  # other spellings people bring from HF TrainingArguments / peft
    "lr": "learning_rate",
    "lr_scheduler_type": "lr_scheduler",
    "per_device_train_batch_size": "batch_size",
    "per_device_eval_batch_size": "eval_batch_size",
    "num_train_epochs": "epochs",
    "eval_steps": "eval_every",
    "r": "lora_r",
    "max_seq_length": "max_length",
    "optim": "optimizer",
    "sgd_momentum": "momentum",
    "lora_use_dora": "use_dora",
    "lora_use_rslora": "use_rslora",
}


@dataclass
class TrainConfig:
    # what to train on
    model: str | None = None
    tokenizer: str | None = None
    model_config: dict[str, Any] = field(default_factory=dict)  # built-in tiny models only
    task: str = "classification"
    num_labels: int | None = None
    dataset: str | None = None
    eval_dataset: str | None = None
    dataset_config: str | None = None  # hub datasets only
    text_column: str = "text"
    label_column: str = "label"
    prompt_column: str = "prompt"
    completion_column: str = "completion"
    eval_fraction: float = 0.1
    eval_size: int | None = None
    max_train_examples: int | None = None
    max_eval_examples: int | None = 512
    synthetic_size: int = 2000
    data_seed: int = 0
    max_length: int = 128
    packing: bool = False  # causal LM: concatenate training texts into max_length blocks
    completion_only_loss: bool = True  # prompt/completion data: no loss on prompt tokens
    # hyperparameters
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    lr_scheduler: str = "linear"
    batch_size: int = 16
    eval_batch_size: int | None = None
    gradient_accumulation_steps: int = 1
    epochs: float = 1.0
    max_steps: int | None = None
    eval_every: int | None = None
    max_grad_norm: float | None = 1.0
    seed: int = 42
    optimizer: str = "adamw"
    momentum: float = 0.9  # sgd only
    gradient_checkpointing: bool = False
    # LoRA
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    target_modules: list[str] | str | None = None
    quantization: str | None = None
    use_dora: bool = False
    use_rslora: bool = False
    bias: str = "none"
    modules_to_save: list[str] | None = None
    # running
    precision: str = "auto"
    cpu_threads: int | None = None
    save_best: bool = False
    artifact_dir: str | None = None
    strict_params: bool = True
    show_library_warnings: bool = False  # else transformers/peft warnings go to the trial attrs

    @property
    def eval_bs(self) -> int:
        return self.eval_batch_size or max(self.batch_size, 32)


_INT = {
    "num_labels", "eval_size", "max_train_examples", "max_eval_examples", "synthetic_size",
    "data_seed", "max_length", "batch_size", "eval_batch_size", "gradient_accumulation_steps",
    "max_steps", "eval_every", "seed", "lora_r", "cpu_threads",
}
_FLOAT = {
    "eval_fraction", "learning_rate", "weight_decay", "warmup_ratio", "epochs", "max_grad_norm",
    "lora_alpha", "lora_dropout", "momentum",
}
_BOOL = {
    "save_best", "strict_params", "packing", "completion_only_loss", "gradient_checkpointing",
    "use_dora", "use_rslora", "show_library_warnings",
}
_POSITIVE = {
    "max_length", "batch_size", "eval_batch_size", "gradient_accumulation_steps", "max_steps",
    "eval_every", "lora_r", "synthetic_size", "cpu_threads", "learning_rate", "epochs",
    "lora_alpha", "num_labels", "max_train_examples", "max_eval_examples", "eval_size",
}


def parse_params(params: Mapping[str, Any], trainer: str) -> TrainConfig:
    """Validate ``params`` for ``trainer`` ('lora' or 'full') and return a TrainConfig."""
    if not isinstance(params, Mapping):
        raise TrainerError(
            f"trainer {trainer!r}: params must be a dict, got {type(params).__name__}"
        )
    known = {f.name for f in fields(TrainConfig)}
    values: dict[str, Any] = {}
    unknown: list[str] = []
    for raw_key, value in params.items():
        key = ALIASES.get(str(raw_key), str(raw_key))
        if key not in known:
            unknown.append(str(raw_key))
            continue
        values[key] = value
    strict = _to_bool("strict_params", values.get("strict_params", True))
    if unknown and strict:
        raise TrainerError(
            f"trainer {trainer!r}: unknown parameter(s) {', '.join(sorted(unknown))}. Known: "
            f"{', '.join(sorted(known))}. Fix the name in trainer_args/parameters, or set "
            "strict_params: false to ignore extra keys."
        )
    if trainer != "lora":
        lora_keys = sorted(k for k in values if k in LORA_ONLY)
        if lora_keys and strict:
            raise TrainerError(
                f"trainer {trainer!r}: {', '.join(lora_keys)} only apply to the 'lora' trainer; "
                "remove them or use `trainer: lora`."
            )
        for k in lora_keys:
            values.pop(k)
    if trainer == "full" and "learning_rate" not in values:
        values["learning_rate"] = 5e-5
    for key, value in list(values.items()):
        values[key] = _coerce(key, value)
    cfg = TrainConfig(**values)
    _check(cfg, trainer)
    return cfg


def _coerce(key: str, value: Any) -> Any:
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict, str)):
        value = value.item()  # numpy scalar
    if key in _INT:
        if isinstance(value, bool):
            raise TrainerError(f"parameter {key!r} must be an integer, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise TrainerError(f"parameter {key!r} must be an integer, got {value!r}") from None
        if not number.is_integer():
            raise TrainerError(f"parameter {key!r} must be an integer, got {value!r}")
        return int(number)
    if key in _FLOAT:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise TrainerError(f"parameter {key!r} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise TrainerError(f"parameter {key!r} must be finite, got {value!r}")
        return number
    if key in _BOOL:
        return _to_bool(key, value)
    if key == "target_modules":
        return parse_target_modules(value)
    if key == "modules_to_save":
        return parse_module_names(value, key)
    if key == "optimizer":
        name = str(value).strip().lower()
        return OPTIMIZER_ALIASES.get(name, name)
    if key == "task":
        task = TASKS.get(str(value).strip().lower())
        if task is None:
            aliases = ", ".join(sorted(set(TASKS) - {"classification", "causal_lm"}))
            raise TrainerError(
                f"unknown task {value!r}: use one of classification, causal_lm "
                f"(also accepted: {aliases})."
            )
        return task
    if key == "model_config":
        if not isinstance(value, Mapping):
            raise TrainerError(f"parameter 'model_config' must be a mapping, got {value!r}")
        return dict(value)
    if key in ("precision", "lr_scheduler", "quantization", "bias"):
        return str(value).strip().lower()
    return str(value) if not isinstance(value, str) else value


def _to_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    raise TrainerError(f"parameter {key!r} must be true or false, got {value!r}")


def parse_target_modules(value: Any) -> list[str] | str | None:
    """A list of module names, ``all-linear``, or a regex; accepts a categorical's string form.

    ``["query", "value"]``, ``"query,value"``, ``"query+value"`` and ``"['query', 'value']"``
    all give ``["query", "value"]``. A string with regex characters stays a regex (peft matches
    it against full module names); ``all-linear`` is peft's "every Linear but the head".
    """
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        names = [str(v).strip() for v in value if str(v).strip()]
    elif isinstance(value, str):
        text = value.strip()
        if text in ("", "auto", "default", "none"):
            return None
        if text == "all-linear":
            return text
        if text.startswith(("[", "(")):
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise TrainerError(f"target_modules {value!r} is not a valid list") from None
            return parse_target_modules(list(parsed))
        if any(c in text for c in "*^$|\\?"):
            return text  # a regex
        names = [p.strip() for p in text.replace("+", ",").split(",") if p.strip()]
    else:
        raise TrainerError(
            f"target_modules must be a list of module names (e.g. [query, value]), got {value!r}"
        )
    if not names:
        raise TrainerError(
            "target_modules is empty: name at least one module (e.g. [query, value])"
        )
    return names


def parse_module_names(value: Any, key: str) -> list[str] | None:
    """A list of module names from a list, ``"a,b"``/``"a+b"`` or a categorical's string form."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("", "none", "null"):
            return None
        if text.startswith(("[", "(")):
            try:
                value = list(ast.literal_eval(text))
            except (ValueError, SyntaxError):
                raise TrainerError(f"{key} {text!r} is not a valid list") from None
        else:
            value = text.replace("+", ",").split(",")
    if not isinstance(value, (list, tuple)):
        raise TrainerError(f"{key} must be a list of module names (e.g. [lm_head]), got {value!r}")
    names = [str(v).strip() for v in value if str(v).strip()]
    return names or None


def _check(cfg: TrainConfig, trainer: str) -> None:
    for key in _POSITIVE:
        value = getattr(cfg, key)
        if value is not None and value <= 0:
            raise TrainerError(f"parameter {key!r} must be > 0, got {value!r}")
    for key in ("weight_decay", "warmup_ratio", "lora_dropout"):
        if getattr(cfg, key) < 0:
            raise TrainerError(f"parameter {key!r} must be >= 0, got {getattr(cfg, key)!r}")
    if cfg.warmup_ratio >= 1:
        raise TrainerError(f"warmup_ratio must be in [0, 1), got {cfg.warmup_ratio}")
    if cfg.lora_dropout >= 1:
        raise TrainerError(f"lora_dropout must be in [0, 1), got {cfg.lora_dropout}")
    if not 0 < cfg.eval_fraction < 1:
        raise TrainerError(f"eval_fraction must be in (0, 1), got {cfg.eval_fraction}")
    if cfg.max_grad_norm is not None and cfg.max_grad_norm <= 0:
        cfg.max_grad_norm = None  # 0 or negative means "no clipping"
    if cfg.precision not in PRECISIONS:
        raise TrainerError(f"precision {cfg.precision!r}: use one of {', '.join(PRECISIONS)}")
    if cfg.lr_scheduler not in SCHEDULERS:
        raise TrainerError(
            f"lr_scheduler {cfg.lr_scheduler!r}: use one of {', '.join(SCHEDULERS)}"
        )
    if cfg.optimizer not in OPTIMIZERS:
        raise TrainerError(
            f"optimizer {cfg.optimizer!r}: use one of {', '.join(OPTIMIZERS)} (adamw_8bit needs "
            "bitsandbytes and a CUDA GPU)"
        )
    if not 0 <= cfg.momentum < 1:
        raise TrainerError(f"momentum must be in [0, 1), got {cfg.momentum}")
    if cfg.bias not in LORA_BIAS:
        raise TrainerError(
            f"bias {cfg.bias!r}: use one of {', '.join(LORA_BIAS)} (which biases LoRA trains)"
        )
    if cfg.packing and cfg.task != "causal_lm":
        raise TrainerError(
            "packing: true only applies to task: causal_lm (classification keeps one example per "
            "row); remove packing or set task: causal_lm"
        )
    if cfg.quantization in ("none", "no", "false", ""):
        cfg.quantization = None
    if cfg.quantization is not None and cfg.quantization not in ("4bit", "8bit"):
        raise TrainerError(f"quantization {cfg.quantization!r}: use 4bit, 8bit or leave it unset")
    if not cfg.model:
        raise TrainerError(
            f"trainer {trainer!r}: set trainer_args.model to a model folder, a hub id, or a "
            "built-in name (tiny-bert, tiny-llama, minilm)."
        )
    if not cfg.dataset:
        raise TrainerError(
            f"trainer {trainer!r}: set trainer_args.dataset to a JSONL/CSV file, a "
            "datasets folder (save_to_disk), a hub id, or 'synthetic'."
        )
