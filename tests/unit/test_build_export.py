"""Stage 1: the ONNX export has a dynamic batch axis and the model's numbers."""

import numpy as np
import onnxruntime as ort

from checkpoints import make_checkpoint
from npueval.build.checkpoint import load_model, open_checkpoint
from npueval.build.export import INPUT, LOGITS, OPSET, export_onnx, reference_logits


def test_export_matches_pytorch_at_any_batch(tmp_path):
    model = load_model(open_checkpoint(make_checkpoint(tmp_path / "ckpt")))
    info = export_onnx(model, tmp_path / "model.onnx", seq_len=64)
    assert info["opset"] == OPSET == 13 and info["file"] == "model.onnx"
    assert info["ops"]["Softmax"] == 2 and "Slice" in info["ops"]  # one attention per layer; simplify removes Slice
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1]) == (INPUT, "tensor(int64)", 64) and isinstance(inp.shape[0], str)
    assert out.name == LOGITS and out.shape[0] == inp.shape[0]
    rng = np.random.default_rng(0)
    for batch in (1, 3):
        ids = rng.integers(0, model.config.vocab_size, (batch, 64))
        got = session.run(None, {INPUT: ids})[0]
        ref = reference_logits(model, ids)
        assert got.shape == (batch, 64, model.config.vocab_size)
        assert np.abs(got - ref).max() < 1e-5
        assert not model.training
