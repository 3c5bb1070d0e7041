"""One trial, start to end, for both trainers: params -> data -> model -> loop -> save -> metrics.

The trainers differ only in ``prepare`` (how the loaded model becomes the trained one: LoRA
adapters or all weights) and in what they save; everything else is here once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from hpo.errors import TrainerError, TrialPruned

from .artifacts import save_artifact
from .capture import library_output, record_on_trial
from .config import TrainConfig, parse_params
from .data import load_task_data
from .device import (
    cpu_threads,
    free_memory,
    peak_memory_mb,
    reset_peak_memory,
    resolve_device,
    resolve_precision,
)
from .encode import encode
from .grad_checkpoint import enable_gradient_checkpointing
from .loop import LoopStats, train_loop
from .models import ModelBundle, count_parameters, load_model
from .optimizers import check_optimizer
from .packing import pack

# prepare(bundle, cfg, device) -> (model to train, extra attrs); may use bundle.model in place
Prepare = Callable[[ModelBundle, TrainConfig, Any], tuple[Any, dict[str, Any]]]
# load_kwargs(cfg, device) -> extra keyword arguments for load_model (quantization)
LoadKwargs = Callable[[TrainConfig, Any], dict[str, Any]]
log = logging.getLogger(__name__)


def run_trial(
    params: Mapping[str, Any],
    ctx: Any,
    *,
    trainer: str,
    prepare: Prepare,
    load_kwargs: LoadKwargs | None = None,
) -> dict[str, float]:
    """Run one trial of ``trainer`` with ``params``; library warnings go to the trial's attrs."""
    started = time.perf_counter()
    cfg = parse_params(params, trainer)
    device = resolve_device(getattr(ctx, "device", None))
    precision = resolve_precision(cfg.precision, device)
    check_optimizer(cfg, device)
    if cfg.save_best and ctx.artifact_dir is None and not cfg.artifact_dir:
        raise TrainerError(
            "save_best: true but the trial has no artifact folder (ctx.artifact_dir); run it in "
            "a sweep, or set trainer_args.artifact_dir"
        )
    with library_output(show=cfg.show_library_warnings) as captured:
        try:
            return _run(cfg, ctx, trainer, prepare, load_kwargs, device, precision, started)
        finally:
            try:
                record_on_trial(ctx, captured)
            except Exception as exc:  # noqa: BLE001 - never hide the trial's own outcome
                log.warning("could not record library warnings on trial: %s", exc)


def _run(
    cfg: TrainConfig, ctx: Any, trainer: str, prepare: Prepare, load_kwargs: LoadKwargs | None,
    device: Any, precision: str, started: float,
) -> dict[str, float]:
    from transformers import set_seed

    bundle: ModelBundle | None = None
    model = None
    stats = LoopStats()
    with cpu_threads(cfg.cpu_threads):
        try:
            data = load_task_data(cfg)
            set_seed(cfg.seed)  # tiny models' init, LoRA init, classifier heads, dropout
            bundle = load_model(
                cfg.model, cfg.task, label_names=data.label_names, corpus=data.texts(),
                tokenizer_name=cfg.tokenizer, model_config=cfg.model_config, device=device,
                **(load_kwargs(cfg, device) if load_kwargs else {}),
            )
            if cfg.gradient_checkpointing:
                enable_gradient_checkpointing(bundle.model)
            model, extra_attrs = prepare(bundle, cfg, device)
            if not cfg.quantization:  # a quantized model was loaded onto its device already
                model.to(device)
            pad_multiple = 8 if device.type == "cuda" else 1
            train_set = encode(data.train, bundle.tokenizer, cfg.task, cfg.max_length,
                               pad_multiple, cfg.completion_only_loss)
            eval_set = encode(data.eval, bundle.tokenizer, cfg.task, cfg.max_length,
                              pad_multiple, cfg.completion_only_loss)
            if cfg.packing:
                train_set = pack(train_set, cfg.max_length)
            trainable, total = count_parameters(model)
            ctx.set_attrs(
                trainer=trainer, model=cfg.model, task=cfg.task, device=str(device),
                dtype=precision, trainable_params=trainable, total_params=total,
                trainable_fraction=trainable / total if total else 0.0,
                train_examples=len(train_set), eval_examples=len(eval_set),
                optimizer=cfg.optimizer, gradient_checkpointing=cfg.gradient_checkpointing,
                packing=cfg.packing, **extra_attrs,
            )
            reset_peak_memory(device)
            try:
                metrics = train_loop(
                    model, train_set, eval_set, cfg, ctx, device, precision, stats
                )
            except TrialPruned:
                _record_run(ctx, stats, device, started)
                raise
            _record_run(ctx, stats, device, started)
            if cfg.save_best:
                path = save_artifact(model, bundle, cfg, data, ctx, trainer, metrics)
                ctx.set_attrs(artifact_path=str(path))
            return {**metrics, "steps": float(stats.steps)}
        finally:
            # free the model before the next trial in this process (also when pruned or failed)
            if bundle is not None:
                bundle.model = None
            del model, bundle
            free_memory(device)


def _record_run(ctx: Any, stats: LoopStats, device: Any, started: float) -> None:
    ctx.set_attrs(
        steps_done=stats.steps, total_steps=stats.total_steps,
        tokens_per_s=round(stats.tokens_per_s, 2), step_time_s=round(stats.step_time_s, 5),
        peak_memory_mb=round(peak_memory_mb(device), 1),
        trial_wall_s=round(time.perf_counter() - started, 3),
        train_window=[stats.window_start, stats.window_end], train_tokens=stats.train_tokens,
    )
