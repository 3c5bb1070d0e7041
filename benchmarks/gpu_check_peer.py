"""The peer for benchmarks/gpu_check.py: a plain transformers ``Trainer`` (+ peft for LoRA).

Given the same ``params`` dict as ``hpo_trainers.lora``/``hpo_trainers.full``, it trains the
same model (loaded or built from the same config with the same seed), on the same token ids
(the trainers' own tokenization and packing, so both loops see identical examples), with the
same batch size,
steps, learning rate, schedule, clipping and precision, the way the transformers and peft docs
show it: ``get_peft_model`` + ``TrainingArguments`` + ``Trainer.train()``. Step time and tokens/s
cover ``train()`` alone; peak memory is the CUDA allocator's peak during it.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from hpo_trainers.config import parse_params
from hpo_trainers.data import load_task_data
from hpo_trainers.device import synchronize
from hpo_trainers.encode import encode
from hpo_trainers.models import load_model, quiet_transformers
from hpo_trainers.packing import pack


def run_hf(params: Mapping[str, Any], trainer: str, device: str) -> dict[str, float]:
    """Train like ``trainers.<trainer>`` would, with HF Trainer; return the measured figures.

    Library warnings are silenced here (as ``trainers`` records them on the trial), so the
    peer's notices do not break up the tables."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _run_hf(params, trainer, device)


def _run_hf(params: Mapping[str, Any], trainer: str, device: str) -> dict[str, float]:
    import datasets
    from transformers import (
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    cfg = parse_params(params, trainer)
    dev = torch.device(device)
    datasets.disable_progress_bars()
    before_threads = torch.get_num_threads()
    if cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    try:
        data = load_task_data(cfg)
        set_seed(cfg.seed)
        with quiet_transformers():
            bundle = load_model(
                cfg.model, cfg.task, label_names=data.label_names, corpus=data.texts(),
                tokenizer_name=cfg.tokenizer, model_config=cfg.model_config,
            )
        model = _lora(bundle, cfg) if trainer == "lora" else bundle.model
        pad_multiple = 8 if dev.type == "cuda" else 1
        train_set = encode(data.train, bundle.tokenizer, cfg.task, cfg.max_length, pad_multiple)
        eval_set = encode(data.eval, bundle.tokenizer, cfg.task, cfg.max_length, pad_multiple)
        if cfg.packing:
            train_set = pack(train_set, cfg.max_length)
        train_ds = _dataset(train_set)
        eval_ds = _dataset(eval_set)
        if cfg.task == "classification":
            collate: Any = DataCollatorWithPadding(
                bundle.tokenizer, pad_to_multiple_of=pad_multiple if pad_multiple > 1 else None)
        else:  # packed training rows are all one length; evaluation rows are not
            collate = _pad_causal(bundle.tokenizer.pad_token_id, pad_multiple)
        seen = {"tokens": 0}

        def counting(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
            batch = collate(features)
            seen["tokens"] += int(batch["attention_mask"].sum())
            return batch

        precision = cfg.precision if cfg.precision != "auto" else (
            "bf16" if dev.type == "cuda" else "fp32")
        with tempfile.TemporaryDirectory(prefix="gpu-check-hf-") as out:
            args = TrainingArguments(
                output_dir=out, per_device_train_batch_size=cfg.batch_size,
                per_device_eval_batch_size=cfg.eval_bs, max_steps=int(cfg.max_steps or 1),
                learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler,
                warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
                max_grad_norm=cfg.max_grad_norm or 0.0, bf16=precision == "bf16",
                fp16=precision == "fp16", eval_strategy="no", save_strategy="no",
                logging_strategy="no", report_to="none", disable_tqdm=True, seed=cfg.seed,
                use_cpu=dev.type == "cpu", dataloader_num_workers=0,
                remove_unused_columns=False,
            )
            model.to(dev)
            hf = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                         data_collator=counting)
            hf.remove_callback(PrinterCallback)  # its log dicts would break up the tables
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            synchronize(dev)
            t0 = time.perf_counter()
            hf.train()
            synchronize(dev)
            train_s = time.perf_counter() - t0
            peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
            tokens = seen["tokens"]
            metrics = hf.evaluate()
        steps = int(cfg.max_steps or 1)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        return {
            "step_time_s": train_s / steps, "tokens_per_s": tokens / train_s,
            "peak_memory_mb": peak, "eval_loss": float(metrics["eval_loss"]),
            "trainable_params": trainable, "total_params": total, "steps": steps,
        }
    finally:
        torch.set_num_threads(before_threads)
        if dev.type == "cuda":
            torch.cuda.empty_cache()


def _lora(bundle: Any, cfg: Any) -> Any:
    from hpo_trainers.lora import default_targets
    from peft import LoraConfig, TaskType, get_peft_model

    targets = cfg.target_modules or default_targets(bundle.model, bundle.model_type)
    task_type = TaskType.SEQ_CLS if cfg.task == "classification" else TaskType.CAUSAL_LM
    return get_peft_model(bundle.model, LoraConfig(
        task_type=task_type, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout, target_modules=targets,
    ))


def _dataset(enc: Any) -> Any:
    from datasets import Dataset

    if enc.task == "classification":
        return Dataset.from_dict({"input_ids": enc.input_ids, "labels": enc.labels})
    return Dataset.from_dict({
        "input_ids": enc.input_ids, "labels": enc.labels,
        "attention_mask": [[1] * len(s) for s in enc.input_ids],
    })


def _pad_causal(pad_id: int, multiple: int) -> Any:
    """Right-pad input_ids/attention_mask/labels (-100) to the batch's longest row."""

    def collate(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        longest = -(-longest // multiple) * multiple
        out: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
        for f in features:
            gap = longest - len(f["input_ids"])
            out["input_ids"].append(list(f["input_ids"]) + [pad_id] * gap)
            out["attention_mask"].append([1] * len(f["input_ids"]) + [0] * gap)
            out["labels"].append(list(f["labels"]) + [-100] * gap)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}

    return collate
