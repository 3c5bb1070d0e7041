"""trainers/: real (tiny and MiniLM) models trained on CPU, nothing from a hub."""

from __future__ import annotations

import gc
import importlib
import json
import math
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from hpo_trainers import TRAINERS, full, lora  # noqa: E402
from hpo_trainers.config import parse_params, parse_target_modules  # noqa: E402
from hpo_trainers.data import load_task_data, synthetic_classification  # noqa: E402

from hpo.errors import TrainerError, TrialPruned  # noqa: E402
from hpo.trial import TrialContext  # noqa: E402

# one thread: these machines are small and shared, and OpenMP threads that wait for a busy
# core spin; every tiny trial below takes a few seconds
TINY_BERT = dict(
    model="tiny-bert", dataset="synthetic", task="classification", synthetic_size=1000,
    max_length=32, batch_size=16, max_steps=120, eval_every=30, lr_scheduler="constant",
    cpu_threads=1, seed=1,
)
TINY_LLAMA = dict(
    model="tiny-llama", dataset="synthetic", task="causal_lm", synthetic_size=800,
    max_length=48, batch_size=16, max_steps=60, eval_every=20, cpu_threads=1, seed=1,
)
LN4 = math.log(4)  # eval_loss of a uniform guess over the synthetic task's 4 topics


def run(trainer, params, **ctx_kwargs):
    ctx = TrialContext(params, objective="eval_loss", **ctx_kwargs)
    result = trainer.train(params, ctx)
    return ctx, result


def losses(ctx, key="eval_loss"):
    return [metrics[key] for _, metrics in ctx.history]


# -- training really learns ---------------------------------------------------------------------
def test_lora_tiny_bert_classification_learns():
    ctx, result = run(lora, {**TINY_BERT, "learning_rate": 1e-2})
    assert [step for step, _ in ctx.history] == [30, 60, 90, 120]
    ev = losses(ctx)
    assert ev[-1] < ev[0] - 0.05 and ev[-1] < LN4 - 0.1, ev
    assert result["eval_loss"] == ev[-1] and 0 <= result["accuracy"] <= 1
    assert result["accuracy"] > 0.35  # chance is 0.25
    a = ctx.attrs
    # LoRA r=8 on query+value of 2 layers (hidden 64) + the new 4-way head (modules_to_save)
    assert a["trainable_params"] == 2 * 2 * 8 * (64 + 64) + (64 * 4 + 4)
    assert a["trainable_fraction"] < 0.1
    assert a["target_modules"] == "query,value"
    assert a["device"] == "cpu" and a["dtype"] == "fp32"
    assert a["tokens_per_s"] > 0 and a["step_time_s"] > 0 and a["peak_memory_mb"] > 0


def test_full_tiny_bert_classification_learns():
    ctx, result = run(full, {**TINY_BERT, "learning_rate": 3e-3})
    ev = losses(ctx)
    assert len(ev) == 4 and ev[-1] < ev[0] - 0.1 and ev[-1] < LN4 - 0.2, ev
    assert result["accuracy"] > 0.45
    a = ctx.attrs
    assert a["trainable_params"] == a["total_params"] and a["trainable_fraction"] == 1.0
    assert a["total_params"] > 100_000


@pytest.mark.parametrize(
    "trainer, lr, extra",
    [(lora, 3e-2, {}), (full, 1e-2, {})],
    ids=["lora", "full"],
)
def test_tiny_llama_causal_lm_perplexity_falls(trainer, lr, extra):
    ctx, result = run(trainer, {**TINY_LLAMA, "learning_rate": lr, **extra})
    ppl = losses(ctx, "perplexity")
    assert [s for s, _ in ctx.history] == [20, 40, 60]
    # the synthetic LM has ~100 words: a uniform guess has perplexity ~100
    assert ppl[-1] < ppl[0] and ppl[-1] < 30, ppl
    assert result["perplexity"] == pytest.approx(math.exp(result["eval_loss"]))
    if trainer is lora:
        assert ctx.attrs["target_modules"] == "q_proj,v_proj"
        assert ctx.attrs["trainable_fraction"] < 0.1


