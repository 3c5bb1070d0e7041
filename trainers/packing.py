"""Sequence packing for causal LM: training examples concatenated, then cut into full blocks.

Short texts padded to the longest in a batch waste most of a GPU's work on padding; packed,
every row of every batch is ``block_size`` real tokens. Examples are joined in order (each
keeps its BOS/EOS, so the model sees where one ends) and labels travel with their tokens, so
prompt tokens of prompt/completion data stay masked. Attention crosses example boundaries
within a block, as in the usual "group texts" recipe. The tail shorter than a block is dropped,
unless it is all there is. Only training data is packed: evaluation stays one example per row,
so eval metrics compare across packed and unpacked trials.
"""

from __future__ import annotations

from hpo.errors import TrainerError

from .encode import IGNORE, Encoded


def pack(data: Encoded, block_size: int) -> Encoded:
    """``data`` re-cut into rows of exactly ``block_size`` tokens (causal LM only)."""
    if data.task != "causal_lm":
        raise TrainerError("packing only applies to causal_lm data")
    if block_size < 2:
        raise TrainerError(f"packing needs max_length >= 2, got {block_size}")
    ids: list[int] = []
    labels: list[int] = []
    for seq, lab in zip(data.input_ids, data.labels, strict=True):
        ids.extend(seq)
        labels.extend(lab)
    n_full = len(ids) // block_size
    cuts = [(i * block_size, (i + 1) * block_size) for i in range(n_full)]
    if not cuts:
        cuts = [(0, len(ids))]
    blocks = [ids[a:b] for a, b in cuts]
    block_labels = [labels[a:b] for a, b in cuts]
    keep = [i for i, lab in enumerate(block_labels) if any(t != IGNORE for t in lab[1:])]
    if not keep:
        raise TrainerError("packing left no block with loss tokens; raise max_length")
    return Encoded(
        data.task, [blocks[i] for i in keep], [block_labels[i] for i in keep], data.pad_id,
        data.pad_multiple,
    )
