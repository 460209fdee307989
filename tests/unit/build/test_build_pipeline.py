"""`npueval build` end to end on tiny GPT-2s, with fake `atc` and `npu-smi` on PATH."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from checkpoints import make_checkpoint
from run_data import FAKES, REPO
from vocabs import small_vocab_tokens

from npueval.build.loss_head import KEEP_FP32_NODES
from npueval.build.pipeline import BuildConfig, build
from npueval.build.verify import random_ids
from npueval.core.errors import UserError
from npueval.core.files import file_sha256
from npueval.core.model_io import targets_for
from npueval.eval.cli import main

B, L = 2, 32


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "gpt2")


@pytest.fixture
def no_cann(monkeypatch, tmp_path):
    """PATH without atc or npu-smi, and no CANN variables."""
    for var in ("ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", os.path.dirname(os.sys.executable) + os.pathsep + "/usr/bin:/bin")


@pytest.fixture
def fake_cann(no_cann, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(FAKES) + os.pathsep + os.environ["PATH"])
    record = tmp_path / "atc-calls.jsonl"
    monkeypatch.setenv("FAKE_ATC_RECORD", str(record))
    return record


def calls(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()]


def test_without_cann_the_build_stops_after_verification_and_writes_atc_sh(checkpoint, tmp_path, no_cann):
    result = build(BuildConfig(checkpoint, tmp_path / "out", batch_size=B, seq_len=L))
    m = result.manifest.to_json()  # the file's keys, as users read them
    assert result.om is None and m["om"] is None and m["atc"]["result"].startswith("no CANN")
    assert "--soc_version=Ascend${chip}" in m["atc"]["argv"]  # the command atc.sh runs
    assert list(m["stages"]) == ["export", "simplify", "passes", "loss_head"]
    assert all(stage["verify"]["rel_err"] < 1e-6 for stage in m["stages"].values())
    counts = dict(m["stages"]["passes"]["counts"])
    assert counts.pop("share_weights") >= 2  # the tied LM head, layer 1's masks
    assert counts == {"drop_present_outputs": 2, "split_qkv": 2, "gemm_to_matmul": 2, "scale_q_first": 2,
                      "mask_sub_to_add": 2}
    assert "Slice" not in m["stages"]["simplify"]["ops_after"]
    assert m["inputs"] == [{"name": "input_ids", "dtype": "int64", "shape": [B, L]},
                           {"name": "targets", "dtype": "int64", "shape": [B, L]}]
    assert m["outputs"] == [{"name": "nll", "dtype": "float32", "shape": [B, L]}]
    assert (m["opset"], m["batch_size"], m["seq_len"], m["output"]) == (13, B, L, "nll")
    assert m["vocab_sha256"] and m["weights_sha256"] and m["config"]["n_layer"] == 2
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == m
    assert (tmp_path / "out" / "keep_dtype.cfg").read_text() == "".join(f"{node}\n" for node in KEEP_FP32_NODES)
    ini = (tmp_path / "out" / "op_precision.ini").read_text()
    assert ini == (REPO / "op_precision.ini").read_text()
    assert ini == "Gelu=high_performance\nTanh=high_performance\n"
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"))
    ids = random_ids(B, L, m["config"]["vocab_size"], seed=5)
    nll = session.run(None, {"input_ids": ids, "targets": targets_for(ids)})[0]
    assert nll.shape == (B, L) and np.isfinite(nll).all()


def test_with_cann_atc_gets_the_documented_command(checkpoint, tmp_path, fake_cann):
    out = tmp_path / "out"
    result = build(BuildConfig(checkpoint, out, batch_size=B, seq_len=L))
    (call,) = calls(fake_cann)
    assert call["argv"] == [
        "--model=model.onnx", "--framework=5", "--output=model", f"--input_shape=input_ids:{B},{L};targets:{B},{L}",
        "--input_format=ND", "--soc_version=Ascend310P3", "--op_precision_mode=op_precision.ini",
        "--precision_mode=force_fp16", "--log=error", "--keep_dtype=keep_dtype.cfg",
    ]
    assert call["cwd"] == str(out)
    assert call["keep_dtype"] == "loss_head/LogSoftmax\nloss_head/GatherElements\nloss_head/Squeeze\nloss_head/Neg\n"
    assert result.om == out / "model.om" and result.om.is_file()
    assert result.manifest.atc["result"] == "ok" and result.manifest.om == "model.om"
    assert "ATC run success" in (out / "atc.log").read_text()
    # The files run checks before it runs them, as they were written.
    assert [(f.name, f.sha256, f.size) for f in result.manifest.files] == [
        (name, file_sha256(out / name), (out / name).stat().st_size) for name in ("model.onnx", "model.om")]
    # atc.sh, run on the same host, makes the same call.
    subprocess.run(["bash", str(out / "atc.sh")], check=True, capture_output=True)
    first, second = calls(fake_cann)
    assert second == first


def test_every_keep_dtype_entry_names_a_node_of_the_compiled_graph(checkpoint, tmp_path, fake_cann):
    """Each entry is a node of model.onnx, the graph ATC compiles, and the float ops from the
    LogSoftmax on (the loss) are all kept; the fake atc refuses an entry that matches nothing."""
    import onnx

    out = tmp_path / "out"
    build(BuildConfig(checkpoint, out, batch_size=B, seq_len=L))
    graph = onnx.load(str(out / "model.onnx")).graph
    nodes = {n.name: n.op_type for n in graph.node}
    entries = (out / "keep_dtype.cfg").read_text().splitlines()
    assert entries and all(e in nodes for e in entries)
    assert sorted(nodes[e] for e in entries) == ["GatherElements", "LogSoftmax", "Neg", "Squeeze"]


@pytest.mark.parametrize("entry, refused", [
    ("OpType::LogSoftmax", True),  # the ONNX type: the parser maps it to LogSoftmaxV2
    ("OpType::Squeeze", True),  # SqueezeV3 at opset 13
    ("OpType::LogSoftmaxV2", False),
    ("OpType::GatherElements", False),
    ("loss_head/Neg", False),
    ("loss_head/Nope", True),
])
def test_the_fake_atc_matches_keep_dtype_as_the_onnx_parser_maps_types(checkpoint, tmp_path, fake_cann, entry,
                                                                        refused):
    out = tmp_path / "out"
    build(BuildConfig(checkpoint, out, batch_size=B, seq_len=L))
    (out / "keep_dtype.cfg").write_text(entry + "\n")
    done = subprocess.run(["bash", str(out / "atc.sh")], capture_output=True, text=True)
    assert (done.returncode != 0) == refused
    assert ("match no operator of the model: " + entry in done.stdout) == refused


def test_a_given_soc_needs_no_npu_smi(checkpoint, tmp_path, fake_cann, monkeypatch):
    monkeypatch.setenv("PATH", os.environ["PATH"].replace(str(FAKES) + os.pathsep, ""))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "atc").symlink_to(FAKES / "atc")
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ["PATH"])
    build(BuildConfig(checkpoint, tmp_path / "out", batch_size=B, seq_len=L, soc="Ascend910B2C", output="logits"))
    (call,) = calls(fake_cann)
    assert "--soc_version=Ascend910B2C" in call["argv"] and f"--input_shape=input_ids:{B},{L}" in call["argv"]
    assert call["keep_dtype"] is None and not any(a.startswith("--keep_dtype") for a in call["argv"])
    assert "Ascend910B2C" in (tmp_path / "out" / "atc.sh").read_text()


def test_soc_auto_without_npu_smi_is_a_clear_error(checkpoint, tmp_path, fake_cann, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "atc").symlink_to(FAKES / "atc")
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ["PATH"].replace(str(FAKES) + os.pathsep, ""))
    with pytest.raises(UserError, match="--soc auto: npu-smi is not on PATH"):
        build(BuildConfig(checkpoint, tmp_path / "out", batch_size=B, seq_len=L))


def test_atc_failing_quotes_its_last_lines(checkpoint, tmp_path, fake_cann, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_ATC_FAIL", "1")
    code = main(["build", str(checkpoint), "--out", str(tmp_path / "out"), "--batch-size", str(B), "--seq-len", str(L),
                 "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "atc failed (exit 1)" in err[0] and "E19999: Inner Error!" in err[0] and "atc.log" in err[0]


def test_logits_output_keeps_the_ports_shape(checkpoint, tmp_path, no_cann):
    m = build(BuildConfig(checkpoint, tmp_path / "out", batch_size=B, seq_len=L, output="logits")).manifest.to_json()
    vocab = len(small_vocab_tokens())
    assert m["outputs"] == [{"name": "logits", "dtype": "float32", "shape": [B, L, vocab]}]
    assert list(m["stages"]) == ["export", "simplify", "passes"] and m["onnx"] == "model.onnx"
    assert not (tmp_path / "out" / "keep_dtype.cfg").exists()


@pytest.mark.parametrize("args, culprit", [
    (["--soc", "Kirin990"], "--soc Kirin990: not an Ascend SoC name"),
    (["--seq-len", "100"], "--seq-len 100: the model has only 64 positions"),
    (["--output", "probs"], "--output"),
    (["--batch-size", "0"], "--batch-size 0"),
])
def test_bad_flags_exit_2(checkpoint, tmp_path, args, culprit):
    r = subprocess.run(["npueval", "build", str(checkpoint), "--out", str(tmp_path / "out"), *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert culprit in r.stderr


def test_a_full_vocabulary_model_goes_through_all_stages(tmp_path, fake_cann):
    tokens = small_vocab_tokens()
    tokens += [f"##x{i}" for i in range(21128 - len(tokens))]
    assert len(tokens) == 21128
    ckpt = make_checkpoint(tmp_path / "ckpt", vocab_tokens=tokens, n_layer=1)
    result = build(BuildConfig(ckpt, tmp_path / "out", batch_size=B, seq_len=L))
    m = result.manifest.to_json()  # the file's keys, as users read them
    assert m["config"]["vocab_size"] == 21128 and result.om.is_file() and m["atc"]["result"] == "ok"
    assert all(stage["verify"]["rel_err"] < 1e-5 for stage in m["stages"].values())
    assert m["stages"]["passes"]["counts"] == dict.fromkeys(
        ["drop_present_outputs", "split_qkv", "gemm_to_matmul", "scale_q_first", "mask_sub_to_add", "share_weights"], 1)


@pytest.mark.parametrize("breakage, culprit", [
    ("no-weights", "no weights; expected model.safetensors"),
    ("no-vocab", "no vocab.txt"),
    ("mismatch", "config.json (gpt2, 3 layers"),
    ("pickle", "pytorch_model.bin: refused"),
])
def test_bad_checkpoints_exit_2_with_one_line(tmp_path, breakage, culprit):
    import torch

    folder = make_checkpoint(tmp_path / "ckpt", "bin" if breakage == "pickle" else "safetensors")
    if breakage == "no-weights":
        (folder / "model.safetensors").unlink()
    elif breakage == "no-vocab":
        (folder / "vocab.txt").unlink()
    elif breakage == "mismatch":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "n_layer": 3}))
    else:
        state = torch.load(folder / "pytorch_model.bin", weights_only=True)
        torch.save({**state, "extra": {"code": print}}, folder / "pytorch_model.bin")
    r = subprocess.run(["npueval", "build", str(folder), "--out", str(tmp_path / "out"), "--seq-len", str(L)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert culprit in r.stderr
