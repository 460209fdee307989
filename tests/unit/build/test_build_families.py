"""Llama, Qwen2 and Mistral checkpoints with their own tokenizer.json, made here with seeded random
weights: loaded as transformers loads them, built through every stage, the NLL graph against
PyTorch's cross-entropy."""

import hashlib
import json

import numpy as np
import onnxruntime as ort
import pytest
from checkpoints import TINY_HF, make_hf_checkpoint, tiny_hf_model

from npueval.build.export import reference_logits
from npueval.build.pipeline import BuildConfig, build
from npueval.build.verify import random_ids
from npueval.core.checkpoint import load_model, open_checkpoint
from npueval.core.errors import CheckpointError
from npueval.core.model_io import targets_for

B, L = 2, 24


def torch_nll(model, ids: np.ndarray) -> np.ndarray:
    """PyTorch's own per-token cross-entropy of each next token (B, L − 1), in float64."""
    import torch

    with torch.no_grad():
        logits = model(torch.from_numpy(ids)).logits.double()
        return torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), torch.from_numpy(ids[:, 1:]),
                                                 reduction="none").numpy()


@pytest.mark.parametrize(("family", "tie"), [("llama", False), ("qwen2", True), ("mistral", False)])
def test_a_checkpoint_loads_as_transformers_made_it(tmp_path, family, tie):
    ckpt = open_checkpoint(make_hf_checkpoint(tmp_path / family, family, tie=tie))
    assert ckpt.family.model_type == family and ckpt.tokenizer.kind == "tokenizer.json"
    assert ckpt.tokenizer.sha256 == hashlib.sha256((tmp_path / family / "tokenizer.json").read_bytes()).hexdigest()
    assert ckpt.shape == f"{family}, 2 layers, 32 wide, 4 heads (2 key/value), vocab {ckpt.config['vocab_size']}"
    assert ckpt.tokenizer.size <= ckpt.config["vocab_size"] and ckpt.positions == 128
    model = load_model(ckpt)
    ids = random_ids(2, 16, ckpt.config["vocab_size"])
    expected = tiny_hf_model(family, ckpt.config["vocab_size"], tie=tie)
    np.testing.assert_array_equal(reference_logits(model, ids), reference_logits(expected, ids))


@pytest.mark.slow
@pytest.mark.parametrize(("family", "tie"), [("llama", False), ("qwen2", True)])
def test_every_stage_of_the_build_matches_pytorch(tmp_path, family, tie, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no CANN: the build stops at atc.sh
    folder = make_hf_checkpoint(tmp_path / family, family, tie=tie)
    result = build(BuildConfig(folder, tmp_path / "out", batch_size=B, seq_len=L))
    m = result.manifest.to_json()
    assert (m["family"], m["tokenizer"], m["batch_size"], m["seq_len"]) == (family, "tokenizer.json", B, L)
    assert list(m["stages"]) == ["export", "simplify", "passes", "loss_head"]
    assert all(stage["verify"]["rel_err"] <= 1e-4 for stage in m["stages"].values())
    assert m["stages"]["export"]["outputs"] == ["logits"]  # no key/value cache
    counts = m["stages"]["passes"]["counts"]
    assert counts["drop_present_outputs"] == counts["split_qkv"] == counts["mask_sub_to_add"] == 0
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "out" / name).read_bytes() == (folder / name).read_bytes()
    assert m["vocab_sha256"] == hashlib.sha256((folder / "tokenizer.json").read_bytes()).hexdigest()
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = random_ids(B, L, m["config"]["vocab_size"], seed=3)
    (nll,) = session.run(None, {"input_ids": ids, "targets": targets_for(ids)})
    reference = torch_nll(load_model(open_checkpoint(folder)), ids)
    got = nll[:, :-1].astype(np.float64)
    assert np.linalg.norm(got - reference) / np.linalg.norm(reference) <= 1e-4
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["family"] == family


def llama_with(tmp_path, **change):
    """A tiny Llama checkpoint whose config.json has CHANGE applied."""
    folder = make_hf_checkpoint(tmp_path / "m", "llama")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    return folder


def test_a_family_npueval_does_not_build_is_named(tmp_path):
    folder = llama_with(tmp_path, model_type="falcon")
    with pytest.raises(CheckpointError, match=r"model_type 'falcon' is not a family npueval builds; it builds "
                                              r"gpt2, llama, qwen2, mistral"):
        open_checkpoint(folder)


def test_key_value_heads_that_do_not_divide_the_heads(tmp_path):
    folder = llama_with(tmp_path, num_key_value_heads=3)
    with pytest.raises(CheckpointError, match=r"num_key_value_heads 3 does not divide num_attention_heads 4"):
        open_checkpoint(folder)


def test_a_folder_without_a_tokenizer(tmp_path):
    folder = make_hf_checkpoint(tmp_path / "m", "qwen2")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(Exception, match=r"no tokenizer.json or vocab.txt; copy the model's tokenizer files"):
        open_checkpoint(folder)


def test_a_tokenizer_larger_than_the_config(tmp_path):
    folder = llama_with(tmp_path, vocab_size=10)
    with pytest.raises(CheckpointError, match=r"vocab_size 10 is smaller than tokenizer.json's \d+ tokens"):
        open_checkpoint(folder)


@pytest.mark.slow
def test_a_llama_compiles_with_the_gpt2_atc_command(tmp_path, monkeypatch):
    """The fake atc checks every keep_dtype entry against the graph's nodes, as ATC's parser maps them."""
    import os
    import sys

    from run_data import FAKES

    monkeypatch.setenv("PATH", os.pathsep.join([str(FAKES), os.path.dirname(sys.executable), "/usr/bin", "/bin"]))
    monkeypatch.setenv("FAKE_ATC_RECORD", str(tmp_path / "atc-calls.jsonl"))
    result = build(BuildConfig(make_hf_checkpoint(tmp_path / "llama", "llama"), tmp_path / "out", batch_size=B,
                               seq_len=L, soc="Ascend310P3"))
    assert result.om == tmp_path / "out" / "model.om" and result.manifest.atc["result"] == "ok"
    assert "--keep_dtype=keep_dtype.cfg" in result.manifest.atc["argv"]
    assert f"--input_shape=input_ids:{B},{L};targets:{B},{L}" in result.manifest.atc["argv"]
    # Each RMSNorm's statistics stay in float32 too: 2 per layer and the final one, 6 nodes each,
    # named by the exporter after the module they come from.
    norms = 2 * TINY_HF["num_hidden_layers"] + 1
    assert result.manifest.atc["keep_fp32"] == {"loss_head": 4, "rms_norm": 6 * norms}
    entries = (tmp_path / "out" / "keep_dtype.cfg").read_text().splitlines()
    rms = [e for e in entries if not e.startswith("loss_head/")]
    assert [e.rsplit("/", 1)[1] for e in rms] == ["Pow", "ReduceMean", "Add", "Sqrt", "Div", "Mul"] * norms
    assert {e.rsplit("/", 2)[1] for e in rms} == {"input_layernorm", "post_attention_layernorm", "norm"}
