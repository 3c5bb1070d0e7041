"""Resolve what a sweep trains: a built-in trainer name, ``package.module:function``, a
``program`` script, or a Python callable handed to ``run_sweep``."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from hpo.config import SweepConfig
from hpo.errors import TrainerError

Trainer = Callable[..., Any]

BUILTIN = {
    "lora": "hpo_trainers.lora:train",
    "full": "hpo_trainers.full:train",
}
#: the import names before the package was renamed hpo_trainers (sweep files may name them)
_LEGACY = {"trainers.lora": "hpo_trainers.lora", "trainers.full": "hpo_trainers.full"}
_TRAINER_DEPS = ("torch", "transformers", "peft", "datasets", "accelerate")
PYTHON_TRAINER = "python"  # the sweep's trainer is the callable passed to run_sweep(objective=)


def import_ref(ref: str) -> Trainer:
    """Import ``package.module:function`` and return the function."""
    module_name, sep, attr = ref.partition(":")
    module_name = _LEGACY.get(module_name, module_name)
    if not sep or not module_name or not attr:
        raise TrainerError(
            f"trainer {ref!r}: expected a built-in name ({', '.join(BUILTIN)}) or "
            "'package.module:function'."
        )
    cwd = os.getcwd()
    if cwd not in sys.path:  # `hpo` as a console script does not put the cwd on sys.path
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if module_name.startswith("hpo_trainers.") and getattr(exc, "name", "") in _TRAINER_DEPS:
            raise TrainerError(
                f"trainer {ref!r} needs {exc.name}, which is not installed: "
                "pip install 'hpo[trainers]' (GPU machines: install your CUDA torch first)."
            ) from None
        raise TrainerError(
            f"trainer {ref!r}: cannot import module {module_name!r} ({exc}). Is it installed "
            "or on PYTHONPATH (the sweep's working directory is on it)?"
        ) from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise TrainerError(f"trainer {ref!r}: module {module_name!r} has no {attr!r}.")
    if not callable(fn):
        raise TrainerError(f"trainer {ref!r} is not callable.")
    return fn


def resolve(config: SweepConfig, objective: Trainer | None = None) -> Trainer:
    """The callable that trains one trial: ``train(params, ctx) -> dict | float``."""
    if objective is not None:
        if not callable(objective):
            raise TrainerError(f"objective must be callable, got {type(objective).__name__}.")
        return objective
    if config.trainer == PYTHON_TRAINER:
        raise TrainerError(
            "This sweep trains a Python callable: pass it again, "
            "hpo.run_sweep(config, objective=train), to run or resume it."
        )
    if config.trainer:
        return import_ref(BUILTIN.get(config.trainer, config.trainer))
    if config.program or config.command:
        from hpo.program import script_trainer

        return script_trainer(config)  # checks macros and runner options before anything runs
    raise TrainerError(
        "This sweep names nothing to run (no `trainer:`, `program:` or `command:`; a W&B file "
        "meant for wandb.agent(sweep_id, function=train)). Pass the function: "
        "hpo.run_sweep(config, objective=train) or hpo.run_agent(..., objective=train), or "
        "add `program: train.py` to the file.")
