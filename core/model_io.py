"""The compiled model's inputs and outputs, which `build` writes and every backend feeds.

A model takes `input_ids` (B, L) int64. With the loss head (build/loss_head.py) it also takes
`targets` (B, L) int64, computed on the host by `targets_for`: targets[:, j] = input_ids[:, j + 1],
a dummy in the last column; and its output `nll` (B, L) float32 is the NLL of each next token,
whose last column the backend drops. Without it, the output is `logits` (B, L, V).
"""

from __future__ import annotations

import numpy as np

INPUT = "input_ids"
TARGETS = "targets"
NLL = "nll"
LOGITS = "logits"


def targets_for(input_ids: np.ndarray, fill: int = 0) -> np.ndarray:
    """(B, L) int64: the next token of every position, `fill` in the last column."""
    targets = np.full(input_ids.shape, fill, dtype=np.int64)
    targets[:, :-1] = input_ids[:, 1:]
    return targets
