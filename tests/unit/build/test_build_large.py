"""Models over protobuf's 2 GiB limit (build/onnx_files.py): their weights beside every stage's
file. A model that size takes minutes and gigabytes, so these tests lower the limit to nothing and
make the exporter write its weights as it does above 2 GiB, one file per tensor beside the model;
BENCHMARKS.md has a real one."""

import os
import sys
import weakref

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from checkpoints import make_checkpoint, make_hf_checkpoint
from run_data import FAKES

from npueval.build import graph, onnx_files, pipeline, simplify
from npueval.build.pipeline import BuildConfig, build
from npueval.build.verify import random_ids
from npueval.core.files import file_sha256
from npueval.core.model_io import targets_for, weights_file

B, L = 2, 24
STAGES = ("1-export.onnx", "2-simplified.onnx", "3-npu.onnx", "model.onnx")


def go_over_the_limit(monkeypatch) -> list[list[str]]:
    """Every model from now on too big to hold its weights, and the exporter writing them as it
    does over 2 GiB; returns the list of what each export left in its folder."""
    import torch

    monkeypatch.setattr(onnx_files, "INLINE_LIMIT", 0)
    monkeypatch.setattr(simplify, "WEIGHT_MIN_BYTES", 1024)  # the weights of a model this size
    monkeypatch.setattr(graph, "SET_ASIDE_BYTES", 1024)
    real_export = torch.onnx.export
    exported = []

    def export_over_2gib(module, args, f, **kwargs):
        real_export(module, args, f, **kwargs)
        model = onnx.load(f)
        onnx.save(model, f, save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=1024)
        exported.append(sorted(os.listdir(os.path.dirname(f))))

    monkeypatch.setattr(torch.onnx, "export", export_over_2gib)
    return exported


