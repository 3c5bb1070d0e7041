"""One prepared GPU check of hpo's trainers and its Ray GPU placement; prints a table.

    benchmarks/gpu_check.sh [--dry-run] [--sections a,b,c] [--json results.json]

Sections, all measured in the same run:

(a) ``hpo_trainers.lora`` vs a plain transformers ``Trainer`` + peft (benchmarks/gpu_check_peer.py)
    on the packaged all-MiniLM-L6-v2 (synthetic 4-topic classification) and on a Llama-style
    causal LM built from a config (about 0.19 B parameters, random weights, nothing downloaded;
    synthetic text packed into full blocks): same model, batch, sequence length, steps and bf16
    autocast. Step time, tokens/s (real tokens / training time) and peak CUDA memory.
(b) ``hpo_trainers.full`` vs the plain Trainer on the same two models.
(c) A sweep on the Ray backend through ``hpo.run_sweep(..., backend="ray")``: 8 LoRA trials of
    the causal LM (longer than in (a), so that trials overlap despite staggered starts) with
    ``resources: {gpu: 0.25}`` (at most 4 at once on one GPU); their overlap, aggregate tokens/s
    over the union of their training windows against one trial alone (the (a) run, same model,
    batch and length), peak memory per trial, and GPU utilisation sampled over the sweep.
(d) The ``device`` each trial recorded: the tracking store's placement column and the torch
    device the trainer used, as ``hpo trials NAME --format json`` returns them.

``--dry-run`` runs the same code on the CPU at toy sizes (the built-in tiny models, a few
steps, fp32; the sweep asks Ray for CPUs instead of GPU fractions): a smoke test of the whole
check that the test suite runs. Goals on a GPU: ``hpo_trainers.lora`` at least 1.0x the plain
Trainer's tokens/s, and 4 fractional trials together at least 2.5x the throughput of one.
A section that fails is reported and the others still run; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# a Llama-style decoder of about 0.19 B parameters (16 x 11.8 M per layer)
LM_CONFIG = dict(
    hidden_size=1024, num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=8,
    intermediate_size=2816, max_position_embeddings=1024, initializer_range=0.02,
)


def profile(dry_run: bool) -> dict[str, Any]:
    """Trainer params per model and the sweep's shape, for the GPU or the CPU dry run."""
    if dry_run:
        common = dict(precision="fp32", cpu_threads=1, seed=0, max_eval_examples=32,
                      eval_batch_size=32, lr_scheduler="linear")
        minilm = dict(common, model="minilm", task="classification", dataset="synthetic",
                      synthetic_size=200, max_length=32, batch_size=8, max_steps=3)
        lm = dict(common, model="tiny-llama", task="causal_lm", dataset="synthetic",
                  synthetic_size=300, packing=True, max_length=64, batch_size=4, max_steps=3)
        # toy: 4 trials, 2 at once (4 Ray workers importing torch on 2 cores cost ~15 s)
        sweep = dict(trials=4, parallel=2, resources={"cpu": 1, "gpu": 0}, ray_cpus=2, steps=12)
        device = "cpu"
    else:
        common = dict(precision="bf16", seed=0, max_eval_examples=128, eval_batch_size=64,
                      lr_scheduler="linear")
        minilm = dict(common, model="minilm", task="classification", dataset="synthetic",
                      synthetic_size=4000, max_length=128, batch_size=32, max_steps=100)
        lm = dict(common, model="tiny-llama", model_config=LM_CONFIG, task="causal_lm",
                  dataset="synthetic", synthetic_size=20000, packing=True, max_length=512,
                  batch_size=8, max_steps=100)
        cpus = os.cpu_count() or 8
        # trials long enough (in steps) that 4 of them train at once despite staggered starts
        sweep = dict(trials=8, parallel=4, resources={"cpu": max(1, min(4, cpus // 4)),
                                                      "gpu": 0.25}, ray_cpus=cpus, steps=300)
        device = "cuda:0"
    for p in (minilm, lm):
        p["eval_every"] = p["max_steps"]  # one evaluation, at the end (not timed)
    sweep["params"] = dict(lm, max_steps=sweep["steps"], eval_every=sweep["steps"])
    return {"minilm": minilm, "lm": lm, "sweep": sweep, "device": device}


# -- runs ---------------------------------------------------------------------------------------
def run_ours(trainer: str, params: dict[str, Any], device: str) -> dict[str, Any]:
    """One trial of trainers.<trainer> in this process; the figures it recorded."""
    from hpo_trainers import full, lora

    from hpo.trial import TrialContext

    module = lora if trainer == "lora" else full
    ctx = TrialContext(params, objective="eval_loss", device=device)
    result = module.train(params, ctx)
    a = ctx.attrs
    return {
        "step_time_s": a["step_time_s"], "tokens_per_s": a["tokens_per_s"],
        "peak_memory_mb": a["peak_memory_mb"] if device.startswith("cuda") else None,
        "eval_loss": result["eval_loss"], "trainable_params": a["trainable_params"],
        "total_params": a["total_params"], "steps": a["steps_done"], "device": a["device"],
        "dtype": a["dtype"], "library_warnings": a.get("library_warnings_total", 0),
    }


def compare(trainer: str, prof: dict[str, Any]) -> list[dict[str, Any]]:
    """trainers.<trainer> and the plain Trainer on both models, alternating."""
    from benchmarks.gpu_check_peer import run_hf

    rows = []
    for model_key in ("minilm", "lm"):
        params = dict(prof[model_key])
        if trainer == "full":
            params.setdefault("learning_rate", 5e-5)
        ours = run_ours(trainer, params, prof["device"])
        peer = run_hf(params, trainer, prof["device"])
        for who, r in ((f"hpo_trainers.{trainer}", ours), (_peer_name(trainer), peer)):
            rows.append({"trainer": who, "model": _model_name(params), **r})
        rows[-2]["vs_peer"] = ours["tokens_per_s"] / peer["tokens_per_s"]
    return rows


def warm_up(prof: dict[str, Any]) -> None:
    """Untimed: CUDA context, kernels and imports, so neither side pays them in its numbers."""
    from benchmarks.gpu_check_peer import run_hf

    for key in ("minilm", "lm"):
        params = dict(prof[key], max_steps=2, eval_every=2, max_eval_examples=8)
        run_ours("lora", params, prof["device"])
        if key == "minilm":
            run_hf(params, "lora", prof["device"])


def sweep(prof: dict[str, Any], solo: dict[str, Any] | None, workdir: Path) -> dict[str, Any]:
    from benchmarks.gpu_check_sweep import run_ray_sweep

    shape = prof["sweep"]
    out = run_ray_sweep(shape["params"], trials=shape["trials"], parallel=shape["parallel"],
                        resources=shape["resources"], ray_cpus=shape["ray_cpus"],
                        workdir=workdir)
    if solo:
        out["solo_tokens_per_s"] = solo["tokens_per_s"]
        out["vs_solo"] = out["aggregate_tokens_per_s"] / solo["tokens_per_s"]
    return out


# -- tables -------------------------------------------------------------------------------------
def _peer_name(trainer: str) -> str:
    return "HF Trainer + peft" if trainer == "lora" else "HF Trainer"


def _model_name(params: dict[str, Any]) -> str:
    if params["model"] == "minilm":
        return "all-MiniLM-L6-v2 (cls)"
    size = "0.19B" if params.get("model_config") else "tiny"
    return f"llama {size} (clm, packed {params['max_length']})"


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(rows: list[dict[str, Any]], cols: list[tuple[str, str, int]]) -> str:
    """A markdown table; ``cols`` are (key, header, decimals)."""
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |",
             "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k), d) for k, _, d in cols) + " |")
    return "\n".join(lines)


TRAIN_COLS = [("trainer", "trainer", 0), ("model", "model", 0), ("total_m", "params (M)", 1),
              ("trainable_m", "trainable (M)", 2), ("step_ms", "step (ms)", 1),
              ("tokens_per_s", "tokens/s", 0), ("peak_memory_mb", "peak MiB", 0),
              ("eval_loss", "eval loss", 3), ("vs_peer", "tokens/s vs peer", 2)]


def _train_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "total_m": r["total_params"] / 1e6, "trainable_m": r["trainable_params"] / 1e6,
             "step_ms": r["step_time_s"] * 1000} for r in rows]


