"""Stages 2, 4 and 5 on a tiny GPT-2: simplify to a fixpoint, the loss head, verification."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from checkpoints import make_checkpoint

from npueval.build.export import export_onnx, reference_logits
from npueval.build.loss_head import LOSS_OPS, add_loss_head
from npueval.build.simplify import simplify
from npueval.build.verify import check_stage, random_ids
from npueval.core.checkpoint import load_model, open_checkpoint
from npueval.core.errors import RunError
from npueval.core.model_io import NLL, TARGETS, targets_for

B, L = 3, 64


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("build")
    model = load_model(open_checkpoint(make_checkpoint(folder / "ckpt")))
    export_onnx(model, folder / "export.onnx", seq_len=L)
    info = simplify(folder / "export.onnx", folder / "simplified.onnx", B, L)
    head = add_loss_head(folder / "simplified.onnx", folder / "nll.onnx")
    return folder, model, info, head


def test_simplify_reaches_a_fixpoint_without_slice(built):
    folder, model, info, _ = built
    assert info["ops_before"]["Slice"] > 0 and "Slice" not in info["ops_after"]
    assert sum(info["ops_after"].values()) < sum(info["ops_before"].values())
    assert 1 <= info["rounds"] <= 8 and info["input_shape"] == [B, L]
    graph = onnx.load(str(folder / "simplified.onnx")).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [B, L]
    ids = random_ids(B, L, model.config.vocab_size, seed=3)
    got = ort.InferenceSession(str(folder / "simplified.onnx")).run(None, {"input_ids": ids})[0]
    assert np.abs(got - reference_logits(model, ids)).max() < 1e-5


def test_loss_head_gives_torch_cross_entropy(built):
    import torch

    folder, model, _, head = built
    assert head["output"] == NLL and head["output_shape"] == [B, L]
    ids = random_ids(B, L, model.config.vocab_size, seed=4)
    session = ort.InferenceSession(str(folder / "nll.onnx"))
    assert [i.name for i in session.get_inputs()] == ["input_ids", TARGETS]
    assert [o.name for o in session.get_outputs()] == [NLL]
    nll = session.run(None, {"input_ids": ids, TARGETS: targets_for(ids)})[0]
    assert nll.dtype == np.float32 and nll.shape == (B, L)
    with torch.no_grad():
        logits = torch.from_numpy(reference_logits(model, ids))
        ref = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), torch.from_numpy(ids[:, 1:]).reshape(-1), reduction="none"
        ).reshape(B, L - 1)
    assert np.abs(nll[:, :-1] - ref.numpy()).max() < 1e-5
    ops = [n.op_type for n in onnx.load(str(folder / "nll.onnx")).graph.node]
    assert "Slice" not in ops and ops[-len(LOSS_OPS):] == list(LOSS_OPS)


def test_targets_are_the_next_tokens():
    ids = np.array([[5, 6, 7], [8, 9, 10]])
    assert targets_for(ids).tolist() == [[6, 7, 0], [9, 10, 0]]


def test_verification_passes_each_stage_and_catches_a_wrong_model(built):
    folder, model, _, _ = built
    ids = random_ids(B, L, model.config.vocab_size)
    for name in ("simplified.onnx", "nll.onnx"):
        result = check_stage(folder / name, ids, reference_logits(model, ids))
        assert result["rel_err"] < 1e-6 and result["max_abs_err"] < 1e-4
    other = load_model(open_checkpoint(make_checkpoint(folder / "other", seed=9)))
    with pytest.raises(RunError, match=r"nll.onnx: differs from the PyTorch model by .* above the tolerance 0.0001"):
        check_stage(folder / "nll.onnx", ids, reference_logits(other, ids))
    loose = check_stage(folder / "nll.onnx", ids, reference_logits(other, ids), tolerance=10.0)
    assert loose["rel_err"] > 1e-2 and loose["tolerance"] == 10.0
