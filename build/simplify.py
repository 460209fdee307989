"""Stage 2: onnxsim at the static (batch, seq_len) shape, again and again until nothing changes.

The port runs `python3 -m onnxsim --overwrite-input-shape=input_ids:4,512` by hand "until Slice
shows zero"; here it runs to a fixpoint, and for GPT-2 a Slice left over fails the build, as the
port's graph has none.
"""

from __future__ import annotations

import logging
from pathlib import Path

from npueval.core.errors import RunError
from npueval.core.model_io import INPUT

from .export import op_histogram

log = logging.getLogger(__name__)

MAX_ROUNDS = 8


def simplify(src: Path, dst: Path, batch_size: int, seq_len: int, slice_free: bool = True) -> dict:
    """Write the simplified model; returns rounds and op histograms for the manifest. `slice_free`:
    a Slice left fails the build (GPT-2, whose Slices all cut constants; a Llama-family graph keeps
    the ones of its rotary embedding, which cut activations)."""
    import onnx
    import onnxsim

    model = onnx.load(str(src))
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
    onnx.save(model, str(dst))
    after = op_histogram(dst)
    if slice_free and after.get("Slice"):
        raise RunError(f"{dst}: {after['Slice']} Slice op(s) left after {rounds} onnxsim rounds; ATC needs none")
    log.info("simplified at (%d, %d) in %d rounds: %d → %d ops", batch_size, seq_len, rounds,
             sum(before.values()), sum(after.values()))
    return {"file": dst.name, "rounds": rounds, "input_shape": [batch_size, seq_len],
            "ops_before": before, "ops_after": after}
