"""Which nodes ATC keeps in float32: each RMSNorm's statistics, found by their pattern only."""

import numpy as np
import pytest

from npueval.build.precision import rms_norm_nodes


def norm_graph(kind: str):
    """y = x · 1/sqrt(mean(x²) + eps) (the RMSNorm as exported), or a variant."""
    from onnx import TensorProto, helper, numpy_helper

    c = {k: numpy_helper.from_array(np.array(v, dtype=np.float32), k)
         for k, v in (("two", 2.0), ("three", 3.0), ("eps", 1e-6), ("one", 1.0), ("half", 0.5))}
    exponent = "three" if kind == "cube" else "two"
    nodes = [helper.make_node("Pow", ["x", exponent], ["p"], name="n/Pow"),
             helper.make_node("ReduceMean", ["p"], ["m"], name="n/ReduceMean", axes=[-1], keepdims=1),
             helper.make_node("Add", ["m", "eps"], ["a"], name="n/Add"),
             helper.make_node("Sqrt", ["a"], ["s"], name="n/Sqrt")]
    if kind == "reciprocal":
        nodes.append(helper.make_node("Reciprocal", ["s"], ["r"], name="n/Reciprocal"))
    else:
        nodes.append(helper.make_node("Div", ["half" if kind == "not-one" else "one", "s"], ["r"], name="n/Div"))
    nodes.append(helper.make_node("Mul", ["x" if kind != "other-input" else "z", "r"], ["y"], name="n/Mul"))
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 4]) for n in ("x", "z")]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                              initializer=list(c.values()))
    return graph


@pytest.mark.parametrize("kind, found", [
    ("div", ["n/Pow", "n/ReduceMean", "n/Add", "n/Sqrt", "n/Div", "n/Mul"]),
    ("reciprocal", ["n/Pow", "n/ReduceMean", "n/Add", "n/Sqrt", "n/Reciprocal", "n/Mul"]),
    ("cube", []),  # not x²
    ("not-one", []),  # 0.5 / sqrt(…): not the inverse
    ("other-input", []),  # scales another tensor than the one squared
])
def test_rms_norm_is_found_by_its_whole_pattern(kind, found):
    assert list(rms_norm_nodes(norm_graph(kind))) == found


def test_gpt2s_layer_norm_is_not_an_rms_norm():
    """The bundled GPT-2 build (LayerNorm: (x − mean) / sqrt(var + eps)) keeps only its loss head."""
    from npueval.build.precision import fp32_nodes
    from npueval.eval.sample.bundled import BUILD

    kept = fp32_nodes(BUILD / "model.onnx", loss_head=True)
    assert kept["rms_norm"] == () and len(kept["loss_head"]) == 4