def test_gradient_accumulation_schedule_and_epochs():
    params = {**TINY_BERT, "max_steps": None, "epochs": 1, "batch_size": 8,
              "gradient_accumulation_steps": 3, "eval_every": None, "lr_scheduler": "cosine",
              "warmup_ratio": 0.1, "weight_decay": 0.01, "max_grad_norm": 0.5,
              "learning_rate": "3e-3"}  # YAML reads 3e-3 as a string: accepted
    ctx, _ = run(full, params)
    n_train = ctx.attrs["train_examples"]
    steps = math.ceil(math.ceil(n_train / 8) / 3)
    assert ctx.attrs["total_steps"] == steps and ctx.history[-1][0] == steps
    assert len(ctx.history) in (5, 6)  # every steps // 5, plus the last step
    assert ctx.history[-1][1]["epoch"] == pytest.approx(1.0, abs=0.1)


# -- pruning ------------------------------------------------------------------------------------
def _live_models():
    gc.collect()
    from transformers import PreTrainedModel

    return sum(1 for o in gc.get_objects() if isinstance(o, PreTrainedModel))


@pytest.mark.parametrize("trainer", [lora, full], ids=["lora", "full"])
def test_pruning_stops_right_after_the_eval_and_frees_the_model(trainer):
    before = _live_models()
    params = {**TINY_BERT, "max_steps": 200, "eval_every": 10, "learning_rate": 1e-3}
    ctx = TrialContext(params, objective="eval_loss", prune_after_step=25)
    with pytest.raises(TrialPruned) as excinfo:
        trainer.train(params, ctx)
    assert [step for step, _ in ctx.history] == [10, 20, 30]  # first eval at step >= 25
    assert ctx.attrs["steps_done"] == 30 and ctx.attrs["total_steps"] == 200
    assert excinfo.value.__traceback__ is not None  # frames still alive, model is not
    assert _live_models() == before


# -- the packaged MiniLM ------------------------------------------------------------------------
def test_minilm_lora_end_to_end():
    from hpo_trainers.models import minilm_path

    assert (minilm_path() / "model.safetensors").is_file()
    params = dict(
        model="minilm", dataset="synthetic", synthetic_size=600, max_eval_examples=96,
        max_length=32, batch_size=16, max_steps=20, eval_every=10, learning_rate=5e-3,
        lora_r=8, lora_alpha=16, cpu_threads=1,
    )
    ctx, result = run(lora, params)
    ev = losses(ctx)
    assert ev[-1] < ev[0] < LN4 + 0.1, ev
    assert result["accuracy"] > 0.6
    assert ctx.attrs["total_params"] > 22_000_000
    assert ctx.attrs["trainable_fraction"] < 0.01


# -- checkpoints --------------------------------------------------------------------------------
def test_save_best_lora_adapter_loads_back_with_peft(tmp_path):
    from hpo_trainers.encode import encode
    from hpo_trainers.loop import evaluate
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    params = {**TINY_BERT, "max_steps": 60, "learning_rate": 1e-2, "save_best": True}
    ctx, result = run(lora, params, number=7, artifact_dir=tmp_path)
    path = tmp_path / "trial-7"
    assert ctx.attrs["artifact_path"] == str(path)
    assert (path / "adapter_config.json").is_file()
    assert (path / "adapter_model.safetensors").is_file()
    info = json.loads((path / "trainer.json").read_text())
    assert info["trainer"] == "lora" and info["label_names"] == ["sports", "food", "weather",
                                                                  "music"]
    base = AutoModelForSequenceClassification.from_pretrained(path / "base")
    model = PeftModel.from_pretrained(base, path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = load_task_data(parse_params(params, "lora"))
    evals = encode(data.eval, tokenizer, "classification", 32)
    again = evaluate(model, evals, 64, torch.device("cpu"), "fp32")
    assert again["accuracy"] == pytest.approx(result["accuracy"])
    assert again["eval_loss"] == pytest.approx(result["eval_loss"], rel=1e-4)


def test_save_best_full_model_loads_back(tmp_path):
    from transformers import AutoModelForSequenceClassification

    params = {**TINY_BERT, "max_steps": 10, "eval_every": 10, "learning_rate": 1e-3,
              "save_best": True}
    ctx, _ = run(full, params, artifact_dir=tmp_path)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "trial-0")
    assert model.config.id2label[2] == "weather"
    assert ctx.attrs["artifact_path"] == str(tmp_path / "trial-0")


