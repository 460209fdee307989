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


@pytest.mark.parametrize("output", ["nll", "logits"])
def test_nll_many_is_nll_on_each_batch_through_infer_pipeline(built, output, monkeypatch):
    from npueval.actors.om_backend import OmBackend

    result = built[output]
    om = OmBackend(result.om)
    rng = np.random.default_rng(5)
    vocab = result.manifest["config"]["vocab_size"]
    batches = [rng.integers(0, vocab, (B, L)) for _ in range(4)] + [rng.integers(0, vocab, (1, L))]  # a short last
    expected = [om.nll(x) for x in batches]
    session = om._session
    calls = []

    def pipeline(feeds_list, *args, **kwargs):
        calls.append(len(feeds_list))
        return type(session).infer_pipeline(session, feeds_list, *args, **kwargs)

    def no_infer(*args, **kwargs):
        raise AssertionError("nll_many called infer")

    monkeypatch.setattr(session, "infer_pipeline", pipeline)
    monkeypatch.setattr(session, "infer", no_infer)
    entries, device_s = len(session.summary().exec_time_list), om.device_seconds()
    got = om.nll_many(batches)
    assert calls == [len(batches)]  # one call: the model's outputs are far under the budget here
    assert len(session.summary().exec_time_list) == entries + len(batches)  # one execution per batch
    assert om.device_seconds() > device_s
    for out, exp in zip(got, expected):
        assert out.dtype == exp.dtype == np.float32
        np.testing.assert_array_equal(out, exp)
    om.pipeline_feeds = 2  # as a budget of two batches' outputs would make it
    calls.clear()
    for out, exp in zip(om.nll_many(batches), expected):
        np.testing.assert_array_equal(out, exp)
    assert calls == [2, 2, 1]
    assert om.nll_many([]) == [] and calls == [2, 2, 1]  # nothing to hand over: no call
    om.close()


def test_a_logits_model_goes_one_batch_per_pipeline_call(built):
    from types import SimpleNamespace

    from npueval.actors import om_backend
    from npueval.actors.om_backend import OmBackend, output_bytes, pipeline_feeds

    def desc(shape, datatype="dtype.float32", size=0):  # aclruntime's enum prints as dtype.float32
        return SimpleNamespace(name="out", datatype=datatype, shape=shape, size=size)

    port = desc([8, 512, 21128])  # the port's logits at B = 8: 346 MB a batch
    assert output_bytes([port]) == 8 * 512 * 21128 * 4
    assert pipeline_feeds([port]) == 1
    assert pipeline_feeds([desc([8, 512])]) == om_backend.PIPELINE_MAX_FEEDS  # the loss head: 16 KiB a batch
    assert pipeline_feeds([desc([4, 100], "float16")], budget=3 * 800) == 3
    assert output_bytes([desc([-1, 512], size=12345)]) == 12345  # a dynamic shape: the size ais_bench gives
    built_logits = OmBackend(built["logits"].om)
    vocab = built["logits"].manifest["config"]["vocab_size"]
    assert built_logits.pipeline_feeds == min(om_backend.PIPELINE_MAX_FEEDS,
                                              om_backend.PIPELINE_OUTPUT_BYTES // (B * L * vocab * 4))


def test_the_fake_pipeline_refuses_what_ais_bench_refuses(built, monkeypatch):
    from ais_bench.infer.interface import InferSession

    session = InferSession(0, str(built["nll"].om))
    ids = np.random.default_rng(6).integers(0, 100, (B, L))
    feeds = [ids, ids]
    outputs = session.infer_pipeline([feeds, feeds])
    assert len(outputs) == 2 and len(session.summary().exec_time_list) == 2
    for out in outputs:
        np.testing.assert_array_equal(out[0], session.infer(feeds)[0])
    with pytest.raises(RuntimeError, match="feeds_list size 513 is over the limit 512"):
        session.infer_pipeline([feeds] * 513)
    flat = ids.reshape(1, B * L)  # the same bytes in another shape
    with pytest.raises(RuntimeError, match="all feeds must have the same shape"):
        session.infer_pipeline([feeds, [flat, flat]])
    for bad in ([], (feeds,), [[]]):
        with pytest.raises(RuntimeError, match="must be a non-empty list"):
            session.infer_pipeline(bad)
    with pytest.raises(RuntimeError, match=r"in size:256 needsize:512 not match"):
        session.infer_pipeline([[ids.astype(np.int32), ids]])
    with pytest.raises(RuntimeError, match="feeds size 1 not equal to model tensor desc size 2"):
        session.infer_pipeline([[ids]])
    with pytest.raises(RuntimeError, match="wrong infer_mode"):
        session.infer_pipeline([feeds], mode="fast")
    monkeypatch.setenv("FAKE_AIS_BENCH_OLD", "1")
    old = InferSession(0, str(built["nll"].om), loop=2)
    old.infer_pipeline([feeds] * 3)
    assert len(old.sumary().exec_time_list) == 6 and not hasattr(old, "summary")  # loop entries per feed
