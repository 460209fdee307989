"""Stage 1: the PyTorch model → ONNX (the port's pth2onnx.py).

For GPT-2, the exported graph is the port's: TorchScript exporter at opset 13, outputs `logits` and one
`present.{i}` (key and value) per layer, and GPT2-Chinese's attention as transformers 2.x
wrote it, `w = q·kᵀ / √d; w = w·b − 1e4·(1 − b)` with b the causal mask, instead of
transformers 5's added mask. That is what the port's opt_onnx_update.py edits, so the NPU
passes of stage 3 each find their pattern once per layer. The numbers are the same: stage 5
checks the export against transformers' own eager attention. transformers 5 needs an
explicit all-ones attention mask for this exporter (docs/design.md, "Building a model"), so the model is wrapped;
without padding (npueval never pads inside a window's context) the causal mask is all there is.
The other families (core/families.py) are exported at the build's static (B, L), logits only.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from npueval.core.model_io import INPUT, LOGITS, weights_file

from . import onnx_files

log = logging.getLogger(__name__)

OPSET = 13
EXPORTER = "torch.onnx TorchScript (dynamo=False)"
PORT_ATTENTION = "gpt2_chinese"
ATTENTION = "GPT2-Chinese (transformers 2.x): w = q·kᵀ / √d; w·b − 1e4·(1 − b); softmax"


def _port_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers 2.x GPT2 `_attn`, in the signature transformers 5 calls attention with."""
    import torch

    weights = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(value.size(-1))
    rows, cols = weights.size(-2), weights.size(-1)
    # b = tril(ones)[cols - rows:cols, :cols], built from comparisons (Trilu needs opset 14).
    b = (torch.arange(cols)[None, :] <= torch.arange(rows)[:, None] + (cols - rows)).to(weights.dtype)
    weights = torch.softmax(weights * b - 1e4 * (1 - b), dim=-1)
    return torch.matmul(weights, value).transpose(1, 2), weights


@contextlib.contextmanager
def _port_attention_in(model):
    from transformers import AttentionInterface

    AttentionInterface.register(PORT_ATTENTION, _port_attention)
    saved = model.config._attn_implementation
    model.config._attn_implementation = PORT_ATTENTION
    try:
        yield
    finally:
        model.config._attn_implementation = saved


def logits_module(model, presents: bool = False):
    """`input_ids` (B, L) int64 → logits (B, L, V) float32, full attention mask; with
    `presents`, also a key/value output per layer, as the port's transformers 2.5.1 model had."""
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids):
            out = self.lm(input_ids, attention_mask=torch.ones_like(input_ids), use_cache=presents)
            if not presents:
                return out.logits
            return (out.logits, *[torch.stack([layer.keys, layer.values]) for layer in out.past_key_values.layers])

    # eval() on the wrapper: export restores the wrapper's mode afterwards, and a wrapper left
    # in training mode would switch the model's dropout on for everything that follows.
    return Wrapped(model).eval()


def export_onnx(model, path: Path, seq_len: int, port: bool = True, batch_size: int = 2) -> dict:
    """Write the ONNX file; returns what the build manifest records about it. `port`: GPT2-Chinese's
    export (the port's attention, key/value outputs, a dynamic batch axis); otherwise the model's
    logits alone at the static (batch_size, seq_len), with transformers' eager attention."""
    import torch

    if port:
        module = logits_module(model, presents=True)
        outputs = [LOGITS, *(f"present.{i}" for i in range(model.config.n_layer))]
        example = torch.zeros((2, seq_len), dtype=torch.int64)
        dynamic_axes = {INPUT: {0: "batch"}, LOGITS: {0: "batch"}, **{p: {1: "batch"} for p in outputs[1:]}}
        attention, patched = ATTENTION, _port_attention_in(model)
    else:
        module, outputs = logits_module(model), [LOGITS]
        example = torch.zeros((batch_size, seq_len), dtype=torch.int64)
        dynamic_axes = None
        attention, patched = f"transformers eager ({model.config.model_type})", contextlib.nullcontext()
    # Over 2 GiB the exporter writes each weight to a file of its own beside the model: export into
    # a folder of its own, and gather them into the one weights file that every stage uses.
    scratch = path.parent / f".{path.stem}-export"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        with warnings.catch_warnings(), patched:
            warnings.simplefilter("ignore")  # the TorchScript exporter's tracer warnings
            torch.onnx.export(
                module,
                (example,),
                str(scratch / path.name),
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT],
                output_names=outputs,
                dynamic_axes=dynamic_axes,
            )
        if len(list(scratch.iterdir())) > 1:
            onnx_files.save(onnx_files.load(scratch / path.name), path)
        else:
            weights_file(path).unlink(missing_ok=True)
            os.replace(scratch / path.name, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("exported %s", path)
    return {"file": path.name, "opset": OPSET, "exporter": EXPORTER, "attention": attention,
            "outputs": outputs, "ops": op_histogram(path)}


def op_histogram(path: Path) -> dict[str, int]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return dict(sorted(collections.Counter(node.op_type for node in graph.node).items()))


def reference_logits(model, input_ids: np.ndarray) -> np.ndarray:
    """The PyTorch model's float32 logits: what every stage is checked against."""
    import torch

    with torch.no_grad():
        return logits_module(model)(torch.from_numpy(input_ids.astype(np.int64))).numpy()