# -- data files ---------------------------------------------------------------------------------
def test_csv_with_string_labels_and_custom_columns(tmp_path):
    rows = synthetic_classification(300, seed=3)
    names = ["sports", "food", "weather", "music"]
    path = tmp_path / "reviews.csv"
    lines = ["sentence,topic"] + [f"{r['text']},{names[r['label']]}" for r in rows]
    path.write_text("\n".join(lines) + "\n")
    params = {**TINY_BERT, "dataset": str(path), "text_column": "sentence",
              "label_column": "topic", "max_steps": 10, "eval_every": 5, "learning_rate": 1e-3}
    ctx, result = run(full, params)
    assert ctx.attrs["train_examples"] == 270 and ctx.attrs["eval_examples"] == 30
    assert "accuracy" in result
    data = load_task_data(parse_params(params, "full"))
    assert data.label_names == sorted(names)


def test_jsonl_prompt_completion_causal_lm(tmp_path):
    train = tmp_path / "train.jsonl"
    evals = tmp_path / "eval.jsonl"
    people = ["anna", "ben", "carl", "dora", "emma", "frank"]
    food = ["soup", "rice", "bread", "cheese", "pasta", "salad"]
    make = [{"prompt": f"what does {p} eat ?", "completion": f"{p} eats {f} ."}
            for p, f in zip(people, food, strict=True)]
    train.write_text("".join(json.dumps(r) + "\n" for r in make * 20))
    evals.write_text("".join(json.dumps(r) + "\n" for r in make))
    params = {**TINY_LLAMA, "dataset": str(train), "eval_dataset": str(evals), "max_steps": 20,
              "eval_every": 10, "learning_rate": 1e-2}
    ctx, result = run(full, params)
    assert ctx.attrs["eval_examples"] == 6
    ppl = losses(ctx, "perplexity")
    assert ppl[-1] < ppl[0]


def test_synthetic_data_is_deterministic_and_split_stably():
    assert synthetic_classification(50, seed=0) == synthetic_classification(50, seed=0)
    assert synthetic_classification(50, seed=0) != synthetic_classification(50, seed=1)
    cfg = parse_params({"model": "tiny-bert", "dataset": "synthetic", "synthetic_size": 200},
                       "lora")
    a, b = load_task_data(cfg), load_task_data(cfg)
    assert a.train == b.train and a.eval == b.eval and len(a.eval) == 20
    # the trial seed does not move data: every trial of a sweep sees the same split
    other = load_task_data(parse_params({**cfg.__dict__, "seed": 99}, "lora"))
    assert other.eval == a.eval


# -- bad inputs ---------------------------------------------------------------------------------
def _error(trainer, **overrides):
    params = {**TINY_BERT, "max_steps": 2, "eval_every": 1, **overrides}
    with pytest.raises(TrainerError) as excinfo:
        run(trainer, params)
    return str(excinfo.value)


def test_missing_dataset_file_names_the_file(tmp_path):
    missing = tmp_path / "nope.jsonl"
    msg = _error(lora, dataset=str(missing))
    assert "not found" in msg and "nope.jsonl" in msg


def test_missing_label_column_lists_the_columns(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"text": f"row {i}", "sentiment": i % 2}) + "\n"
                            for i in range(20)))
    msg = _error(lora, dataset=str(path))
    assert "'label'" in msg and "text, sentiment" in msg and "label_column" in msg
    msg = _error(lora, dataset=str(path), label_column="sentiment", text_column="body")
    assert "'body'" in msg and "text_column" in msg


