"""Each NPU graph pass on a small hand-made graph (found / not found, same numbers), and the
pass counts on npueval's own export of a GPT-2."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from npueval.build.graph import Graph
from npueval.build.passes import (
                                  drop_present_outputs,
    gemm_to_matmul,
    mask_sub_to_add,
    run_passes,
    scale_q_first,
    share_weights,
    split_qkv,
)

RNG = np.random.default_rng(0)


def model_of(nodes, inputs, outputs, inits):
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def run(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def apply(npu_pass, model):
    g = Graph(model)
    fired = npu_pass(g)
    return fired, g.finish()


def ops(model):
    return sorted(n.op_type for n in model.graph.node)


def linear(x_shape, split=None, alpha=1.0):
    """x → Reshape(-1, D) → Gemm → Reshape(B, L, N) [→ Split]."""
    batch, length = x_shape[0], x_shape[1]
    depth = int(np.prod(x_shape[2:]))
    width = 12 if split else 5
    inits = {"flat": np.array([-1, depth], np.int64), "w": RNG.normal(size=(depth, width)).astype(np.float32),
             "b": RNG.normal(size=width).astype(np.float32), "shape3": np.array([batch, length, width], np.int64)}
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["x2"], name="r1"),
             helper.make_node("Gemm", ["x2", "w", "b"], ["y2"], name="gemm", alpha=alpha),
             helper.make_node("Reshape", ["y2", "shape3"], ["y"], name="r2")]
    outputs = [("y", [batch, length, width])]
    if split:
        inits["sizes"] = np.array(split, np.int64)
        nodes.append(helper.make_node("Split", ["y", "sizes"], ["q", "k", "v"][:len(split)], name="split", axis=2))
        outputs = [(n, [batch, length, s]) for n, s in zip(["q", "k", "v"], split)]
    return model_of(nodes, [("x", x_shape)], outputs, inits)


def test_split_qkv_found():
    model = linear([2, 3, 4], split=[4, 4, 4])
    x = {"x": RNG.normal(size=(2, 3, 4)).astype(np.float32)}
    fired, edited = apply(split_qkv, model)
    assert fired == 1 and ops(edited) == ["Add"] * 3 + ["MatMul"] * 3
    for a, b in zip(run(model, x), run(edited, x)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("split", [[6, 6], [2, 5, 5]])
def test_split_qkv_not_found(split):
    fired, edited = apply(split_qkv, linear([2, 3, 4], split=split))
    assert fired == 0 and "Gemm" in ops(edited)


@pytest.mark.parametrize("x_shape", [[2, 3, 4], [2, 3, 2, 2]])
def test_gemm_to_matmul_found(x_shape):
    model = linear(x_shape)
    x = {"x": RNG.normal(size=x_shape).astype(np.float32)}
    fired, edited = apply(gemm_to_matmul, model)
    assert fired == 1 and "Gemm" not in ops(edited)
    assert ops(edited) == (["Add", "MatMul"] if len(x_shape) == 3 else ["Add", "MatMul", "Reshape"])
    np.testing.assert_allclose(run(model, x)[0], run(edited, x)[0], rtol=1e-6, atol=1e-6)


def test_gemm_to_matmul_not_found_with_a_scaled_gemm():
    fired, edited = apply(gemm_to_matmul, linear([2, 3, 4], alpha=2.0))
    assert fired == 0 and ops(edited) == ["Gemm", "Reshape", "Reshape"]


def attention(scale_op="Div", softmax=True, extra_reader=False, mask_sub=False):
    inits = {"c": np.array(2.0, np.float32), "mask": np.triu(np.full((3, 3), 5.0, np.float32), 1)}
    nodes = [helper.make_node("MatMul", ["q", "kt"], ["s"], name="qk"),
             helper.make_node(scale_op, ["s", "c"], ["s2"], name="scale"),
             helper.make_node("Sub" if mask_sub else "Add", ["s2", "mask"], ["s3"], name="mask")]
    outputs = [("p", [2, 3, 3])]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["s3"], ["p"], name="softmax", axis=-1))
    else:
        nodes.append(helper.make_node("Relu", ["s3"], ["p"], name="relu"))
    if extra_reader:
        nodes.append(helper.make_node("Identity", ["s"], ["s_copy"], name="copy"))
        outputs.append(("s_copy", [2, 3, 3]))
    return model_of(nodes, [("q", [2, 3, 4]), ("kt", [2, 4, 3])], outputs, inits)


@pytest.mark.parametrize("scale_op", ["Div", "Mul"])
def test_scale_q_first_found(scale_op):
    model = attention(scale_op)
    feeds = {"q": RNG.normal(size=(2, 3, 4)).astype(np.float32), "kt": RNG.normal(size=(2, 4, 3)).astype(np.float32)}
    fired, edited = apply(scale_q_first, model)
    assert fired == 1 and "Div" not in ops(edited) and ops(edited).count("Mul") == 1
    qk = next(n for n in edited.graph.node if n.op_type == "MatMul")
    assert [n.op_type for n in edited.graph.node if qk.input[0] in n.output] == ["Mul"]
    np.testing.assert_allclose(run(model, feeds)[0], run(edited, feeds)[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kw", [dict(softmax=False), dict(extra_reader=True)])
def test_scale_q_first_not_found(kw):
    fired, edited = apply(scale_q_first, attention(**kw))
    assert fired == 0 and ops(edited) == ops(attention(**kw))


def test_mask_sub_to_add():
    model = attention(mask_sub=True)
    feeds = {"q": RNG.normal(size=(2, 3, 4)).astype(np.float32), "kt": RNG.normal(size=(2, 4, 3)).astype(np.float32)}
    fired, edited = apply(mask_sub_to_add, model)
    assert fired == 1 and "Sub" not in ops(edited)
    np.testing.assert_allclose(run(model, feeds)[0], run(edited, feeds)[0], rtol=1e-6, atol=1e-6)
    assert apply(mask_sub_to_add, attention())[0] == 0  # an Add mask: nothing to do


def test_drop_present_outputs():
    nodes = [helper.make_node("Relu", ["x"], ["logits"], name="a"), helper.make_node("Neg", ["x"], ["present.0"],
                                                                                     name="b")]
    model = model_of(nodes, [("x", [2])], [("logits", [2]), ("present.0", [2])], {})
    fired, edited = apply(drop_present_outputs, model)
    assert fired == 1 and [o.name for o in edited.graph.output] == ["logits"]
    assert ops(edited) == ["Relu"]  # the node that only fed the dropped output is gone
    again, _ = apply(drop_present_outputs, edited)
    assert again == 0  # nothing named present… left


def test_share_weights_merges_repeats_and_transposes():
    w = RNG.normal(size=(16, 24)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"], name="m1"),
             helper.make_node("MatMul", ["x", "w_again"], ["b"], name="m2"),
             helper.make_node("MatMul", ["a", "w_t"], ["c"], name="m3"),
             helper.make_node("Add", ["c", "small"], ["y"], name="add"),
             helper.make_node("Add", ["b", "small_again"], ["z"], name="add2")]
    inits = {"w": w, "w_again": w.copy(), "w_t": np.ascontiguousarray(w.T),
             "small": np.ones(16, np.float32), "small_again": np.ones(24, np.float32)}
    model = model_of(nodes, [("x", [3, 16])], [("y", [3, 16]), ("z", [3, 24])], inits)
    feeds = {"x": RNG.normal(size=(3, 16)).astype(np.float32)}
    fired, edited = apply(share_weights, model)
    assert fired == 2  # w_again, w_t; the 64-byte constants are left as they are
    assert sorted(i.name for i in edited.graph.initializer) == ["small", "small_again", "w"]
    assert ops(edited) == ["Add", "Add", "MatMul", "MatMul", "MatMul", "Transpose"]
    for got, want in zip(run(edited, feeds), run(model, feeds)):
        np.testing.assert_array_equal(got, want)
    again, _ = apply(share_weights, edited)
    assert again == 0


def test_counts_on_npuevals_own_export(tmp_path):
    from checkpoints import make_checkpoint

    from npueval.build.export import export_onnx, reference_logits
    from npueval.build.simplify import simplify
    from npueval.build.verify import check_stage, random_ids
    from npueval.core.checkpoint import load_model, open_checkpoint

    model = load_model(open_checkpoint(make_checkpoint(tmp_path / "ckpt", n_layer=3)))
    export_onnx(model, tmp_path / "e.onnx", seq_len=32)
    simplify(tmp_path / "e.onnx", tmp_path / "s.onnx", 2, 32)
    edited, counts = run_passes(onnx.load(str(tmp_path / "s.onnx")))
    # Every per-layer pass fires once per layer: a pass that stops matching fails here.
    assert {k: v for k, v in counts.items() if k != "share_weights"} == {
        "drop_present_outputs": 3, "split_qkv": 3, "gemm_to_matmul": 3, "scale_q_first": 3, "mask_sub_to_add": 3}
    # the tied LM head and layers 1–2's attention masks at least (the tiny checkpoint repeats more)
    assert counts["share_weights"] >= 3
    big = [i for i in edited.graph.initializer if model.config.vocab_size in i.dims]
    assert [(i.name, list(i.dims)) for i in big] == [("lm.transformer.wte.weight", [model.config.vocab_size, 32])]
    assert [list(n.input) for n in edited.graph.node if n.op_type == "Transpose" and "npueval" in n.name] == [
        ["lm.transformer.wte.weight"]]
    assert [o.name for o in edited.graph.output] == ["logits"]
    onnx.save(edited, str(tmp_path / "p.onnx"))
    ids = random_ids(2, 32, model.config.vocab_size)
    assert check_stage(tmp_path / "p.onnx", ids, reference_logits(model, ids))["rel_err"] < 1e-6
