"""The om backend against a fake ais_bench that obeys both real generations (tests/fakes/ais_bench)."""

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from run_data import FAKES, TESTS

from npueval.core.errors import RunError, UserError

B, L = 2, 32
GENERATIONS = {"new": "pipeline", "old": "infer"}


@pytest.fixture(autouse=True)
def fake_ais_bench(monkeypatch):
    monkeypatch.syspath_prepend(str(FAKES))
    for name in ("FAKE_AIS_BENCH_OLD", "FAKE_AIS_BENCH_FP16", "FAKE_AIS_BENCH_DEVICE_MS", "FAKE_AIS_BENCH_FAIL_ON_ID",
                 "ASCEND_RT_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def generation(request, monkeypatch):
    if request.param == "old":
        monkeypatch.setenv("FAKE_AIS_BENCH_OLD", "1")
    return request.param


def both_generations(test):
    return pytest.mark.parametrize("generation", list(GENERATIONS), indirect=True)(test)


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


def random_batches(result, n: int, seed: int):
    rng = np.random.default_rng(seed)
    vocab = result.manifest.vocab_size
    return [rng.integers(0, vocab, (B, L)) for _ in range(n)] + [rng.integers(0, vocab, (1, L))]  # a short last


@both_generations
@pytest.mark.parametrize("output", ["nll", "logits"])
def test_om_backend_equals_the_onnx_backend(built, output, generation):
    from npueval.actors.om_backend import OmBackend
    from npueval.actors.onnx_backend import OnnxBackend

    result = built[output]
    om = OmBackend(result.om)
    assert (om.batch_size, om.seq_len, om.loss_head, om.api) == (B, L, output == "nll", GENERATIONS[generation])
    assert om.aborts_on_error == (generation == "new")
    ids = np.random.default_rng(3).integers(0, result.manifest.vocab_size, (B, L))
    reference = OnnxBackend(result.out / "model.onnx").nll(ids)
    np.testing.assert_array_equal(om.nll(ids), reference)
    np.testing.assert_array_equal(om.nll(ids[:1]), reference[:1])
    assert om.device_seconds() > 0
    session = om._session
    om.close()
    om.close()  # twice is fine
    assert session.session.freed  # free_resource() on the new one, the instance finalize() on the old


@both_generations
def test_nll_many_runs_the_pipeline_where_there_is_one_and_infer_where_not(built, generation, monkeypatch):
    from npueval.actors.om_backend import OmBackend

    result = built["nll"]
    om = OmBackend(result.om)
    batches = random_batches(result, 4, seed=5)
    expected = [om.nll(x) for x in batches]
    session, calls = om._session, []
    if generation == "new":
        def pipeline(feeds_list, *args, **kwargs):
            calls.append(len(feeds_list))
            return type(session).infer_pipeline(session, feeds_list, *args, **kwargs)

        monkeypatch.setattr(session, "infer_pipeline", pipeline)
        monkeypatch.setattr(session, "infer", lambda *a, **k: pytest.fail("nll_many called infer"))
    else:
        assert not hasattr(session, "infer_pipeline")
        real_infer = session.infer
        monkeypatch.setattr(session, "infer", lambda feeds, *a, **k: calls.append(1) or real_infer(feeds, *a, **k))
    got = om.nll_many(batches)
    assert calls == ([len(batches)] if generation == "new" else [1] * len(batches))
    for out, exp in zip(got, expected):
        assert out.dtype == exp.dtype == np.float32
        np.testing.assert_array_equal(out, exp)
    if generation == "new":
        om.pipeline_feeds = 2  # as a budget of two batches' outputs would make it
        calls.clear()
        for out, exp in zip(om.nll_many(batches), expected):
            np.testing.assert_array_equal(out, exp)
        assert calls == [2, 2, 1]
        assert om.nll_many([]) == [] and calls == [2, 2, 1]  # nothing to hand over: no call
    om.close()


@both_generations
def test_device_time_is_read_once_then_the_list_is_reset(built, generation):
    """exec_time_list grows for the whole session and each access copies it: device_seconds takes
    what is new, resets the list, and adds it up in float64."""
    from npueval.actors.om_backend import OmBackend, durations_ms

    om = OmBackend(built["nll"].om)
    session = om._session
    summary = session.summary if generation == "new" else session.sumary
    batches = random_batches(built["nll"], 3, seed=7)
    om.nll_many(batches)
    entries = list(summary().exec_time_list)
    assert len(entries) == len(batches)  # one execution per batch, either way
    assert all(isinstance(e, tuple) if generation == "new" else isinstance(e, float) for e in entries)
    first = om.device_seconds()
    assert first == pytest.approx(sum(durations_ms(entries)) / 1000, rel=1e-9)
    assert summary().exec_time_list == []  # read and reset
    assert om.device_seconds() == first  # nothing new: nothing added
    om.nll(batches[0])
    assert om.device_seconds() > first and len(summary().exec_time_list) == 0


def test_the_new_fake_refuses_what_ais_bench_refuses(built, tmp_path, capfd):
    from ais_bench.infer.interface import InferSession

    om = str(built["nll"].om)
    session = InferSession(0, om)
    ids = np.zeros((B, L), dtype=np.int64)
    with pytest.raises(RuntimeError, match=r"^\[-1\]\[ACL: general failure\] $"):
        session.infer([ids.astype(np.int32), ids])  # int32 for an int64 input: half the bytes
    assert "[ERROR] check i:0 name:input_ids in size:256 needsize:512 not match" in capfd.readouterr().out
    with pytest.raises(RuntimeError, match="ACL: general failure"):
        session.infer([ids])
    assert "intensors in:1 need:2 not match" in capfd.readouterr().out
    with pytest.raises(TypeError, match="is not a integer"):
        InferSession(np.int64(0), om)
    with pytest.raises(ValueError, match=r"legal value range is \[0, 255\]"):
        InferSession(256, om)
    with pytest.raises(RuntimeError, match="wrong infer_mode"):
        session.infer([ids, ids], mode="fast")
    for bad, message in (([], "the list is empty"), ((ids, ids), "is not a list"), ([[ids, ids]] * 513, "over 512")):
        with pytest.raises(ValueError, match=message):
            session.infer_pipeline(bad)
    os.chmod(om, 0o664)
    try:
        with pytest.raises(ValueError, match="is illegal. Please check the error log"):
            InferSession(0, om)
        assert "group writable, or is others writable" in capfd.readouterr().out
    finally:
        os.chmod(om, 0o644)
    odd = tmp_path / "my model (v2).om"
    odd.write_bytes(Path(om).read_bytes())
    with pytest.raises(ValueError, match="The path string is illegal"):
        InferSession(0, str(odd))
    link = tmp_path / "link.om"
    link.symlink_to(om)
    with pytest.raises(ValueError, match="is illegal"):
        InferSession(0, str(link))
    assert "is a soft link" in capfd.readouterr().out


def test_the_old_fake_checks_nothing_and_reads_a_feed_through_its_pointer(built, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_AIS_BENCH_OLD", "1")
    from ais_bench.infer.interface import InferSession

    odd = tmp_path / "my model (v2).om"  # the pre-2024 package has no path checks
    odd.write_bytes(built["nll"].om.read_bytes())
    session = InferSession(0, str(odd))
    assert {"infer_pipeline", "summary", "free_resource", "reset_summaryinfo"}.isdisjoint(dir(session))
    assert not hasattr(session, "intensors_desc")  # set by get_inputs(), as the real one does
    session.get_inputs()
    ids = np.arange(B * L * 2, dtype=np.int64).reshape(B, 2 * L)
    strided = ids[:, ::2]  # not contiguous: the old run() reads nbytes from its data pointer
    out_strided = session.infer([strided, np.ascontiguousarray(strided)])[0]
    out_first = session.infer([np.ascontiguousarray(ids.reshape(-1)[: B * L].reshape(B, L)),
                               np.ascontiguousarray(strided)])[0]
    np.testing.assert_array_equal(out_strided, out_first)


def test_an_error_inside_infer_pipeline_ends_the_process_and_infer_raises_it(built, tmp_path):
    """A failing execution raises RuntimeError through infer; through infer_pipeline it is thrown
    in a C++ thread and the process aborts (pipeline.cpp, FuncCompute)."""
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(FAKES)!r}, {str(TESTS)!r}]
        import numpy as np
        from npueval.actors.om_backend import OmBackend
        om = OmBackend({str(built["nll"].om)!r})
        poisoned = np.full(({B}, {L}), 7, dtype=np.int64)
        try:
            om.nll(poisoned)
        except RuntimeError as exc:
            print("infer raised:", exc, flush=True)
        om.nll_many([poisoned])
        print("not reached", flush=True)
    """)
    env = {**os.environ, "FAKE_AIS_BENCH_FAIL_ON_ID": "7"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == -6  # SIGABRT
    assert "infer raised: [-1][ACL: general failure]" in done.stdout and "not reached" not in done.stdout
    assert "[ERROR] acl execute failed" in done.stdout
    assert "terminate called after throwing an instance of 'std::runtime_error'" in done.stderr


@both_generations
def test_the_fake_holds_the_gil_for_the_device_time(built, generation, monkeypatch):
    """aclruntime never releases the GIL: while a call waits on the device, no other thread runs."""
    from npueval.actors.om_backend import OmBackend

    monkeypatch.setenv("FAKE_AIS_BENCH_DEVICE_MS", "300")
    om = OmBackend(built["nll"].om)
    ids = np.zeros((B, L), dtype=np.int64)
    ticks, stop = [], threading.Event()

    def spin():
        while not stop.is_set():
            ticks.append(time.perf_counter())

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    time.sleep(0.05)
    start = time.perf_counter()
    om.nll(ids)
    end = time.perf_counter()
    stop.set()
    thread.join()
    # Within the device's 300 ms, past the GIL's 5 ms hand-over: what the backend does on the host
    # after the call (its outputs) may let the other thread run.
    inside = [t for t in ticks if start + 0.05 < t < min(end, start + 0.3) - 0.01]
    assert end - start >= 0.3 and not inside
    assert om.device_seconds() >= 0.3


def test_an_acl_device_id_past_the_visible_chips_is_a_run_error_with_the_root_cause(built, monkeypatch, capfd):
    from npueval.actors.om_backend import OmBackend

    monkeypatch.setenv("ASCEND_RT_VISIBLE_DEVICES", "2")
    with pytest.raises(RunError, match=r"ais_bench could not load .*model.om on ACL device id 1: "
                                       r"RuntimeError: \[107001\]\[Error code unknown\]"):
        OmBackend(built["nll"].om, device_id=1)
    assert "acl open device 1 failed" in capfd.readouterr().out
    assert OmBackend(built["nll"].om, device_id=0).batch_size == B


def test_om_backend_says_what_is_wrong(built, tmp_path, monkeypatch):
    from npueval.actors.om_backend import OmBackend

    om = built["nll"].om
    os.chmod(om, 0o666)
    try:
        with pytest.raises(RunError, match=r"ValueError: The path:.* is illegal"):
            OmBackend(om)
    finally:
        os.chmod(om, 0o644)
    with pytest.raises(UserError, match="no such file"):
        OmBackend(tmp_path / "none.om")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(FAKES)])
    for name in ("ais_bench", "ais_bench.infer", "ais_bench.infer.interface", "aclruntime"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(UserError, match="needs ais_bench and aclruntime"):
        OmBackend(om)


def test_fp16_on_the_chip_stays_close(built, monkeypatch):
    from npueval.actors.om_backend import OmBackend
    from npueval.actors.onnx_backend import OnnxBackend

    monkeypatch.setenv("FAKE_AIS_BENCH_FP16", "1")
    result = built["nll"]
    ids = np.random.default_rng(4).integers(0, result.manifest.vocab_size, (B, L))
    got, ref = OmBackend(result.om).nll(ids), OnnxBackend(result.out / "model.onnx").nll(ids)
    assert not np.array_equal(got, ref) and np.abs(got - ref).max() < 1e-2


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
    vocab = built["logits"].manifest.vocab_size
    assert built_logits.pipeline_feeds == min(om_backend.PIPELINE_MAX_FEEDS,
                                              om_backend.PIPELINE_OUTPUT_BYTES // (B * L * vocab * 4))
