"""Load a task's examples: JSONL/CSV files, a ``save_to_disk`` folder, a hub id, or ``synthetic``.

Everything comes out as :class:`TaskData`: plain lists of dicts with the canonical keys
``text``/``label`` (classification) or ``text`` or ``prompt``/``completion`` (causal LM), and a
deterministic train/eval split (``data_seed``, independent of the trial's ``seed`` so every trial
of a sweep sees the same data).

``dataset: synthetic`` is a built-in task that needs no files:

- classification: short sentences of filler words with keywords from 4 topics (sports, food,
  weather, music); the label is the topic with the most keywords (other topics appear as
  distractors, always fewer). A small model learns it in tens of steps, but only with a
  reasonable learning rate: tuning visibly matters.
- causal LM: sentences over fixed facts (each person has one food, one instrument and one city;
  plus counting sequences), so perplexity can fall far below the vocabulary size.
"""

from __future__ import annotations

import csv
import json
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpo.errors import TrainerError

from .config import TrainConfig

TOPICS: dict[str, tuple[str, ...]] = {
    "sports": ("goal", "match", "team", "coach", "score", "player", "league", "referee",
               "stadium", "season"),
    "food": ("bread", "soup", "cheese", "apple", "pasta", "salad", "rice", "butter", "dinner",
             "recipe"),
    "weather": ("rain", "storm", "snow", "cloud", "wind", "sunny", "thunder", "fog", "frost",
                "ice"),
    "music": ("guitar", "piano", "song", "drum", "melody", "violin", "concert", "band", "singer",
              "rhythm"),
}
FILLERS: tuple[str, ...] = (
    "the", "a", "man", "woman", "city", "house", "car", "yesterday", "morning", "talked",
    "about", "with", "near", "old", "new", "friend", "went", "saw", "said", "today", "very",
    "and", "of", "to", "in", "for", "on", "at", "this", "that", "small", "big", "people",
    "street", "garden", "book", "quiet", "long", "short", "after", "before", "again", "her",
    "his", "their", "our", "was", "is", "it", "there", "some", "many", "little", "early",
    "late", "window", "door", "table", "river", "road",
)
NAMES = ("anna", "ben", "carl", "dora", "emma", "frank", "grace", "henry", "iris", "jack",
         "kate", "leo", "mia", "noah", "olga", "paul")
CITIES = ("paris", "london", "tokyo", "berlin", "rome", "madrid", "cairo", "lima")
NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
           "eleven", "twelve")


@dataclass
class TaskData:
    task: str  # classification | causal_lm
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    label_names: list[str] | None = None  # classification: id -> name
    source: str = ""

    @property
    def num_labels(self) -> int:
        return len(self.label_names or [])

    def texts(self) -> Iterable[str]:
        """Every training string (for building a word-level tokenizer for tiny models)."""
        for ex in self.train:
            for key in ("text", "prompt", "completion"):
                if ex.get(key):
                    yield ex[key]


def synthetic_vocabulary() -> list[str]:
    """Every word the synthetic tasks use (sorted, deterministic)."""
    words = set(FILLERS) | set(NAMES) | set(CITIES) | set(NUMBERS)
    for topic_words in TOPICS.values():
        words |= set(topic_words)
    words |= {"likes", "plays", "lives", "in", "counts", ".", "eats", "the"}
    return sorted(words)