@pytest.fixture
def fake_atc(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", os.pathsep.join([str(FAKES), os.path.dirname(sys.executable), "/usr/bin", "/bin"]))
    monkeypatch.setenv("FAKE_ATC_RECORD", str(tmp_path / "atc-calls.jsonl"))


def nll_of(model_path, ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input_ids": ids, "targets": targets_for(ids)})[0]


def external_weights(path) -> set[str]:
    graph = onnx.load(str(path), load_external_data=False).graph
    return {entry.value for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
            for entry in t.external_data if entry.key == "location"}


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_every_stage_keeps_its_weights_in_one_file_beside_it(tmp_path, monkeypatch, fake_atc, family):
    """GPT-2 with --keep-stages; a Llama without, which keeps model.onnx alone, and never more than
    two stages' weights at once."""
    keep = family == "gpt2"
    ckpt = (make_checkpoint(tmp_path / "ckpt", n_layer=2) if family == "gpt2"
            else make_hf_checkpoint(tmp_path / "ckpt", family))
    inline = build(BuildConfig(ckpt, tmp_path / "inline", batch_size=B, seq_len=L, soc="Ascend310P3"))
    assert sorted(p.name for p in (tmp_path / "inline").glob("*.onnx")) == sorted(STAGES)  # small: every stage
    exported = go_over_the_limit(monkeypatch)
    out = tmp_path / "out"
    weights_at_verify, torch_models, alive_at_verify = [], [], []
    real_check, real_load = pipeline.check_stage, pipeline.load_model

    def load_model(ckpt):
        model = real_load(ckpt)
        torch_models.append(weakref.ref(model))
        return model

    def check_stage(path, *args):
        weights_at_verify.append(sorted(p.name for p in out.glob("*.data")))
        alive_at_verify.append(torch_models[-1]() is not None)
        return real_check(path, *args)

    monkeypatch.setattr(pipeline, "check_stage", check_stage)
    monkeypatch.setattr(pipeline, "load_model", load_model)
    result = build(BuildConfig(ckpt, out, batch_size=B, seq_len=L, soc="Ascend310P3", keep_stages=keep))
    m = result.manifest
    # The exporter's one file per tensor, gathered into one: nothing of it is left in the folder.
    assert len(exported) == 1 and len(exported[0]) > 10
    kept = STAGES if keep else STAGES[-1:]
    for stage in kept:
        assert external_weights(out / stage) == {weights_file(out / stage).name}
        assert (out / stage).stat().st_size < weights_file(out / stage).stat().st_size
    assert sorted(p.name for p in out.iterdir() if ".onnx" in p.name) == sorted(
        [*kept, *(weights_file(out / s).name for s in kept)])
    assert [bool(s.get("removed")) for s in m.stages.values()] == [not keep] * 3 + [False]
    assert max(len(names) for names in weights_at_verify) == (len(STAGES) if keep else 2)
    # The PyTorch model's weights are gone from memory once exported: no stage is checked beside them.
    assert alive_at_verify == [False] * len(STAGES)
    assert m.onnx_weights == "model.onnx.data" and inline.manifest.onnx_weights is None
    assert [f.name for f in m.files] == ["model.onnx", "model.onnx.data", "model.om"]  # each checked before a run
    assert m.files[1].sha256 == file_sha256(out / "model.onnx.data")
    # onnxsim ran with the weights as inputs, and every stage still matches PyTorch.
    assert m.stages["simplify"]["weights_as_inputs"] > 0
    assert inline.manifest.stages["simplify"]["weights_as_inputs"] == 0
    assert all(stage["verify"]["rel_err"] <= 1e-4 for stage in m.stages.values())
    assert m.stages["passes"]["counts"] == inline.manifest.stages["passes"]["counts"]
    assert m.atc["argv"] == inline.manifest.atc["argv"] and m.atc["keep_fp32"] == inline.manifest.atc["keep_fp32"]
    ids = random_ids(B, L, m.vocab_size, seed=5)
    np.testing.assert_allclose(nll_of(out / "model.onnx", ids), nll_of(tmp_path / "inline" / "model.onnx", ids),
                               rtol=1e-5, atol=1e-6)
    # ATC reads the weights from the model's folder into the OM, which needs nothing beside it.
    alone = tmp_path / "alone"
    alone.mkdir()
    os.replace(result.om, alone / "model.om")
    assert external_weights(alone / "model.om") == set()
    np.testing.assert_allclose(nll_of(alone / "model.om", ids), nll_of(out / "model.onnx", ids), rtol=1e-6)


def test_a_model_under_the_limit_is_one_file_and_a_stale_weights_file_goes(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(600, dtype=np.float32).reshape(20, 30), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 20])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 30])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "m.onnx"
    weights_file(path).write_bytes(b"a weights file of an earlier, larger build")
    onnx_files.save(model, path)
    assert not weights_file(path).exists() and external_weights(path) == set()
    assert onnx_files.weight_bytes(model) == 2400 and not onnx_files.too_big_inline(model)
    x = np.ones((2, 20), dtype=np.float32)
    expected = x @ numpy_helper.to_array(weight)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], expected)


def test_save_checks_the_file_it_wrote(tmp_path, monkeypatch):
    from onnx import TensorProto, helper

    monkeypatch.setattr(onnx_files, "INLINE_LIMIT", 0)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "missing"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    with pytest.raises(onnx.checker.ValidationError, match="missing"):
        onnx_files.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "bad.onnx")


def test_shape_inference_sets_the_weights_bytes_aside_and_gives_them_back(monkeypatch):
    from onnx import TensorProto, helper, numpy_helper

    monkeypatch.setattr(graph, "SET_ASIDE_BYTES", 1024)
    big = numpy_helper.from_array(np.arange(600, dtype=np.float32).reshape(20, 30), "big")
    small = numpy_helper.from_array(np.array([3, 10], dtype=np.int64), "shape")
    nodes = [helper.make_node("MatMul", ["x", "big"], ["h"]), helper.make_node("Reshape", ["h", "shape"], ["r"]),
             helper.make_node("Relu", ["r"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 20])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [big, small])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    serialized = []
    real = onnx.shape_inference.infer_shapes
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes",
                        lambda m: serialized.append(m.ByteSize()) or real(m))
    out = graph.with_inferred_shapes(model)
    assert out is model and serialized[0] < 200  # the 2,400 bytes of `big` were not in it
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    assert shapes == {"h": [1, 30], "r": [3, 10]}  # the small constant was read
    np.testing.assert_array_equal(numpy_helper.to_array(model.graph.initializer[0]), numpy_helper.to_array(big))