def test_target_modules_matching_nothing_lists_linear_layers():
    msg = _error(lora, target_modules=["q_proj", "value"])
    assert "q_proj" in msg and "match no module" in msg
    assert "query" in msg and "dense" in msg  # the modules that do exist


def test_unknown_task_and_unknown_parameter():
    assert "unknown task 'regression'" in _error(lora, task="regression")
    msg = _error(full, learning_rat=1e-3)
    assert "learning_rat" in msg and "unknown parameter" in msg
    assert "lora_r" in _error(full, lora_r=8)  # a LoRA-only knob given to the full trainer


def test_quantization_without_gpu_or_bitsandbytes_is_refused():
    msg = _error(lora, model="minilm", quantization="4bit")
    assert "quantization" in msg and "CUDA" in msg


def test_unknown_model_folder_and_missing_model():
    assert "not found" in _error(full, model="./no/such/model")
    assert "trainer_args.model" in _error(full, model=None)


# -- parameter plumbing -------------------------------------------------------------------------
def test_target_modules_accepts_a_categorical_of_lists():
    assert parse_target_modules(["query", "value"]) == ["query", "value"]
    assert parse_target_modules("query,value") == ["query", "value"]
    assert parse_target_modules("query+key+value") == ["query", "key", "value"]
    assert parse_target_modules("['q_proj', 'v_proj']") == ["q_proj", "v_proj"]
    assert parse_target_modules("all-linear") == "all-linear"
    assert parse_target_modules(".*attention.*(query|value)") == ".*attention.*(query|value)"


def test_registry_points_at_the_trainers():
    for name, ref in TRAINERS.items():
        module, _, attr = ref.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), name


@pytest.mark.parametrize("name", ["linear", "cosine", "cosine_with_restarts", "polynomial",
                                  "constant", "constant_with_warmup", "inverse_sqrt",
                                  "cosine_with_min_lr", "warmup_stable_decay"])
def test_every_lr_scheduler_builds_and_warms_up(name):
    from hpo_trainers.loop import make_scheduler

    cfg = parse_params({"model": "tiny-bert", "dataset": "synthetic", "lr_scheduler": name,
                        "warmup_ratio": 0.2, "learning_rate": 1e-3}, "lora")
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    sched = make_scheduler(opt, cfg, 20)
    lrs = []
    for _ in range(20):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert all(math.isfinite(x) and 0 <= x <= 1e-3 + 1e-12 for x in lrs)
    if name != "constant":
        assert lrs[0] < 1e-3  # warming up


def test_precision_choices_on_cpu():
    assert "fp16 needs a CUDA device" in _error(lora, precision="fp16")
    ctx, result = run(lora, {**TINY_BERT, "precision": "bf16", "max_steps": 4, "eval_every": 2,
                             "learning_rate": 1e-3})
    assert ctx.attrs["dtype"] == "bf16" and math.isfinite(result["eval_loss"])


@pytest.mark.parametrize("trainer", [lora, full], ids=["lora", "full"])
def test_paused_trial_resumes_batch_for_batch(trainer, tmp_path):
    """A trial stopped at step 60 under a pausing ASHA and resumed from its checkpoint ends
    with the metrics of the same trial run without stopping."""
    params = dict(TINY_LLAMA, learning_rate=3e-3)
    _, whole = run(trainer, params)
    paused = TrialContext(params, objective="eval_loss", number=0, sweep="s",
                          artifact_dir=tmp_path, prune_after_step=20)
    paused.pausing = True
    with pytest.raises(TrialPruned):
        trainer.train(params, paused)
    assert (tmp_path / "trial-0" / "checkpoint" / "LATEST").exists()
    resumed = TrialContext(params, objective="eval_loss", number=1, sweep="s",
                           artifact_dir=tmp_path, resume_of=0)
    assert resumed.resume_step == 20
    result = trainer.train(params, resumed)
    assert [step for step, _ in resumed.history] == [40, 60]
    assert result["eval_loss"] == pytest.approx(whole["eval_loss"], rel=1e-5)
