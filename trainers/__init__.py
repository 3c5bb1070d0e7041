"""Trainers a sweep can name (``trainer: lora`` / ``trainer: full``), installed as the
package ``hpo_trainers`` (the checkout's ``trainers/`` folder; a name that cannot clash with
another distribution's top-level ``trainers``). Inside it, imports are relative.

A trainer is ``train(params: dict, ctx: hpo.trial.TrialContext) -> dict[str, float]``.
Modules, one job each:

- ``config``: params dict -> checked ``TrainConfig`` (defaults, coercion, unknown keys)
- ``data``: examples from JSONL/CSV, a datasets folder, a hub id, or ``synthetic``
- ``models``: model + tokenizer (tiny-bert, tiny-llama, minilm, folders, hub ids)
- ``encode``: tokenization and padded batches
- ``device``: device, precision, threads, memory
- ``loop``: the shared training/evaluation loop
- ``runner``: one trial end to end; ``artifacts``: saving the result
- ``lora`` / ``full``: the two trainers
- ``capture``, ``packing``, ``optimizers``, ``grad_checkpoint``: the options of the loop
"""

TRAINERS = {"lora": "hpo_trainers.lora:train", "full": "hpo_trainers.full:train"}

__all__ = ["TRAINERS"]
