"""Trainers a sweep can name (``trainer: lora`` / ``trainer: full``).

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
- ``script``: runs a user's W&B ``program``/``command`` script as a trial (not in TRAINERS:
  ``hpo.trainer_ref`` hands it program sweeps)
"""

TRAINERS = {"lora": "trainers.lora:train", "full": "trainers.full:train"}

__all__ = ["TRAINERS"]
