"""The one training loop both trainers share: plain torch, no HF Trainer.

The trial's optimizer (``hpo_trainers.optimizers``; no decay on biases and norms), a transformers
schedule with ``warmup_ratio``, gradient accumulation, ``max_grad_norm`` clipping, autocast
(bf16/fp16) with a GradScaler for fp16, and an evaluation every ``eval_every`` optimizer steps
(and at the end) reported to the trial with ``step`` = optimizer steps done. ``ctx.report``
raising ``TrialPruned`` ends the loop at once. Under a pausing ASHA (``ctx.pausing``) the
state is saved before each report and a resumed trial (``ctx.resume_of``) continues from it,
batch for batch as if it had not stopped. The training window's wall-clock start and end are
kept in ``LoopStats`` (for measuring how trials overlap on a shared GPU).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from hpo.errors import TrainerError

from .config import TrainConfig
from .device import autocast, synchronize
from .encode import IGNORE, Encoded
from .optimizers import make_optimizer


@dataclass
class LoopStats:
    """What the loop measured so far (kept up to date, so a pruned trial has it too)."""

    steps: int = 0
    total_steps: int = 0
    train_time_s: float = 0.0
    train_tokens: int = 0
    examples_seen: int = 0
    window_start: float | None = None  # time.time() when training began
    window_end: float | None = None  # time.time() at the last optimizer step
    last_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.train_tokens / self.train_time_s if self.train_time_s > 0 else 0.0

    @property
    def step_time_s(self) -> float:
        return self.train_time_s / self.steps if self.steps else 0.0


def total_steps(cfg: TrainConfig, n_train: int) -> int:
    if cfg.max_steps:
        return cfg.max_steps
    batches_per_epoch = math.ceil(n_train / cfg.batch_size)
    return max(1, math.ceil(cfg.epochs * batches_per_epoch / cfg.gradient_accumulation_steps))


def make_scheduler(optimizer: Any, cfg: TrainConfig, steps: int) -> Any:
    from transformers import get_scheduler

    warmup = math.ceil(cfg.warmup_ratio * steps)
    extra: dict[str, Any] | None = None
    if cfg.lr_scheduler == "cosine_with_min_lr":
        extra = {"min_lr_rate": 0.1}
    elif cfg.lr_scheduler == "warmup_stable_decay":
        extra = {"num_decay_steps": max(1, (steps - warmup) // 5)}
    return get_scheduler(
        cfg.lr_scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=steps,
        scheduler_specific_kwargs=extra,
    )


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train_loop(
    model: torch.nn.Module,
    train: Encoded,
    evals: Encoded,
    cfg: TrainConfig,
    ctx: Any,
    device: torch.device,
    precision: str,
    stats: LoopStats,
) -> dict[str, float]:
    """Train ``model`` for the configured steps; return the last evaluation's metrics."""
    steps = total_steps(cfg, len(train))
    stats.total_steps = steps
    ctx.set_max_step(steps)  # the last report's step: ASHA sets its rungs without waiting
    eval_every = cfg.eval_every or max(1, steps // 5)
    accum = cfg.gradient_accumulation_steps
    optimizer = make_optimizer(model, cfg, device)
    scheduler = make_scheduler(optimizer, cfg, steps)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    trainable = [p for p in model.parameters() if p.requires_grad]
    stream = train.shuffled_batches(cfg.batch_size, cfg.seed)
    loss_sum = torch.zeros((), device=device)
    loss_count = 0
    loss = batch = None
    if getattr(ctx, "resume_of", None) is not None:
        _restore(ctx.load_checkpoint(), model, optimizer, scheduler, scaler, stream, stats,
                 accum)
    try:
        model.train()
        synchronize(device)
        started = time.perf_counter()
        stats.window_start = time.time()
        while stats.steps < steps:
            for _ in range(accum):
                idx = next(stream)
                stats.train_tokens += train.n_tokens(idx)
                stats.examples_seen += len(idx)
                batch = _to(train.batch(idx), device)
                with autocast(device, precision):
                    loss = model(**batch).loss
                scaler.scale(loss / accum).backward()
                loss_sum += loss.detach().float()
                loss_count += 1
            if cfg.max_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            stats.steps += 1
            if stats.steps % eval_every and stats.steps != steps:
                continue
            synchronize(device)
            stats.window_end = time.time()
            stats.train_time_s += time.perf_counter() - started
            train_loss = (loss_sum / max(loss_count, 1)).item()
            if not math.isfinite(train_loss):
                raise TrainerError(
                    f"training diverged: train loss is {train_loss} at step {stats.steps} "
                    f"(learning_rate={cfg.learning_rate:g}); lower learning_rate or max_grad_norm"
                )
            metrics = evaluate(model, evals, cfg.eval_bs, device, precision)
            metrics["train_loss"] = train_loss
            metrics["learning_rate"] = float(scheduler.get_last_lr()[0])
            metrics["epoch"] = stats.examples_seen / len(train)
            stats.last_metrics = metrics
            loss_sum.zero_()
            loss_count = 0
            if getattr(ctx, "pausing", False):  # a pausing ASHA may stop it here: resumable
                ctx.save_checkpoint(_state(model, optimizer, scheduler, scaler, stats),
                                    step=stats.steps)
            ctx.report(metrics, stats.steps)  # raises TrialPruned when the pruner says stop
            model.train()
            synchronize(device)
            started = time.perf_counter()
        return dict(stats.last_metrics)
    finally:
        # drop every reference this frame holds: a TrialPruned traceback keeps frames alive
        optimizer.zero_grad(set_to_none=True)
        # (a loss tensor's grad_fn chain reaches the parameters through AccumulateGrad nodes)
        del optimizer, scheduler, scaler, trainable, stream, loss, batch
        model = None  # noqa: F841


def _cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def _state(model: torch.nn.Module, optimizer: Any, scheduler: Any, scaler: Any,
           stats: LoopStats) -> dict[str, Any]:
    """What resuming needs: the trained weights (the adapter, or the whole model for full
    fine-tuning), optimizer, schedule, scaler and RNG state, and where the loop was."""
    return {
        "weights": {n: p.detach().cpu().clone() for n, p in model.named_parameters()
                    if p.requires_grad},
        "optimizer": _cpu(optimizer.state_dict()),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": torch.get_rng_state(),
        "steps": stats.steps, "examples_seen": stats.examples_seen,
        "train_tokens": stats.train_tokens,
    }


def _restore(state: Any, model: torch.nn.Module, optimizer: Any, scheduler: Any, scaler: Any,
             stream: Any, stats: LoopStats, accum: int) -> None:
    """Continue where a paused trial stopped (nothing saved: start from step 0)."""
    if not isinstance(state, dict) or "weights" not in state:
        return
    params = dict(model.named_parameters())
    missing = [n for n in state["weights"] if n not in params]
    if missing:
        raise TrainerError(f"the checkpoint to resume from does not fit this model "
                           f"(no parameter {missing[0]!r}); was the model changed?")
    with torch.no_grad():
        for name, value in state["weights"].items():
            params[name].copy_(value.to(params[name].device))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    for _ in range(state["steps"] * accum):  # the same batches as an uninterrupted run
        next(stream)
    stats.steps = state["steps"]
    stats.examples_seen = state["examples_seen"]
    stats.train_tokens = state["train_tokens"]


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, data: Encoded, batch_size: int, device: torch.device, precision: str
) -> dict[str, float]:
    """``eval_loss`` (mean over examples, or over target tokens for causal LM) plus
    ``accuracy`` (classification) or ``perplexity`` (causal LM)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    count = 0
    causal = data.task == "causal_lm"
    try:
        for idx in data.eval_batches(batch_size):
            batch = _to(data.batch(idx), device)
            labels = batch.pop("labels")
            with autocast(device, precision):
                logits = model(**batch).logits
            logits = logits.float()
            if causal:
                targets = labels[:, 1:]
                loss_sum += F.cross_entropy(
                    logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=IGNORE,
                    reduction="sum",
                ).double()
                count += int((targets != IGNORE).sum())
            else:
                loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
                correct += (logits.argmax(-1) == labels).sum()
                count += len(idx)
    finally:
        model.train(was_training)
    eval_loss = float(loss_sum.item()) / max(count, 1)
    if causal:
        return {"eval_loss": eval_loss, "perplexity": math.exp(eval_loss) if eval_loss < 700
                else math.inf}
    return {"eval_loss": eval_loss, "accuracy": float(correct.item()) / max(count, 1)}
