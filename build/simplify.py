"""Stage 2: onnxsim at the static (batch, seq_len) shape, again and again until nothing changes.

The port runs `python3 -m onnxsim --overwrite-input-shape=input_ids:4,512` by hand "until Slice
shows zero"; here it runs to a fixpoint, and for GPT-2 a Slice left over fails the build, as the
port's graph has none.

onnxsim hands the model to its C++ core serialized, which protobuf refuses over 2 GiB: a model whose
weights are over build/onnx_files.py's limit is simplified with its large float tensors (the
weights) turned into graph inputs of their shape, and given them back after. What onnxsim folds
(shapes, masks, positions) is computed from small integer constants, which stay in the graph.
"""

from __future__ import annotations

import logging
from pathlib import Path

from npueval.core.errors import RunError
from npueval.core.model_io import INPUT

from . import onnx_files
from .export import op_histogram

log = logging.getLogger(__name__)

MAX_ROUNDS = 8
#: Float initializers of this size or more are the weights that a large model's simplification
#: takes out of the graph.
WEIGHT_MIN_BYTES = 1 << 20


def simplify(src: Path, dst: Path, batch_size: int, seq_len: int, slice_free: bool = True) -> dict:
    """Write the simplified model; returns rounds and op histograms for the manifest. `slice_free`:
    a Slice left fails the build (GPT-2, whose Slices all cut constants; a Llama-family graph keeps
    the ones of its rotary embedding, which cut activations)."""
    import onnxsim

    model = onnx_files.load(src)
    weights = _take_weights(model) if onnx_files.too_big_inline(model) else []
    before = op_histogram(src)
    previous = None
    for rounds in range(1, MAX_ROUNDS + 1):
        model, checked = onnxsim.simplify(model, overwrite_input_shapes={INPUT: [batch_size, seq_len]})
        if not checked:
            raise RunError(f"{src}: onnxsim's result did not match the model it simplified (round {rounds})")
        # The fixpoint: a round that changes no op (onnxsim may rename tensors every round).
        ops = [(n.op_type, tuple(n.input), tuple(n.output)) for n in model.graph.node]
        signature = (len(ops), sorted((op for op, _, _ in ops)))
        if signature == previous:
            break
        previous = signature
    _give_back(model, weights)
    onnx_files.save(model, dst)
    after = op_histogram(dst)
    if slice_free and after.get("Slice"):
        raise RunError(f"{dst}: {after['Slice']} Slice op(s) left after {rounds} onnxsim rounds; ATC needs none")
    log.info("simplified at (%d, %d) in %d rounds: %d → %d ops", batch_size, seq_len, rounds,
             sum(before.values()), sum(after.values()))
    return {"file": dst.name, "rounds": rounds, "input_shape": [batch_size, seq_len],
            "weights_as_inputs": len(weights), "ops_before": before, "ops_after": after}


def _take_weights(model) -> list:
    """Move the large float initializers out of `model`, each made a graph input of its type and
    shape; returns them."""
    from onnx import TensorProto, helper

    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)
    graph = model.graph
    taken = [t for t in graph.initializer
             if t.data_type in floats and len(t.raw_data) >= WEIGHT_MIN_BYTES]
    names = {t.name for t in taken}
    kept = [t for t in graph.initializer if t.name not in names]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in taken)
    log.info("simplifying with %d weight tensors (%.2f GB) as inputs", len(taken),
             sum(len(t.raw_data) for t in taken) / 1e9)
    return taken


def _give_back(model, weights: list) -> None:
    """The weights that the simplified graph still reads, as initializers again."""
    graph = model.graph
    names = {t.name for t in weights}
    inputs = [i for i in graph.input if i.name not in names]
    del graph.input[:]
    graph.input.extend(inputs)
    read = {name for node in graph.node for name in node.input}
    graph.initializer.extend(t for t in weights if t.name in read)
