"""Which nodes ATC must keep in float32 under --precision_mode=force_fp16 (`--keep_dtype`, by node
name: an `OpType::` entry would have to name the Ascend IR type, which the ONNX parser's mapping
changes across CANN versions).

- The loss head (loss_head.py): LogSoftmax over the vocabulary and the gathered NLL.
- Each RMSNorm's statistics (Llama, Qwen2, Mistral): Pow(x, 2) → ReduceMean → Add(eps) → Sqrt →
  Div(1, ·) or Reciprocal → Mul(x, ·). In fp16, x² overflows (65,504) once |x| passes 256, which
  the residual stream of these models reaches; mean(x²) would be inf and the layer's output 0.
  GPT-2's LayerNorm runs in fp16 as the port ran it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .loss_head import KEEP_FP32_NODES


def fp32_nodes(model_path: Path, loss_head: bool) -> dict[str, tuple[str, ...]]:
    """{"loss_head": names, "rms_norm": names} of the model's nodes to keep in float32."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return {"loss_head": KEEP_FP32_NODES if loss_head else (), "rms_norm": rms_norm_nodes(model.graph)}


def rms_norm_nodes(graph) -> tuple[str, ...]:
    """The names of every RMSNorm's Pow, ReduceMean, Add, Sqrt, Div (or Reciprocal) and Mul, in
    graph order; a chain that differs anywhere is left as it is."""
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = _constants(graph)

    def only_reader(tensor: str, op_types: tuple[str, ...]):
        readers = consumers.get(tensor, [])
        return readers[0] if len(readers) == 1 and readers[0].op_type in op_types else None

    found: list[str] = []
    for pow_node in graph.node:
        if pow_node.op_type != "Pow" or not _equals(constants.get(pow_node.input[1]), 2.0):
            continue
        x, chain = pow_node.input[0], [pow_node]
        for op_types in (("ReduceMean",), ("Add",), ("Sqrt",), ("Div", "Reciprocal")):
            nxt = only_reader(chain[-1].output[0], op_types)
            if nxt is None:
                break
            chain.append(nxt)
        else:
            if chain[-1].op_type == "Div" and not (_equals(constants.get(chain[-1].input[0]), 1.0)
                                                  and chain[-1].input[1] == chain[-2].output[0]):
                continue
            scale = only_reader(chain[-1].output[0], ("Mul",))
            if scale is not None and x in scale.input:
                found.extend(node.name for node in [*chain, scale])
    return tuple(found)


def _constants(graph) -> dict[str, np.ndarray]:
    """Small constants by tensor name: initializers and Constant nodes' values."""
    from onnx import numpy_helper

    out = {init.name: numpy_helper.to_array(init) for init in graph.initializer if _size(init) <= 16}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
    return out


def _size(init) -> int:
    return int(np.prod(init.dims)) if init.dims else 1


def _equals(value: np.ndarray | None, expected: float) -> bool:
    return value is not None and value.size == 1 and float(value.reshape(())) == expected
