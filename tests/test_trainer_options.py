"""Fine-tuning options of the lora/full trainers, each checked for a real effect on CPU.

Tiny models built from a config, a handful of steps, one thread: every test is a few seconds.
GPU-only paths (8-bit AdamW, bf16 on CUDA) are skipped without a GPU.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import warnings

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from hpo_trainers import full, lora  # noqa: E402
from hpo_trainers.capture import library_output  # noqa: E402
from hpo_trainers.config import parse_params  # noqa: E402
from hpo_trainers.data import load_task_data  # noqa: E402
from hpo_trainers.device import device_name, resolve_device  # noqa: E402
from hpo_trainers.encode import IGNORE, encode  # noqa: E402
from hpo_trainers.grad_checkpoint import checkpointed_layers, enable_gradient_checkpointing  # noqa: E402
from hpo_trainers.models import load_model  # noqa: E402
from hpo_trainers.optimizers import make_optimizer  # noqa: E402
from hpo_trainers.packing import pack  # noqa: E402

from hpo.errors import TrainerError  # noqa: E402
from hpo.trial import TrialContext  # noqa: E402

BERT = dict(
    model="tiny-bert", dataset="synthetic", task="classification", synthetic_size=200,
    max_length=32, batch_size=8, max_steps=4, eval_every=2, max_eval_examples=32,
    learning_rate=1e-3, cpu_threads=1, seed=1,
)
LLAMA = dict(
    model="tiny-llama", dataset="synthetic", task="causal_lm", synthetic_size=200,
    max_length=32, batch_size=8, max_steps=4, eval_every=2, max_eval_examples=32,
    learning_rate=1e-3, cpu_threads=1, seed=1,
)
HIDDEN = 64  # tiny models' hidden size
CUDA = torch.cuda.is_available()


def run(trainer, params, **ctx_kwargs):
    ctx = TrialContext(params, objective="eval_loss", **ctx_kwargs)
    result = trainer.train(params, ctx)
    return ctx, result


def error(trainer, params) -> str:
    with pytest.raises(TrainerError) as excinfo:
        run(trainer, params)
    return str(excinfo.value)


def lora_model(params):
    """(peft model, attrs) for ``params`` without training: what apply_lora builds."""
    cfg = parse_params(params, "lora")
    data = load_task_data(cfg)
    bundle = load_model(cfg.model, cfg.task, label_names=data.label_names, corpus=data.texts())
    return lora.apply_lora(bundle, cfg, torch.device("cpu"))


def trainable(model, word: str) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and word in n)


# -- LoRA variants ------------------------------------------------------------------------------
def test_dora_adds_trained_magnitude_vectors():
    plain, _ = lora_model(BERT)
    dora, attrs = lora_model({**BERT, "use_dora": True})
    assert trainable(plain, "lora_magnitude_vector") == 0
    # one magnitude per output feature of each adapted layer: query+value in 2 layers
    assert trainable(dora, "lora_magnitude_vector") == 2 * 2 * HIDDEN
    assert attrs["use_dora"] is True


def test_rslora_scales_by_alpha_over_sqrt_r():
    params = {**BERT, "lora_r": 16, "lora_alpha": 8}
    plain, _ = lora_model(params)
    rs, _ = lora_model({**params, "use_rslora": "true"})  # a YAML string is accepted

    def scale(model):
        return next(m.scaling["default"] for m in model.modules()
                    if isinstance(getattr(m, "scaling", None), dict))

    assert scale(plain) == pytest.approx(8 / 16)
    assert scale(rs) == pytest.approx(8 / math.sqrt(16))


def test_lora_bias_trains_biases():
    none, _ = lora_model(BERT)
    every, _ = lora_model({**BERT, "bias": "all"})
    only, _ = lora_model({**BERT, "bias": "lora_only"})

    def base_biases(model):  # biases outside the classifier head (trained in every case)
        return sum(p.numel() for n, p in model.named_parameters()
                   if p.requires_grad and n.endswith(".bias") and "classifier" not in n)

    n_all = sum(p.numel() for n, p in every.named_parameters() if n.endswith(".bias")
                and "classifier" not in n)
    assert base_biases(none) == 0
    assert base_biases(every) == n_all > 0
    assert 0 < base_biases(only) < n_all  # the biases of the adapted query/value layers only
    assert base_biases(only) == 2 * 2 * HIDDEN
    assert "use one of none, all, lora_only" in error(lora, {**BERT, "bias": "some"})


def test_modules_to_save_trains_the_module_in_full():
    plain, _ = lora_model(LLAMA)
    saved, _ = lora_model({**LLAMA, "modules_to_save": "lm_head"})
    vocab = saved.get_base_model().config.vocab_size
    assert trainable(plain, "lm_head") == 0
    assert trainable(saved, "lm_head") == HIDDEN * vocab
    msg = error(lora, {**LLAMA, "modules_to_save": ["lm_haed"]})
    assert "lm_haed" in msg and "lm_head" in msg  # the typo and what exists
    assert "only apply to the 'lora' trainer" in error(full, {**BERT, "use_dora": True})


def test_lora_variants_train_end_to_end():
    params = {**BERT, "use_dora": True, "use_rslora": True, "bias": "lora_only",
              "gradient_checkpointing": True, "optimizer": "adafactor"}
    ctx, result = run(lora, params)
    assert math.isfinite(result["eval_loss"]) and len(ctx.history) == 2
    a = ctx.attrs
    assert a["use_dora"] and a["use_rslora"] and a["lora_bias"] == "lora_only"
    assert a["optimizer"] == "adafactor" and a["gradient_checkpointing"] is True


# -- gradient checkpointing ---------------------------------------------------------------------
@pytest.mark.parametrize("trainer", [lora, full], ids=["lora", "full"])
def test_gradient_checkpointing_recomputes_layers_in_backward(trainer, monkeypatch):
    """With checkpointing each decoder layer runs again in backward: its MLP twice per step."""
    import transformers.models.llama.modeling_llama as llama

    calls = {"n": 0}
    original = llama.LlamaMLP.forward

    def counting(self, *args, **kwargs):
        if self.training:
            calls["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(llama.LlamaMLP, "forward", counting)
    params = {**LLAMA, "max_steps": 2, "eval_every": 2}
    run(trainer, params)
    plain = calls["n"]
    calls["n"] = 0
    ctx, result = run(trainer, {**params, "gradient_checkpointing": True})
    assert plain == 2 * 2  # 2 steps x 2 layers
    assert calls["n"] == 2 * plain
    assert ctx.attrs["gradient_checkpointing"] is True and math.isfinite(result["eval_loss"])


def test_gradient_checkpointing_marks_every_layer_and_disables_the_cache():
    cfg = parse_params(LLAMA, "full")
    data = load_task_data(cfg)
    bundle = load_model(cfg.model, cfg.task, corpus=data.texts())
    assert checkpointed_layers(bundle.model) == 0
    enable_gradient_checkpointing(bundle.model)
    assert checkpointed_layers(bundle.model) >= 2  # both decoder layers
    assert bundle.model.config.use_cache is False


# -- optimizers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name, cls_name", [("adamw", "AdamW"), ("adamw_torch", "AdamW"),
                                            ("adafactor", "Adafactor"), ("sgd", "SGD")])
def test_optimizer_class_is_the_one_asked(name, cls_name):
    cfg = parse_params({**BERT, "optimizer": name, "weight_decay": 0.01, "momentum": 0.5}, "full")
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    opt = make_optimizer(model, cfg, torch.device("cpu"))
    assert type(opt).__name__ == cls_name
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]  # no decay on biases
    assert all(g["lr"] == cfg.learning_rate for g in opt.param_groups)
    if name == "sgd":
        assert opt.param_groups[0]["momentum"] == 0.5
    if name == "adafactor":
        assert opt.param_groups[0]["relative_step"] is False  # the schedule drives its lr


@pytest.mark.parametrize("name", ["adafactor", "sgd"])
def test_other_optimizers_learn(name):
    lr = {"adafactor": 1e-2, "sgd": 0.1}[name]
    ctx, _ = run(full, {**BERT, "optimizer": name, "learning_rate": lr, "max_steps": 20,
                        "eval_every": 10, "synthetic_size": 400, "lr_scheduler": "constant"})
    losses = [m["eval_loss"] for _, m in ctx.history]
    assert losses[-1] < losses[0], losses
    assert ctx.attrs["optimizer"] == name


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None and CUDA,
                    reason="bitsandbytes and a GPU are here: adamw_8bit can run")
def test_adamw_8bit_without_bitsandbytes_or_gpu_is_refused_clearly():
    msg = error(lora, {**BERT, "optimizer": "adamw_8bit"})
    assert "adamw_8bit cannot be used" in msg and "optimizer: adamw" in msg
    assert "bitsandbytes" in msg or "CUDA" in msg


def test_unknown_optimizer_lists_the_choices():
    msg = error(lora, {**BERT, "optimizer": "lion"})
    assert "'lion'" in msg and "adamw, adafactor, sgd, adamw_8bit" in msg
    assert "momentum" in error(full, {**BERT, "optimizer": "sgd", "momentum": 1.5})


@pytest.mark.skipif(not CUDA or importlib.util.find_spec("bitsandbytes") is None,
                    reason="needs a CUDA GPU and bitsandbytes")
def test_adamw_8bit_on_gpu():
    ctx, result = run(lora, {**BERT, "optimizer": "adamw_8bit"}, device="cuda:0")
    assert ctx.attrs["optimizer"] == "adamw_8bit" and math.isfinite(result["eval_loss"])


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_bf16_gradient_checkpointing_on_gpu():
    ctx, result = run(lora, {**LLAMA, "precision": "bf16", "gradient_checkpointing": True,
                             "packing": True}, device="cuda:0 (GPU 0)")
    assert ctx.attrs["device"].startswith("cuda") and ctx.attrs["peak_memory_mb"] > 0
    assert math.isfinite(result["eval_loss"])


# -- causal-LM data: completion-only loss, text files, packing ----------------------------------
def _pc_rows():
    return [{"prompt": f"what does {p} eat ?", "completion": f"{p} eats {f} ."}
            for p, f in (("anna", "soup"), ("ben", "rice"), ("carl", "bread"))]


def _tokenizer(rows):
    bundle = load_model("tiny-llama", "causal_lm",
                        corpus=[r["prompt"] + " " + r["completion"] for r in rows])
    return bundle.tokenizer


def test_completion_only_loss_masks_prompt_tokens():
    rows = _pc_rows()
    tok = _tokenizer(rows)
    enc = encode(rows, tok, "causal_lm", 64)
    for row, ids, labels in zip(rows, enc.input_ids, enc.labels, strict=True):
        n_prompt = len(tok(row["prompt"])["input_ids"])
        assert labels[:n_prompt] == [IGNORE] * n_prompt  # no loss on the prompt
        assert labels[n_prompt:] == ids[n_prompt:]  # loss on every completion token (+ EOS)
        assert ids[-1] == tok.eos_token_id
    every = encode(rows, tok, "causal_lm", 64, completion_only=False)
    assert every.labels == every.input_ids


def test_prompt_completion_jsonl_and_text_csv_train(tmp_path):
    path = tmp_path / "pc.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _pc_rows() * 20))
    ctx, result = run(lora, {**LLAMA, "dataset": str(path), "prompt_column": "prompt"})
    assert math.isfinite(result["perplexity"]) and ctx.attrs["train_examples"] == 54
    csv_path = tmp_path / "texts.csv"
    csv_path.write_text("body\n" + "".join(f"{r['prompt']} {r['completion']}\n"
                                           for r in _pc_rows() * 20))
    ctx, result = run(full, {**LLAMA, "dataset": str(csv_path), "text_column": "body"})
    assert math.isfinite(result["perplexity"]) and ctx.attrs["eval_examples"] == 6
    msg = error(full, {**LLAMA, "dataset": str(csv_path)})
    assert "'text'" in msg and "body" in msg  # names the missing column and what exists


def test_packing_makes_full_length_blocks_and_keeps_the_masks():
    rows = _pc_rows() * 10
    tok = _tokenizer(rows)
    enc = encode(rows, tok, "causal_lm", 64)
    packed = pack(enc, 16)
    total = sum(len(s) for s in enc.input_ids)
    assert len(packed) == total // 16 and all(len(s) == 16 for s in packed.input_ids)
    flat_ids = [t for s in enc.input_ids for t in s][: len(packed) * 16]
    flat_labels = [t for s in enc.labels for t in s][: len(packed) * 16]
    assert [t for s in packed.input_ids for t in s] == flat_ids
    assert [t for s in packed.labels for t in s] == flat_labels  # prompt tokens still IGNORE
    batch = packed.batch([0, 1, 2])
    assert batch["attention_mask"].all()  # no padding at all


def test_packing_in_a_trial_trains_on_full_blocks():
    params = {**LLAMA, "packing": True, "max_length": 32}
    ctx, result = run(lora, params)
    a = ctx.attrs
    unpacked, _ = run(lora, {**params, "packing": False})
    assert a["packing"] is True and math.isfinite(result["perplexity"])
    assert a["train_tokens"] == 4 * 8 * 32  # 4 steps x batch 8 x 32 real tokens
    assert a["train_examples"] < unpacked.attrs["train_examples"]  # several texts per block
    assert a["eval_examples"] == unpacked.attrs["eval_examples"]  # eval is not packed
    assert "causal_lm" in error(full, {**BERT, "packing": True})


# -- library warnings ---------------------------------------------------------------------------
def test_library_output_records_instead_of_printing(capfd, caplog):
    with caplog.at_level(logging.DEBUG, logger="hpo_trainers.library"):
        with library_output() as captured:
            for _ in range(3):
                warnings.warn("`old_arg` is deprecated", FutureWarning, stacklevel=1)
            logging.getLogger("transformers.modeling_utils").warning("weights not initialized")
            logging.getLogger("peft.tuners.lora").warning("fan_in_fan_out is off")
            logging.getLogger("transformers.x").info("an info line is not kept")
    out, err = capfd.readouterr()
    assert "deprecated" not in out + err and "initialized" not in out + err
    lines = captured.summary()
    assert captured.total == 3
    assert any("weights not initialized" in line for line in lines)
    assert any(line.startswith("peft.tuners.lora warning: fan_in") for line in lines)
    assert any("FutureWarning: `old_arg` is deprecated" in line for line in lines)
    assert "weights not initialized" in caplog.text  # re-logged at DEBUG
    # restored afterwards
    with pytest.warns(FutureWarning):
        warnings.warn("shown again", FutureWarning, stacklevel=1)


def test_trial_records_library_warnings_on_its_attrs(capfd, monkeypatch):
    original = lora.apply_lora

    def noisy(bundle, cfg, device):
        warnings.warn("a peft notice", UserWarning, stacklevel=1)
        logging.getLogger("transformers.trainer").warning("a transformers notice")
        return original(bundle, cfg, device)

    monkeypatch.setattr(lora, "apply_lora", noisy)
    ctx, _ = run(lora, {**BERT, "max_steps": 2})
    out, err = capfd.readouterr()
    assert "notice" not in out + err
    a = ctx.attrs
    assert a["library_warnings_total"] >= 2
    assert any("a peft notice" in w for w in a["library_warnings"])
    assert any("a transformers notice" in w for w in a["library_warnings"])
    with pytest.warns(UserWarning, match="a peft notice"):  # shown the usual way
        ctx, _ = run(lora, {**BERT, "max_steps": 2, "show_library_warnings": True})
    assert "library_warnings" not in ctx.attrs


# -- placement ----------------------------------------------------------------------------------
def test_ray_gpu_device_descriptions_are_understood():
    assert device_name("cuda:0 (GPU 3)") == "cuda:0"
    assert device_name("cuda:0,cuda:1 (GPU 2,3)") == "cuda:0"
    assert device_name(None) == "cpu" and device_name("cpu") == "cpu"
    assert resolve_device("cpu").type == "cpu"
    if not CUDA:
        with pytest.raises(TrainerError, match="torch.cuda.is_available"):
            resolve_device("cuda:0 (GPU 0)")


def test_training_window_is_recorded():
    ctx, _ = run(lora, {**BERT, "max_steps": 2})
    start, end = ctx.attrs["train_window"]
    assert 0 < start <= end and ctx.attrs["train_tokens"] > 0
