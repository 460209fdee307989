"""The compiled model's inputs and outputs, which `build` writes and every backend feeds.

A model takes `input_ids` (B, L) int64. With the loss head (build/loss_head.py) it also takes
`targets` (B, L) int64, computed on the host by `targets_for`: targets[:, j] = input_ids[:, j + 1],
a dummy in the last column; and its output `nll` (B, L) float32 is the NLL of each next token,
whose last column the backend drops. Without it, the output is `logits` (B, L, V).

An ONNX model over protobuf's 2 GiB limit keeps its weights outside the .onnx file: npueval reads
and writes them as one file, `<model file>.data` beside it (`weights_file`), which `build` writes
and `run` copies to every node with the model.
"""

from __future__ import annotations

from pathlib import Path

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


def weights_file(model: Path) -> Path:
    """Where an ONNX model's external weights are: `model.onnx` → `model.onnx.data`."""
    return model.with_name(model.name + ".data")


def model_files(model: Path) -> tuple[Path, ...]:
    """The files that make up a model: the file itself, and its external weights if it has them."""
    weights = weights_file(model)
    return (model, weights) if model.suffix == ".onnx" and weights.is_file() else (model,)
