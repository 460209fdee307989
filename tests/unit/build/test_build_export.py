"""Stage 1: the ONNX export has a dynamic batch axis and the model's numbers."""

import numpy as np
import onnxruntime as ort
from checkpoints import make_checkpoint

from npueval.build.export import OPSET, export_onnx, reference_logits
from npueval.core.checkpoint import load_model, open_checkpoint
from npueval.core.model_io import INPUT, LOGITS


def test_export_matches_pytorch_at_any_batch(tmp_path):
    model = load_model(open_checkpoint(make_checkpoint(tmp_path / "ckpt")))
    info = export_onnx(model, tmp_path / "model.onnx", seq_len=64)
    assert info["opset"] == OPSET == 13 and info["file"] == "model.onnx"
    assert info["ops"]["Softmax"] == 2 and "Slice" in info["ops"]  # one attention per layer; simplify removes Slice
    assert info["outputs"] == [LOGITS, "present.0", "present.1"]  # as the port's transformers 2.5.1 model
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,), outs = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1]) == (INPUT, "tensor(int64)", 64) and isinstance(inp.shape[0], str)
    assert [o.name for o in outs] == info["outputs"] and outs[0].shape[0] == inp.shape[0]
    rng = np.random.default_rng(0)
    for batch in (1, 3):
        ids = rng.integers(0, model.config.vocab_size, (batch, 64))
        logits, present0, _ = session.run(None, {INPUT: ids})
        # The port's attention (w·b − 1e4·(1 − b)) against transformers' own eager attention.
        ref = reference_logits(model, ids)
        assert logits.shape == (batch, 64, model.config.vocab_size)
        assert np.abs(logits - ref).max() < 1e-5
        assert present0.shape == (2, batch, 2, 64, 16)  # key and value, (B, heads, L, head dim)
        assert not model.training
    assert model.config._attn_implementation == "eager"  # the export leaves the model as it was
