"""Save a trial's result to ``<artifact_dir>/trial-<number>``.

LoRA: the adapter (``adapter_config.json`` + ``adapter_model.safetensors``; for classification
the new head is saved with it), the tokenizer and, for built-in tiny random models whose base
weights exist nowhere else, the base model under ``base/`` (the adapter config points there, so
``AutoPeftModelFor...from_pretrained(folder)`` works). Full fine-tuning: the whole model and the
tokenizer. Both: ``trainer.json`` with the model, task, labels, parameters and final metrics.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from hpo.errors import TrainerError

from .config import TrainConfig
from .data import TaskData
from .models import ModelBundle, quiet_transformers


def artifact_folder(ctx: Any, cfg: TrainConfig) -> Path:
    base = ctx.artifact_dir if ctx.artifact_dir is not None else cfg.artifact_dir
    if base is None:
        raise TrainerError("save_best needs ctx.artifact_dir or trainer_args.artifact_dir")
    return Path(base) / f"trial-{ctx.number}"


def save_artifact(
    model: Any, bundle: ModelBundle, cfg: TrainConfig, data: TaskData, ctx: Any, trainer: str,
    metrics: dict[str, float],
) -> Path:
    path = artifact_folder(ctx, cfg)
    if path.exists():  # a retried trial overwrites its own earlier attempt
        shutil.rmtree(path)
    path.mkdir(parents=True)
    is_peft = hasattr(model, "peft_config")
    base_ref = bundle.source or bundle.name
    try:
        with quiet_transformers():
            if is_peft:
                for adapter_cfg in model.peft_config.values():
                    adapter_cfg.base_model_name_or_path = base_ref
                model.save_pretrained(path)
                if bundle.builtin_random:  # last: unload() strips the adapters off the model
                    model.unload().save_pretrained(path / "base")
                    base_ref = str((path / "base").resolve())
                    _point_adapter_at(path, base_ref)
            else:
                model.save_pretrained(path)
            bundle.tokenizer.save_pretrained(path)
    except OSError as exc:
        raise TrainerError(f"cannot save the trial's model to {path}: {exc}") from None
    info = {
        "trainer": trainer,
        "model": cfg.model,
        "base_model": base_ref,
        "task": cfg.task,
        "label_names": data.label_names,
        "trial": getattr(ctx, "number", None),
        "sweep": getattr(ctx, "sweep", None),
        "params": _jsonable(dataclasses.asdict(cfg)),
        "metrics": metrics,
    }
    (path / "trainer.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    return path


def _point_adapter_at(path: Path, base: str) -> None:
    config = path / "adapter_config.json"
    data = json.loads(config.read_text())
    data["base_model_name_or_path"] = base
    config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
