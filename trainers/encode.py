"""Tokenize a task's examples once, then cut them into padded batches on demand."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from hpo.errors import TrainerError

IGNORE = -100  # label id the loss skips (prompt tokens, padding)


@dataclass
class Encoded:
    """Token ids per example (unpadded) and labels: an int per example (classification) or a
    list per example aligned with the ids (causal LM; IGNORE where no loss is taken)."""

    task: str
    input_ids: list[list[int]]
    labels: list[Any]
    pad_id: int
    pad_multiple: int = 1  # 8 on CUDA: tensor cores like aligned shapes

    def __len__(self) -> int:
        return len(self.input_ids)

    def n_tokens(self, idx: Sequence[int]) -> int:
        return sum(len(self.input_ids[i]) for i in idx)

    def batch(self, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        """Right-padded tensors for examples ``idx`` (on CPU; the caller moves them)."""
        longest = max(len(self.input_ids[i]) for i in idx)
        if self.pad_multiple > 1:
            longest = -(-longest // self.pad_multiple) * self.pad_multiple
        n = len(idx)
        ids = torch.full((n, longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, longest), dtype=torch.long)
        causal = self.task == "causal_lm"
        labels = torch.full((n, longest), IGNORE, dtype=torch.long) if causal else None
        for row, i in enumerate(idx):
            seq = self.input_ids[i]
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
            if labels is not None:
                labels[row, : len(seq)] = torch.tensor(self.labels[i], dtype=torch.long)
        if labels is None:
            labels = torch.tensor([self.labels[i] for i in idx], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def shuffled_batches(self, batch_size: int, seed: int) -> Iterator[list[int]]:
        """Endless stream of index batches, reshuffled every epoch (deterministic in ``seed``)."""
        epoch = 0
        while True:
            gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            order = torch.randperm(len(self), generator=gen).tolist()
            for start in range(0, len(order), batch_size):
                yield order[start : start + batch_size]
            epoch += 1

    def eval_batches(self, batch_size: int) -> Iterator[list[int]]:
        """Batches of similar length (less padding), in a fixed order."""
        order = sorted(range(len(self)), key=lambda i: len(self.input_ids[i]))
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]


def encode(
    rows: list[dict[str, Any]], tokenizer: Any, task: str, max_length: int, pad_multiple: int = 1,
    completion_only: bool = True,
) -> Encoded:
    """Token ids and labels for ``rows``; prompt/completion rows take no loss on the prompt
    unless ``completion_only`` is False."""
    if task == "classification":
        enc = tokenizer([r["text"] for r in rows], truncation=True, max_length=max_length)
        ids = [list(x) for x in enc["input_ids"]]
        labels: list[Any] = [int(r["label"]) for r in rows]
    elif rows and "prompt" in rows[0]:
        ids, labels = _prompt_completion(rows, tokenizer, max_length, completion_only)
    else:
        ids, labels = _plain_text(rows, tokenizer, max_length)
    keep = [i for i, seq in enumerate(ids) if seq and (task == "classification" or
                                                         any(t != IGNORE for t in labels[i][1:]))]
    if not keep:
        raise TrainerError(
            "every example is empty after tokenization (or has no completion tokens within "
            f"max_length={max_length}); check the text columns or raise max_length"
        )
    if len(keep) < len(ids):
        ids = [ids[i] for i in keep]
        labels = [labels[i] for i in keep]
    return Encoded(task, ids, labels, int(tokenizer.pad_token_id), pad_multiple)


def _plain_text(rows: list[dict], tokenizer: Any, max_length: int) -> tuple[list, list]:
    enc = tokenizer([r["text"] for r in rows], truncation=True, max_length=max_length)
    eos = tokenizer.eos_token_id
    ids = []
    for seq in enc["input_ids"]:
        seq = list(seq)
        if eos is not None and len(seq) < max_length and (not seq or seq[-1] != eos):
            seq.append(eos)  # learn where a text ends
        ids.append(seq)
    return ids, [list(seq) for seq in ids]


def _prompt_completion(
    rows: list[dict], tokenizer: Any, max_length: int, completion_only: bool = True
) -> tuple[list, list]:
    """Loss on completion tokens only (or on every token, ``completion_only=False``); a long
    prompt is cut from the left, never the completion's first half of the budget."""
    prompts = tokenizer([r["prompt"] for r in rows])["input_ids"]
    completions = [
        r["completion"] if (r["completion"][:1].isspace() or r["prompt"][-1:].isspace())
        else " " + r["completion"]
        for r in rows
    ]
    comps = tokenizer(completions, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id
    ids, labels = [], []
    for p, c in zip(prompts, comps, strict=True):
        p, c = list(p), list(c) + ([eos] if eos is not None else [])
        keep_c = min(len(c), max(max_length // 2, max_length - len(p)))
        keep_p = max_length - keep_c
        if len(p) > keep_p:
            head = [p[0]] if bos is not None and p and p[0] == bos and keep_p > 1 else []
            p = head + (p[len(p) - (keep_p - len(head)) :] if keep_p > len(head) else [])
        c = c[:keep_c]
        ids.append(p + c)
        labels.append(([IGNORE] * len(p) if completion_only else p) + c)
    return ids, labels