def sweep_report(s: dict[str, Any]) -> str:
    ov, gpu = s["overlap"], s["gpu"]
    t0 = min((r["attrs"]["train_window"][0] for r in s["trials"]
              if r["attrs"].get("train_window") and r["attrs"]["train_window"][0]), default=0.0)
    rows = []
    for r in s["trials"]:
        a = r.get("attrs") or {}
        w = a.get("train_window") or [None, None]
        rows.append({
            "number": r["number"], "state": r["state"], "placement": r.get("device"),
            "torch_device": a.get("device"), "dtype": a.get("dtype"),
            "lr": (r.get("params") or {}).get("learning_rate"),
            "tokens_per_s": a.get("tokens_per_s"), "peak_memory_mb": a.get("peak_memory_mb"),
            "start_s": w[0] - t0 if w[0] else None,
            "train_s": w[1] - w[0] if w[0] and w[1] else None,
            "warnings": a.get("library_warnings_total", 0),
        })
    head = [
        f"trials: {s['counts']}, sweep wall {s['wall_s']:.1f} s, resources {s['resources']}, "
        f"{s['gpus']} GPU(s) given to Ray",
        f"overlap: at most {ov['max_concurrent']} training at once, mean "
        f"{ov['mean_concurrent']:.2f} while any trained, training span {ov['union_s']:.1f} s",
        f"aggregate {s['aggregate_tokens_per_s']:,.0f} tokens/s"
        + (f" vs one trial alone {s['solo_tokens_per_s']:,.0f} tokens/s: "
           f"x{s['vs_solo']:.2f}" if "vs_solo" in s else ""),
        "GPU over the sweep: " + (
            f"utilisation mean {gpu['util_mean']:.0f}%, max {gpu['util_max']:.0f}%, memory used "
            f"max {gpu['memory_max_mb']:,.0f} MiB ({gpu['samples']} samples, {gpu['source']})"
            if gpu["samples"] else f"no samples ({gpu['source']})"),
    ]
    cols = [("number", "trial", 0), ("state", "state", 0), ("placement", "device (placement)", 0),
            ("torch_device", "torch device", 0), ("dtype", "dtype", 0), ("lr", "lr", 5),
            ("tokens_per_s", "tokens/s", 0), ("peak_memory_mb", "peak MiB", 0),
            ("start_s", "train start (s)", 1), ("train_s", "train (s)", 1),
            ("warnings", "library warnings", 0)]
    return "\n".join(head) + "\n\n" + table(rows, cols)


