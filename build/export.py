"""Stage 1: the PyTorch model → ONNX with a dynamic batch axis (the port's pth2onnx.py).

TorchScript exporter at opset 13, as the port: ATC takes it, and with eager attention the
graph holds the ops the NPU passes expect. transformers 5 needs an explicit all-ones
attention mask for that exporter (stack-notes.md), so the model is wrapped.
"""

from __future__ import annotations

import collections
import logging
import warnings
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

OPSET = 13
EXPORTER = "torch.onnx TorchScript (dynamo=False)"
INPUT = "input_ids"
LOGITS = "logits"


def logits_module(model):
    """`input_ids` (B, L) int64 → logits (B, L, V) float32, no cache, full attention mask."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids):
            mask = torch.ones_like(input_ids)
            return self.lm(input_ids, attention_mask=mask, use_cache=False).logits

    # eval() on the wrapper: export restores the wrapper's mode afterwards, and a wrapper left
    # in training mode would switch the model's dropout on for everything that follows.
    return Logits(model).eval()


def export_onnx(model, path: Path, seq_len: int) -> dict:
    """Write the ONNX file; returns what the build manifest records about it."""
    import torch

    module = logits_module(model)
    example = torch.zeros((2, seq_len), dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's tracer warnings
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT],
            output_names=[LOGITS],
            dynamic_axes={INPUT: {0: "batch"}, LOGITS: {0: "batch"}},
        )
    log.info("exported %s", path)
    return {"file": path.name, "opset": OPSET, "exporter": EXPORTER, "ops": op_histogram(path)}


def op_histogram(path: Path) -> dict[str, int]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return dict(sorted(collections.Counter(node.op_type for node in graph.node).items()))


def reference_logits(model, input_ids: np.ndarray) -> np.ndarray:
    """The PyTorch model's float32 logits: what every stage is checked against."""
    import torch

    with torch.no_grad():
        return logits_module(model)(torch.from_numpy(input_ids.astype(np.int64))).numpy()
