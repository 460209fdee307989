"""On a real Ascend host only: ATC accepts the graph, and the OM's loss matches onnxruntime.

Not yet run on hardware. Needs CANN (atc), npu-smi, ais_bench and an NPU; skipped elsewhere.
Run with `python -m pytest -m hardware tests/hardware` on an NPU host; check_chips.py beside
this file does the same for every chip as a user would, and writes a report for bug reports.
"""

import os
import shutil

import numpy as np
import pytest

pytestmark = [
    pytest.mark.hardware,
    pytest.mark.skipif(shutil.which("atc") is None or shutil.which("npu-smi") is None,
                       reason="needs CANN's atc and npu-smi (an Ascend NPU host)"),
]


def infer_on_chip(ais_bench, om, inputs):
    """One ais_bench inference on chip 0, the session freed after."""
    session = ais_bench.InferSession(0, str(om))
    try:
        return session.infer(inputs)
    finally:
        if hasattr(session, "free_resource"):  # 2024 on; the pre-2024 package has an instance finalize()
            session.free_resource()
        else:
            session.finalize()


def test_atc_compiles_the_loss_head_graph_and_the_chip_computes_the_loss_in_float32(tmp_path):
    ais_bench = pytest.importorskip("ais_bench.infer.interface")
    import onnxruntime as ort
    from checkpoints import make_checkpoint

    from npueval.build.pipeline import BuildConfig, build
    from npueval.build.verify import random_ids
    from npueval.core.model_io import targets_for

    result = build(BuildConfig(make_checkpoint(tmp_path / "ckpt"), tmp_path / "out", batch_size=4, seq_len=64))
    assert result.om is not None and result.om.is_file()
    os.chmod(result.om, 0o644)
    ids = random_ids(4, 64, result.manifest.vocab_size, seed=11)
    targets = targets_for(ids)
    (nll,) = infer_on_chip(ais_bench, result.om, [ids, targets])
    ref = ort.InferenceSession(str(tmp_path / "out" / "model.onnx")).run(None, {"input_ids": ids,
                                                                                "targets": targets})[0]
    assert nll.dtype == np.float32
    # fp16 matmuls, float32 loss: per-token NLL within a few hundredths of the float32 graph's.
    assert np.abs(nll[:, :-1] - ref[:, :-1]).max() < 5e-2


def test_run_puts_one_actor_on_every_healthy_chip_and_matches_onnx(tmp_path):
    """Ray's own NPU detection, healthy chips only, the OM through the object store, and the
    per-device check against the host ONNX model."""
    pytest.importorskip("ais_bench.infer.interface")
    from checkpoints import make_checkpoint
    from run_data import prepare_data

    from npueval.build.pipeline import BuildConfig, build
    from npueval.cluster.devices import discover
    from npueval.eval.driver.run import RunConfig, run

    build(BuildConfig(make_checkpoint(tmp_path / "ckpt"), tmp_path / "build", batch_size=4, seq_len=64))
    data = prepare_data(tmp_path / "d", tmp_path / "ckpt" / "vocab.txt", 60_000, mode="sliding", n_ctx=64)
    healthy = [d for d in discover() if d.healthy]
    results = run(RunConfig.from_flags(data=data, out=tmp_path / "out", model=tmp_path / "build",
                                       check_against=tmp_path / "build" / "model.onnx")).results.to_json()
    assert results["backend"] == "om" and results["fallback"] is None
    assert sorted(d["device"] for d in results["per_device"]) == sorted(f"npu:{d.logic_id}" for d in healthy)
    for d in results["per_device"]:
        assert d["fps"] > 0 and d["check"]["max_abs_err"] < 5e-2


def test_infer_pipeline_gives_what_infer_gives_batch_by_batch(tmp_path):
    """`run`'s default hands a block's batches to ais_bench's infer_pipeline; on the chip it must
    give the per-batch infer's numbers, and one exec_time_list entry per batch."""
    interface = pytest.importorskip("ais_bench.infer.interface")
    if not hasattr(interface.InferSession, "infer_pipeline"):
        pytest.skip("the pre-2024 ais_bench has no infer_pipeline")
    from checkpoints import make_checkpoint

    from npueval.actors.om_backend import OmBackend
    from npueval.build.pipeline import BuildConfig, build
    from npueval.build.verify import random_ids

    result = build(BuildConfig(make_checkpoint(tmp_path / "ckpt"), tmp_path / "out", batch_size=4, seq_len=64))
    os.chmod(result.om, 0o644)
    vocab = result.manifest.vocab_size
    batches = [random_ids(4, 64, vocab, seed=s) for s in range(5)] + [random_ids(3, 64, vocab, seed=5)]
    backend = OmBackend(result.om)
    try:
        one_by_one = [backend.nll(b) for b in batches]
        entries = len(backend._session.summary().exec_time_list)
        together = backend.nll_many(batches)
        assert len(backend._session.summary().exec_time_list) == entries + len(batches)
        assert backend.device_seconds() > 0 and backend._session.summary().exec_time_list == []  # read, then reset
    finally:
        backend.close()
    for a, b in zip(one_by_one, together):
        assert a.shape == b.shape and np.array_equal(a, b)


def test_the_chip_check_script_passes_on_every_chip(tmp_path):
    """What a user runs to check a new host (tests/hardware/check_chips.py): every chip builds,
    runs and agrees with onnxruntime."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("ais_bench.infer.interface")
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("check_chips.py")), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, (tmp_path / "report.txt").read_text()
    assert "every chip ok" in done.stdout


def test_a_llama_om_keeps_its_rms_norms_in_float32_past_fp16s_range(tmp_path):
    """Embeddings scaled so the residual stream passes 256, where x² overflows fp16: with each
    RMSNorm's statistics in keep_dtype.cfg the OM's loss still follows onnxruntime's."""
    ais_bench = pytest.importorskip("ais_bench.infer.interface")
    import onnxruntime as ort
    from checkpoints import make_hf_checkpoint
    from safetensors.torch import load_file, save_file

    from npueval.build.pipeline import BuildConfig, build
    from npueval.build.verify import random_ids
    from npueval.core.model_io import targets_for

    folder = make_hf_checkpoint(tmp_path / "llama", "llama")
    state = load_file(folder / "model.safetensors")
    state["model.embed_tokens.weight"] = state["model.embed_tokens.weight"] * 2000  # |x| in the thousands
    save_file(state, folder / "model.safetensors")
    result = build(BuildConfig(folder, tmp_path / "out", batch_size=4, seq_len=64))
    assert result.manifest.atc["keep_fp32"]["rms_norm"] > 0
    os.chmod(result.om, 0o644)
    ids = random_ids(4, 64, result.manifest.vocab_size, seed=3)
    targets = targets_for(ids)
    (nll,) = infer_on_chip(ais_bench, result.om, [ids, targets])
    ref = ort.InferenceSession(str(tmp_path / "out" / "model.onnx")).run(None, {"input_ids": ids,
                                                                                "targets": targets})[0]
    assert np.isfinite(nll).all() and np.abs(nll[:, :-1] - ref[:, :-1]).max() < 5e-2