def environment(device: str) -> str:
    import peft
    import torch
    import transformers

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.node()}, {os.cpu_count()} CPUs, {gpu}; Python "
            f"{platform.python_version()}, torch {torch.__version__}, transformers "
            f"{transformers.__version__}, peft {peft.__version__}; device {device}")


# -- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, toy sizes, a smoke test")
    ap.add_argument("--sections", default="a,b,c", help="any of a,b,c (d comes with c)")
    ap.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = ap.parse_args(argv)
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    started = time.perf_counter()

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA GPU here: run with --dry-run for the CPU smoke test", file=sys.stderr)
        return 2
    prof = profile(args.dry_run)
    mode = "DRY RUN (CPU, toy sizes: figures are not GPU figures)" if args.dry_run else "GPU"
    print(f"# gpu_check: {mode}\n{environment(prof['device'])}\n", flush=True)
    results: dict[str, Any] = {"dry_run": args.dry_run, "profile": prof, "errors": {}}

    def save() -> None:  # after every section: a run killed by the time limit keeps the rest
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")

    def section(key: str, title: str, fn: Any) -> Any:
        t0 = time.perf_counter()
        print(f"## ({key}) {title}", flush=True)
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - report it, go on with the other sections
            results["errors"][key] = f"{type(exc).__name__}: {exc}"
            print(f"FAILED: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}",
                  flush=True)
            save()
            return None
        print(f"({time.perf_counter() - t0:.1f} s)\n", flush=True)
        return value

    if sections & {"a", "b"}:
        section("warm-up", "untimed warm-up", lambda: warm_up(prof))
    lora_rows = full_rows = None
    if "a" in sections:
        lora_rows = section("a", "LoRA: hpo_trainers.lora vs HF Trainer + peft",
                            lambda: compare("lora", prof))
        if lora_rows:
            print(table(_train_rows(lora_rows), TRAIN_COLS) + "\n")
            results["lora"] = lora_rows
            save()
    if "b" in sections:
        full_rows = section("b", "full fine-tuning: hpo_trainers.full vs HF Trainer",
                            lambda: compare("full", prof))
        if full_rows:
            print(table(_train_rows(full_rows), TRAIN_COLS) + "\n")
            results["full"] = full_rows
            save()
    if "c" in sections:
        solo = next((r for r in lora_rows or [] if r["trainer"] == "hpo_trainers.lora"
                     and r["model"] == _model_name(prof["lm"])), None)
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            shape = prof["sweep"]
            out = section(
                "c", f"Ray sweep: {shape['trials']} LoRA trials, resources "
                f"{shape['resources']}, parallel {shape['parallel']}; (d) devices recorded",
                lambda: sweep(prof, solo, Path(tmp)))
        if out:
            print(sweep_report(out) + "\n")
            results["sweep"] = out
    goals(results, args.dry_run)
    wall = time.perf_counter() - started
    results["wall_s"] = wall
    print(f"total wall time {wall:.1f} s")
    save()
    if results["errors"]:
        print(f"sections failed: {', '.join(results['errors'])}", file=sys.stderr)
        return 1
    return 0


def goals(results: dict[str, Any], dry_run: bool) -> None:
    """The issue's two goals, PASS/MISS (not meaningful in a dry run)."""
    note = " (dry run: CPU toy sizes, not meaningful)" if dry_run else ""
    lines = []
    for r in results.get("lora", []):
        if "vs_peer" in r:
            ok = r["vs_peer"] >= 1.0
            lines.append(f"hpo_trainers.lora >= 1.0x HF Trainer tokens/s on {r['model']}: "
                         f"x{r['vs_peer']:.2f} {'PASS' if ok else 'MISS'}")
    s = results.get("sweep")
    if s and "vs_solo" in s:
        ok = s["vs_solo"] >= 2.5
        lines.append(f"{s['overlap']['max_concurrent']} fractional trials >= 2.5x one trial's "
                     f"tokens/s: x{s['vs_solo']:.2f} {'PASS' if ok else 'MISS'}")
    if lines:
        print(f"## goals{note}\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
