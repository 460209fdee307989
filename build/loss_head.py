"""Stage 4: per-token NLL inside the graph (docs/design.md, "The model's inputs and outputs"; the inputs and
outputs are core/model_io.py's).

The port's OM returns B×L×V float16 logits (86.5 MB per batch of 4) and computes the
cross-entropy on the host. Here the graph takes a second input, `targets` (B, L) int64,
computed on the host: targets[:, j] = input_ids[:, j + 1], with a dummy last column. The
output `nll` (B, L) float32 is LogSoftmax → GatherElements → Neg; its column j is the NLL of
token j + 1, and the backend drops the last column. No Slice anywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from npueval.core.model_io import INPUT, LOGITS, NLL, TARGETS

from . import onnx_files

#: The loss head's ops, in graph order.
LOSS_OPS = ("LogSoftmax", "Unsqueeze", "GatherElements", "Squeeze", "Neg")
#: The loss head's nodes whose float outputs ATC's --keep_dtype keeps in float32 under
#: force_fp16, by node name: an `OpType::` entry must name the Ascend IR type after the ONNX
#: parser's mapping (LogSoftmax becomes LogSoftmaxV2, opset-13 Squeeze SqueezeV3), which differs
#: across CANN versions, while a node name is the ONNX model's own (ATC --keep_dtype docs).
KEEP_FP32_NODES = tuple(f"loss_head/{op}" for op in ("LogSoftmax", "GatherElements", "Squeeze", "Neg"))


def add_loss_head(src: Path, dst: Path) -> dict:
    from onnx import TensorProto, helper, numpy_helper

    model = onnx_files.load(src)
    graph = model.graph
    (logits,) = [o for o in graph.output if o.name == LOGITS]
    batch, seq_len = (d.dim_value for d in logits.type.tensor_type.shape.dim[:2])
    graph.input.append(helper.make_tensor_value_info(TARGETS, TensorProto.INT64, [batch, seq_len]))
    graph.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), "loss_head/axis"))
    graph.node.extend(
        [
            helper.make_node("LogSoftmax", [LOGITS], ["loss_head/logprobs"], name="loss_head/LogSoftmax", axis=-1),
            helper.make_node("Unsqueeze", [TARGETS, "loss_head/axis"], ["loss_head/index"], name="loss_head/Unsqueeze"),
            helper.make_node("GatherElements", ["loss_head/logprobs", "loss_head/index"], ["loss_head/picked"],
                             name="loss_head/GatherElements", axis=-1),
            helper.make_node("Squeeze", ["loss_head/picked", "loss_head/axis"], ["loss_head/target_logprob"],
                             name="loss_head/Squeeze"),
            helper.make_node("Neg", ["loss_head/target_logprob"], [NLL], name="loss_head/Neg"),
        ]
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(NLL, TensorProto.FLOAT, [batch, seq_len]))
    onnx_files.save(model, dst)
    return {"file": dst.name, "inputs": [INPUT, TARGETS], "output": NLL, "output_shape": [batch, seq_len]}