# -- synthetic tasks ----------------------------------------------------------------------------
def synthetic_classification(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    topics = list(TOPICS)
    out = []
    for _ in range(n):
        label = rng.randrange(len(topics))
        k = rng.choice((2, 2, 3))
        words = [rng.choice(TOPICS[topics[label]]) for _ in range(k)]
        # distractors: up to two other topics, each strictly fewer keywords than the label's
        others = [t for i, t in enumerate(topics) if i != label]
        for topic in rng.sample(others, rng.choice((0, 1, 1, 2))):
            words += [rng.choice(TOPICS[topic]) for _ in range(rng.randint(1, k - 1))]
        words += [rng.choice(FILLERS) for _ in range(rng.randint(6, 12))]
        rng.shuffle(words)
        out.append({"text": " ".join(words), "label": label})
    return out


def synthetic_causal_lm(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    facts_rng = random.Random(1234)  # the "world" is fixed whatever the data seed
    food = {name: facts_rng.choice(TOPICS["food"]) for name in NAMES}
    instrument = {name: facts_rng.choice(TOPICS["music"][:6]) for name in NAMES}
    city = {name: facts_rng.choice(CITIES) for name in NAMES}
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(2, 3)):
            kind = rng.randrange(4)
            name = rng.choice(NAMES)
            if kind == 0:
                parts.append(f"{name} eats {food[name]} .")
            elif kind == 1:
                parts.append(f"{name} plays the {instrument[name]} .")
            elif kind == 2:
                parts.append(f"{name} lives in {city[name]} .")
            else:
                start = rng.randrange(len(NUMBERS) - 4)
                parts.append(f"{name} counts " + " ".join(NUMBERS[start : start + 4]) + " .")
        out.append({"text": " ".join(parts)})
    return out


# -- public entry -------------------------------------------------------------------------------
def load_task_data(cfg: TrainConfig) -> TaskData:
    """Examples for ``cfg.task`` from ``cfg.dataset`` (+ ``cfg.eval_dataset``), split, trimmed."""
    spec = str(cfg.dataset)
    if spec.strip().lower() in ("synthetic", "builtin:synthetic"):
        if cfg.task == "classification":
            rows = synthetic_classification(cfg.synthetic_size, cfg.data_seed)
            labels = list(TOPICS)
        else:
            rows = synthetic_causal_lm(cfg.synthetic_size, cfg.data_seed)
            labels = None
        train, evals = _split(rows, cfg)
        return _finish(TaskData(cfg.task, train, evals, labels, "synthetic"), cfg)

    train_rows, eval_rows = _load_source(spec, cfg)
    if cfg.eval_dataset:
        extra_train, extra_eval = _load_source(str(cfg.eval_dataset), cfg)
        eval_rows = extra_eval if extra_eval is not None else extra_train
    if eval_rows is None:
        train_rows, eval_rows = _split(train_rows, cfg)
    if cfg.task == "classification":
        train, evals, labels = _as_classification(train_rows, eval_rows, cfg, spec)
        data = TaskData(cfg.task, train, evals, labels, spec)
    else:
        train = _as_causal_lm(train_rows, cfg, spec)
        evals = _as_causal_lm(eval_rows, cfg, spec)
        data = TaskData(cfg.task, train, evals, None, spec)
    return _finish(data, cfg)


def _finish(data: TaskData, cfg: TrainConfig) -> TaskData:
    if cfg.max_train_examples:
        data.train = data.train[: cfg.max_train_examples]
    if cfg.max_eval_examples:
        data.eval = data.eval[: cfg.max_eval_examples]
    if not data.train:
        raise TrainerError(f"dataset {data.source!r}: no training examples")
    if not data.eval:
        raise TrainerError(
            f"dataset {data.source!r}: no evaluation examples; give eval_dataset or more rows"
        )
    if cfg.num_labels and data.label_names is not None:
        if cfg.num_labels < len(data.label_names):
            raise TrainerError(
                f"num_labels={cfg.num_labels} but the data has {len(data.label_names)} labels "
                f"({', '.join(data.label_names[:10])}); raise num_labels or leave it unset"
            )
        data.label_names += [str(i) for i in range(len(data.label_names), cfg.num_labels)]
    return data


def _split(rows: list[dict[str, Any]], cfg: TrainConfig) -> tuple[list, list]:
    """Deterministic shuffle (``data_seed``) then the first ``eval_size`` rows are eval."""
    order = list(range(len(rows)))
    random.Random(cfg.data_seed).shuffle(order)
    n_eval = cfg.eval_size or max(1, round(len(rows) * cfg.eval_fraction))
    if n_eval >= len(rows):
        raise TrainerError(
            f"dataset has {len(rows)} rows, too few to hold out {n_eval} for evaluation; lower "
            "eval_size/eval_fraction or give eval_dataset"
        )
    evals = [rows[i] for i in order[:n_eval]]
    train = [rows[i] for i in order[n_eval:]]
    return train, evals


# -- sources ------------------------------------------------------------------------------------
_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")


def _load_source(spec: str, cfg: TrainConfig) -> tuple[list[dict], list[dict] | None]:
    """(train rows, eval rows or None) from a file, a save_to_disk folder or a hub id."""
    path = Path(os.path.expanduser(spec))
    if path.is_file():
        return _read_file(path), None
    if path.is_dir():
        return _read_disk(path)
    # a hub id is "name" or "owner/name"; anything else that does not exist is a missing path
    looks_local = (
        spec.lower().endswith(_FILE_SUFFIXES) or spec.startswith((".", "/", "~"))
        or spec.count("/") > 1 or "\\" in spec
    )
    if looks_local:
        raise TrainerError(
            f"dataset file {spec!r} not found (working directory {os.getcwd()}); check the path "
            "or use an absolute one"
        )
    return _read_hub(spec, cfg)


def _read_file(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl" or (suffix == ".json" and _is_jsonl(path)):
            rows = []
            with path.open(encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise TrainerError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
        elif suffix == ".json":
            loaded = json.loads(path.read_text(encoding="utf-8"))
            rows = loaded.get("data", loaded) if isinstance(loaded, dict) else loaded
        elif suffix in (".csv", ".tsv"):
            with path.open(encoding="utf-8", newline="") as fh:
                rows = list(csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ","))
        else:
            raise TrainerError(
                f"dataset file {str(path)!r}: unsupported type {suffix!r}; use .jsonl, .json, "
                ".csv or .tsv, or a datasets folder"
            )
    except OSError as exc:
        raise TrainerError(f"cannot read dataset file {str(path)!r}: {exc}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise TrainerError(f"dataset file {str(path)!r}: expected one JSON object per row")
    if not rows:
        raise TrainerError(f"dataset file {str(path)!r} is empty")
    return rows


def _is_jsonl(path: Path) -> bool:
    with path.open(encoding="utf-8") as fh:
        first = fh.readline().strip()
        second = fh.readline().strip()
    return first.startswith("{") and second.startswith("{")


def _read_disk(path: Path) -> tuple[list[dict], list[dict] | None]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise TrainerError(
            f"dataset folder {str(path)!r} is not a datasets save_to_disk folder ({exc})"
        ) from None
    return _from_hf(loaded, str(path))


def _read_hub(spec: str, cfg: TrainConfig) -> tuple[list[dict], list[dict] | None]:
    offline = any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    import datasets

    try:
        loaded = datasets.load_dataset(spec, cfg.dataset_config)
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types
        hint = " (offline mode is on: HF_HUB_OFFLINE/HF_DATASETS_OFFLINE)" if offline else ""
        raise TrainerError(
            f"dataset {spec!r} is not a file or folder here and could not be loaded from the "
            f"hub{hint}: {type(exc).__name__}: {exc}"
        ) from None
    return _from_hf(loaded, spec)


def _from_hf(loaded: Any, source: str) -> tuple[list[dict], list[dict] | None]:
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise TrainerError(
                f"dataset {source!r} has splits {', '.join(loaded)}; it needs a 'train' split"
            )
        eval_split = next((s for s in ("validation", "valid", "dev", "test") if s in loaded), None)
        train = loaded["train"].to_list()
        return train, (loaded[eval_split].to_list() if eval_split else None)
    return loaded.to_list(), None


# -- columns ------------------------------------------------------------------------------------
def _columns(rows: Sequence[dict]) -> list[str]:
    return list(rows[0].keys()) if rows else []


def _require(rows: Sequence[dict], column: str, option: str, source: str, role: str) -> None:
    if rows and column not in rows[0]:
        found = ", ".join(_columns(rows)) or "none"
        raise TrainerError(
            f"dataset {source!r}: no {role} column {column!r} (columns found: {found}); set "
            f"trainer_args.{option} to the right column"
        )


def _as_classification(
    train: list[dict], evals: list[dict], cfg: TrainConfig, source: str
) -> tuple[list[dict], list[dict], list[str]]:
    for rows in (train, evals):
        _require(rows, cfg.text_column, "text_column", source, "text")
        _require(rows, cfg.label_column, "label_column", source, "label")
    raw = [r[cfg.label_column] for r in train + evals]
    if any(v is None or v == "" for v in raw):
        raise TrainerError(f"dataset {source!r}: some rows have an empty {cfg.label_column!r}")
    numeric = all(_is_int_like(v) for v in raw)
    if numeric:
        ids = sorted({int(float(v)) for v in raw})
        if ids[0] < 0:
            raise TrainerError(f"dataset {source!r}: labels must be >= 0, found {ids[0]}")
        names = [str(i) for i in range(ids[-1] + 1)]
        to_id = {str(i): i for i in range(len(names))}
    else:
        names = sorted({str(v) for v in raw})
        to_id = {n: i for i, n in enumerate(names)}
    if len(names) < 2:
        raise TrainerError(f"dataset {source!r}: classification needs >= 2 labels, found {names}")

    def convert(rows: list[dict]) -> list[dict]:
        out = []
        for r in rows:
            v = r[cfg.label_column]
            key = str(int(float(v))) if numeric else str(v)
            out.append({"text": str(r[cfg.text_column] or ""), "label": to_id[key]})
        return out

    return convert(train), convert(evals), names


def _is_int_like(v: Any) -> bool:
    if isinstance(v, bool):
        return True
    if isinstance(v, int):
        return True
    try:
        return float(v).is_integer()
    except (TypeError, ValueError):
        return False


def _as_causal_lm(rows: list[dict], cfg: TrainConfig, source: str) -> list[dict]:
    if not rows:
        return []
    cols = rows[0]
    if cfg.prompt_column in cols and cfg.completion_column in cols:
        return [
            {"prompt": str(r[cfg.prompt_column] or ""),
             "completion": str(r[cfg.completion_column] or "")}
            for r in rows
        ]
    if cfg.text_column in cols:
        return [{"text": str(r[cfg.text_column] or "")} for r in rows]
    found = ", ".join(cols) or "none"
    raise TrainerError(
        f"dataset {source!r}: causal_lm needs a {cfg.text_column!r} column or "
        f"{cfg.prompt_column!r}+{cfg.completion_column!r} columns (columns found: {found}); set "
        "trainer_args.text_column (or prompt_column/completion_column)"
    )
