"""hpo_trainers.lora vs. a plain transformers ``Trainer`` + peft on the same model, data and steps.

Both fine-tune LoRA (r=8, alpha=16, query+value) on the packaged all-MiniLM-L6-v2 for the
synthetic 4-topic classification task, same batch size, max_length, learning rate, schedule,
clipping and number of optimizer steps, and then evaluate once on the same eval set. Reported:
training-phase step time and tokens/s (non-padding tokens / training time, evaluation excluded),
the whole call's wall time (model load, tokenization, training, evaluation) and the final eval
metrics, so a faster loop that learned less would show. Runs alternate (ours, HF, ours, HF...)
and the median of ``--repeats`` is shown.

    python benchmarks/bench_lora_trainer.py [--steps 40] [--batch 16] [--max-length 32]
                                            [--threads 1] [--repeats 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from hpo_trainers import lora  # noqa: E402
from hpo_trainers.config import parse_params  # noqa: E402
from hpo_trainers.data import load_task_data  # noqa: E402
from hpo_trainers.models import minilm_path, quiet_transformers  # noqa: E402

from hpo.trial import TrialContext  # noqa: E402


def params(args: argparse.Namespace) -> dict:
    return dict(
        model="minilm", dataset="synthetic", task="classification", synthetic_size=1200,
        max_eval_examples=200, max_length=args.max_length, batch_size=args.batch,
        eval_batch_size=64, max_steps=args.steps, eval_every=args.steps,
        learning_rate=2e-3, lr_scheduler="linear", warmup_ratio=0.0, weight_decay=0.0,
        max_grad_norm=1.0, lora_r=8, lora_alpha=16, lora_dropout=0.05,
        target_modules=["query", "value"], seed=42, cpu_threads=args.threads,
        precision="fp32",
    )


def run_ours(args: argparse.Namespace) -> dict:
    p = params(args)
    ctx = TrialContext(p, objective="eval_loss", device=args.device)
    start = time.perf_counter()
    result = lora.train(p, ctx)
    wall = time.perf_counter() - start
    a = ctx.attrs
    return dict(
        step_time_s=a["step_time_s"], tokens_per_s=a["tokens_per_s"],
        train_s=a["step_time_s"] * a["steps_done"], wall_s=wall,
        eval_loss=result["eval_loss"], accuracy=result["accuracy"],
        trainable=a["trainable_params"],
    )


def run_hf(args: argparse.Namespace) -> dict:
    """The peer: AutoModel + get_peft_model + Trainer, the way the docs show it."""
    import datasets
    import numpy as np
    from datasets import Dataset
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    p = params(args)
    datasets.disable_progress_bars()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    data = load_task_data(parse_params(p, "lora"))  # same rows and split as ours
    source = str(minilm_path())
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=data.num_labels, dtype=torch.float32
        )
    torch.manual_seed(p["seed"])
    model = get_peft_model(model, LoraConfig(
        task_type=TaskType.SEQ_CLS, r=p["lora_r"], lora_alpha=p["lora_alpha"],
        lora_dropout=p["lora_dropout"], target_modules=p["target_modules"],
    ))

    def tokenize(batch):
        return tokenizer(batch["text"], truncation=True, max_length=p["max_length"])

    train_ds = Dataset.from_list(data.train).map(tokenize, batched=True, remove_columns=["text"])
    eval_ds = Dataset.from_list(data.eval).map(tokenize, batched=True, remove_columns=["text"])
    collate = DataCollatorWithPadding(tokenizer)
    seen = {"tokens": 0}

    def counting_collator(features):
        batch = collate(features)
        seen["tokens"] += int(batch["attention_mask"].sum())
        return batch

    def accuracy(pred):
        return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}

    targs = TrainingArguments(
        output_dir="/tmp/bench_lora_hf", per_device_train_batch_size=p["batch_size"],
        per_device_eval_batch_size=p["eval_batch_size"], max_steps=p["max_steps"],
        learning_rate=p["learning_rate"], lr_scheduler_type=p["lr_scheduler"],
        warmup_steps=p["warmup_ratio"],  # transformers 5: a float < 1 is a ratio
        weight_decay=p["weight_decay"],
        max_grad_norm=p["max_grad_norm"], eval_strategy="no", save_strategy="no",
        logging_strategy="no", report_to="none", disable_tqdm=True, seed=p["seed"],
        use_cpu=args.device == "cpu", dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model, args=targs, train_dataset=train_ds, eval_dataset=eval_ds,
        data_collator=counting_collator, processing_class=tokenizer, compute_metrics=accuracy,
    )
    t0 = time.perf_counter()
    trainer.train()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    tokens = seen["tokens"]
    metrics = trainer.evaluate()
    wall = time.perf_counter() - start
    return dict(
        step_time_s=train_s / p["max_steps"], tokens_per_s=tokens / train_s, train_s=train_s,
        wall_s=wall, eval_loss=metrics["eval_loss"], accuracy=metrics["eval_accuracy"],
        trainable=model.get_nb_trainable_parameters()[0],
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    runs: dict[str, list[dict]] = {"hpo_trainers.lora": [], "HF Trainer + peft": []}
    run_hf(argparse.Namespace(**{**vars(args), "steps": 2}))  # warm imports/caches, untimed
    for _ in range(args.repeats):
        runs["hpo_trainers.lora"].append(run_ours(args))
        runs["HF Trainer + peft"].append(run_hf(args))

    print(f"\nLoRA on all-MiniLM-L6-v2, synthetic 4-topic classification, {args.steps} steps, "
          f"batch {args.batch}, max_length {args.max_length}, device {args.device}, "
          f"{args.threads} thread(s), median of {args.repeats}")
    cols = ("step_time_s", "tokens_per_s", "train_s", "wall_s", "eval_loss", "accuracy",
            "trainable")
    print(f"{'':20s}" + "".join(f"{c:>14s}" for c in cols))
    med = {}
    for name, results in runs.items():
        med[name] = {c: statistics.median(r[c] for r in results) for c in cols}
        print(f"{name:20s}" + "".join(_fmt(med[name][c]) for c in cols))
    ours, peer = med["hpo_trainers.lora"], med["HF Trainer + peft"]
    speed = ours["tokens_per_s"] / peer["tokens_per_s"]
    print(f"\nratio hpo_trainers.lora / HF Trainer: tokens/s x{speed:.2f}, "
          f"step time x{ours['step_time_s'] / peer['step_time_s']:.2f}, "
          f"wall time x{ours['wall_s'] / peer['wall_s']:.2f}")


def _fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:14.1f}"
    return f"{value:14.4f}"


if __name__ == "__main__":
    main()
