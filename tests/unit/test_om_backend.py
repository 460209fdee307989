"""The om backend against a fake ais_bench that obeys the real API (tests/fakes/ais_bench)."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from npueval.eval.errors import UserError

FAKES = Path(__file__).resolve().parents[1] / "fakes"
B, L = 2, 32


@pytest.fixture(autouse=True)
def fake_ais_bench(monkeypatch):
    monkeypatch.syspath_prepend(str(FAKES))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """An OM built by `npueval build` with the fake atc (the .om holds the ONNX it compiled)."""
    from checkpoints import make_checkpoint
    from npueval.build.pipeline import BuildConfig, build

    folder = tmp_path_factory.mktemp("om")
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{FAKES}{os.pathsep}{old_path}"
    try:
        results = {out: build(BuildConfig(make_checkpoint(folder / "ckpt"), folder / out, batch_size=B, seq_len=L,
                                          output=out, soc="Ascend310P3"))
                   for out in ("nll", "logits")}
    finally:
        os.environ["PATH"] = old_path
    return results


@pytest.mark.parametrize("output", ["nll", "logits"])
@pytest.mark.parametrize("old_api", [False, True])
def test_om_backend_equals_the_onnx_backend(built, output, old_api, monkeypatch):
    from npueval.actors.om_backend import OmBackend
    from npueval.actors.onnx_backend import OnnxBackend

    if old_api:
        monkeypatch.setenv("FAKE_AIS_BENCH_OLD", "1")
    result = built[output]
    om = OmBackend(result.om)
    assert (om.batch_size, om.seq_len, om.loss_head) == (B, L, output == "nll")
    ids = np.random.default_rng(3).integers(0, result.manifest["config"]["vocab_size"], (B, L))
    reference = OnnxBackend(result.out / "model.onnx").nll(ids)
    np.testing.assert_array_equal(om.nll(ids), reference)
    np.testing.assert_array_equal(om.nll(ids[:1]), reference[:1])
    assert om.device_seconds() > 0
    om.close()
    om.close()  # twice is fine


def test_the_fake_refuses_what_ais_bench_refuses(built):
    from ais_bench.infer.interface import InferSession

    om = str(built["nll"].om)
    session = InferSession(0, om)
    ids = np.zeros((B, L), dtype=np.int64)
    with pytest.raises(RuntimeError, match=r"in size:256 needsize:512 not match"):
        session.infer([ids.astype(np.int32), ids])  # int32 for an int64 input: half the bytes
    with pytest.raises(RuntimeError, match="feeds size 1 not equal to model tensor desc size 2"):
        session.infer([ids])
    with pytest.raises(TypeError, match="must be an int"):
        InferSession(np.int64(0), om)
    with pytest.raises(ValueError, match="out of range"):
        InferSession(256, om)
    os.chmod(om, 0o664)
    try:
        with pytest.raises(PermissionError, match="should not be over 0o755"):
            InferSession(0, om)
    finally:
        os.chmod(om, 0o644)


def test_om_backend_says_what_is_wrong(built, tmp_path, monkeypatch):
    from npueval.actors.om_backend import OmBackend

    om = built["nll"].om
    os.chmod(om, 0o666)
    try:
        with pytest.raises(UserError, match="group- or other-writable, which ais_bench refuses; chmod 644"):
            OmBackend(om)
    finally:
        os.chmod(om, 0o644)
    with pytest.raises(UserError, match="no such file"):
        OmBackend(tmp_path / "none.om")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(FAKES)])
    for name in ("ais_bench", "ais_bench.infer", "ais_bench.infer.interface"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(UserError, match="needs ais_bench and aclruntime"):
        OmBackend(om)


def test_fp16_on_the_chip_stays_close(built, monkeypatch):
    from npueval.actors.om_backend import OmBackend
    from npueval.actors.onnx_backend import OnnxBackend

    monkeypatch.setenv("FAKE_AIS_BENCH_FP16", "1")
    result = built["nll"]
    ids = np.random.default_rng(4).integers(0, result.manifest["config"]["vocab_size"], (B, L))
    got, ref = OmBackend(result.om).nll(ids), OnnxBackend(result.out / "model.onnx").nll(ids)
    assert not np.array_equal(got, ref) and np.abs(got - ref).max() < 1e-2
