"""The simulated and onnx backends against independent references (a Python loop, PyTorch)."""

import numpy as np
import pytest

from npueval.actors.backend import Backend
from npueval.actors.onnx_backend import OnnxBackend, nll_from_logits
from npueval.actors.simulated import SimulatedBackend
from npueval.core.errors import UserError

B, L = 3, 32


def test_simulated_nll_is_the_documented_function():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 21128, (B, L))
    backend = SimulatedBackend(B, L)
    got = backend.nll(x)
    expected = [[np.float32(1 + ((int(x[r, j]) * 7919 + int(x[r, j + 1]) * 104729 + j) % 9973) / 9973)
                 for j in range(L - 1)] for r in range(B)]
    assert got.dtype == np.float32 and got.shape == (B, L - 1)
    assert got.tolist() == expected
    assert isinstance(backend, Backend)


def test_simulated_device_time_and_bad_batches():
    backend = SimulatedBackend(B, L, device_ms=20)
    backend.nll(np.zeros((2, L), dtype=np.int64))
    backend.nll(np.zeros((B, L), dtype=np.int64))
    assert backend.device_seconds() == pytest.approx(0.04)
    for shape in [(B + 1, L), (B, L + 1), (0, L), (L,)]:
        with pytest.raises(ValueError, match=r"a batch must be \(1…3, 32\) ids"):
            backend.nll(np.zeros(shape, dtype=np.int64))


def torch_nll(logits, ids):
    import torch

    t = torch.from_numpy(logits)
    return torch.nn.functional.cross_entropy(
        t[:, :-1].reshape(-1, t.shape[-1]), torch.from_numpy(ids[:, 1:]).reshape(-1), reduction="none"
    ).reshape(ids.shape[0], -1).numpy()


def test_host_cross_entropy_across_chunks_equals_pytorch():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 500, (3, 400))
    logits = (rng.normal(size=(3, 400, 500)) * 8).astype(np.float32)
    np.testing.assert_allclose(nll_from_logits(logits, ids), torch_nll(logits, ids), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    import onnx
    from checkpoints import make_checkpoint

    from npueval.build.export import export_onnx
    from npueval.build.loss_head import add_loss_head
    from npueval.build.passes import run_passes
    from npueval.build.simplify import simplify
    from npueval.core.checkpoint import load_model, open_checkpoint

    folder = tmp_path_factory.mktemp("graphs")
    model = load_model(open_checkpoint(make_checkpoint(folder / "ckpt")))
    export_onnx(model, folder / "e.onnx", L)
    simplify(folder / "e.onnx", folder / "s.onnx", B, L)
    edited, _ = run_passes(onnx.load(str(folder / "s.onnx")))
    onnx.save(edited, str(folder / "logits.onnx"))
    add_loss_head(folder / "logits.onnx", folder / "nll.onnx")
    return model, folder


@pytest.mark.parametrize("graph", ["nll.onnx", "logits.onnx"])
def test_onnx_backend_equals_pytorch_and_pads_a_short_batch(graphs, graph):
    from npueval.build.export import reference_logits

    model, folder = graphs
    backend = OnnxBackend(folder / graph)
    assert (backend.batch_size, backend.seq_len, backend.loss_head) == (B, L, graph == "nll.onnx")
    assert backend.providers == ["CPUExecutionProvider"]
    ids = np.random.default_rng(2).integers(0, model.config.vocab_size, (B, L))
    got = backend.nll(ids)
    assert got.dtype == np.float32 and got.shape == (B, L - 1)
    np.testing.assert_allclose(got, torch_nll(reference_logits(model, ids), ids), rtol=1e-4, atol=2e-5)
    np.testing.assert_array_equal(backend.nll(ids[:2]), got[:2])  # padded to B, real rows back
    assert backend.device_seconds() > 0
    backend.close()


def test_onnx_backend_refuses_what_it_cannot_run(tmp_path):
    with pytest.raises(UserError, match="--model .*missing.onnx: no such file"):
        OnnxBackend(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(UserError, match="--model .*bad.onnx: onnxruntime cannot load it"):
        OnnxBackend(bad)


def test_the_simulated_fault_hook_reads_its_file(tmp_path):
    import json

    from npueval.actors.simulated import FAULTS_ENV, Fault, SimulatedBackend, faults_for

    path = tmp_path / "faults.json"
    environ = {FAULTS_ENV: str(path)}
    assert faults_for("npu:1", environ) == ()  # no file: no faults
    path.write_text(json.dumps([{"device": "npu:1", "kind": "nan", "batch": 2},
                                {"device": "npu:1", "kind": "slow", "factor": 5},
                                {"device": "npu:2", "kind": "inf", "batch": 1}]))
    faults = faults_for("npu:1", environ)
    assert faults == (Fault("nan", 2), Fault("slow", 0, 5.0))
    backend = SimulatedBackend(2, 8, device_ms=1.0, faults=faults)
    assert backend.device_ms == 5.0
    x = np.arange(16).reshape(2, 8)
    assert np.isfinite(backend.nll(x)).all()
    second = backend.nll(x)
    assert np.isnan(second[0, 0]) and np.isfinite(second[0, 1:]).all() and np.isfinite(second[1]).all()
    path.write_text(json.dumps([{"device": "npu:3", "kind": "error", "batch": 2}]))
    failing = SimulatedBackend(2, 8, faults=faults_for("npu:3", environ))
    failing.nll(x)
    with pytest.raises(RuntimeError, match="^simulated device error on batch 2$"):
        failing.nll(x)
    assert np.isfinite(failing.nll(x)).all()  # one batch, not the device for good
    path.write_text(json.dumps([{"device": "npu:1", "kind": "melt"}]))
    with pytest.raises(ValueError, match="kind 'melt' is not one of nan, inf, hang, error, slow"):
        faults_for("npu:1", environ)


def test_simulated_nll_many_is_nll_on_each_batch():
    rng = np.random.default_rng(5)
    batches = [rng.integers(0, 21128, (B, L)) for _ in range(4)] + [rng.integers(0, 21128, (1, L))]  # a short last
    many, one = SimulatedBackend(B, L, device_ms=2), SimulatedBackend(B, L, device_ms=2)
    got = many.nll_many(batches)
    assert len(got) == len(batches)
    for out, x in zip(got, batches):
        expected = one.nll(x)
        assert out.dtype == expected.dtype == np.float32 and out.shape == expected.shape == (x.shape[0], L - 1)
        np.testing.assert_array_equal(out, expected)
    assert many.device_seconds() == pytest.approx(len(batches) * 2 / 1000)
    assert many.device_seconds() == one.device_seconds()  # the same sum, added the same way
    assert many.nll_many([]) == []
    with pytest.raises(ValueError, match=r"a batch must be \(1…3, 32\) ids"):
        many.nll_many([batches[0], np.zeros((B + 1, L), dtype=np.int64)])


def test_simulated_nll_many_waits_for_one_deadline(monkeypatch):
    """A device with a queue: the list is handed over at t0 and done at t0 + n·device_ms, one sleep."""
    from npueval.actors import simulated

    clock, sleeps = [100.0], []

    def sleep(seconds):
        sleeps.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(simulated, "time", type("Clock", (), {"perf_counter": lambda: clock[0], "sleep": sleep}))
    backend = SimulatedBackend(B, L, device_ms=10)
    backend.nll_many([np.zeros((B, L), dtype=np.int64)] * 4)
    assert sleeps == [pytest.approx(0.04)]
    backend.nll(np.zeros((B, L), dtype=np.int64))  # a synchronous device: its own sleep per call
    assert sleeps[1:] == [pytest.approx(0.01)]


def test_faults_land_in_their_batch_through_nll_many(monkeypatch):
    from npueval.actors import simulated
    from npueval.actors.simulated import Fault

    x = np.arange(16).reshape(2, 8)
    backend = SimulatedBackend(2, 8, faults=(Fault("nan", 3), Fault("inf", 5)))
    first, second = backend.nll_many([x, x]), backend.nll_many([x, x, x, x])  # batches 1–2, then 3–6
    assert all(np.isfinite(out).all() for out in first)
    assert np.isnan(second[0][0, 0]) and np.isposinf(second[2][0, 0])
    for out in (second[0], second[2]):
        assert np.isfinite(out[0, 1:]).all() and np.isfinite(out[1:]).all()
    assert np.isfinite(second[1]).all() and np.isfinite(second[3]).all()

    slow = SimulatedBackend(2, 8, device_ms=1, faults=(Fault("slow", factor=3),))
    slow.nll_many([x] * 4)
    assert slow.device_seconds() == pytest.approx(0.012)

    class Hung(Exception):
        pass

    def sleep(seconds):
        if seconds >= 3600:  # the hang's sleep: stop it here instead of forever
            raise Hung

    monkeypatch.setattr(simulated.time, "sleep", sleep)
    hangs = SimulatedBackend(2, 8, faults=(Fault("hang", 3),))
    assert len(hangs.nll_many([x, x])) == 2  # batches 1–2
    with pytest.raises(Hung):
        hangs.nll_many([x, x])  # the list holding batch 3


def test_the_backend_table_names_each_backend_class_and_what_it_needs():
    from npueval.actors.backend import BACKENDS, backend_kind
    from npueval.actors.om_backend import OmBackend
    from npueval.actors.torch_backend import TorchBackend, TorchCudaBackend, TorchNpuBackend

    assert {name: kind.load() for name, kind in BACKENDS.items()} == {
        "om": OmBackend, "onnx": OnnxBackend, "simulated": SimulatedBackend, "torch": TorchBackend,
        "torch-cuda": TorchCudaBackend, "torch-npu": TorchNpuBackend}
    assert [(k.name, k.model_file, k.resource, k.on_chip, k.stands_in) for k in BACKENDS.values()] == [
        ("om", "om", "NPU", True, False), ("onnx", "onnx", "CPU", False, False),
        ("simulated", None, "NPU", False, True), ("torch", "checkpoint", "CPU", False, False),
        ("torch-cuda", "checkpoint", "GPU", False, False), ("torch-npu", "checkpoint", "NPU", False, False)]
    with pytest.raises(UserError, match=r"--backend 'tpu': choose one of om, onnx, simulated, torch, torch-cuda"):
        backend_kind("tpu")


def test_a_backend_opens_from_its_worker_spec(graphs):
    from npueval.actors.worker import ModelFile, WorkerSpec, make_backend

    simulated = make_backend(WorkerSpec("simulated", batch_size=3, seq_len=16, device_ms=5), None)
    assert (type(simulated), simulated.batch_size, simulated.seq_len, simulated.device_ms) == (
        SimulatedBackend, 3, 16, 5)
    path = graphs[1] / "nll.onnx"
    spec = WorkerSpec("onnx", model=ModelFile(path.name, "", 0, None), threads=2)
    onnx = make_backend(spec, path)
    assert isinstance(onnx, OnnxBackend) and onnx.loss_head and (onnx.batch_size, onnx.seq_len) == (B, L)
    with pytest.raises(UserError, match="--backend onnx needs --model"):
        WorkerSpec("onnx")


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_torch_backend_equals_the_transformers_model_in_float64(tmp_path, family):
    """The checkpoint through the torch backend against the same weights through transformers,
    log-softmax in float64: a full batch, and a short one (eager: no padding needed)."""
    import torch
    from checkpoints import make_checkpoint, make_hf_checkpoint, tiny_model
    from transformers import AutoModelForCausalLM

    from npueval.actors.torch_backend import TorchBackend

    if family == "gpt2":  # GPT2-Chinese's layout: old config keys, no lm_head.weight saved
        folder = make_checkpoint(tmp_path / "ckpt")
        from vocabs import small_vocab_tokens

        reference = tiny_model(len(small_vocab_tokens()))
    else:
        folder = make_hf_checkpoint(tmp_path / "ckpt", family)
        reference = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    backend = TorchBackend(folder, batch_size=B, seq_len=L)
    assert isinstance(backend, Backend) and (backend.batch_size, backend.seq_len) == (B, L)
    vocab = reference.config.vocab_size
    ids = np.random.default_rng(5).integers(0, vocab, (B, L))
    with torch.no_grad():
        logp = torch.log_softmax(reference(torch.from_numpy(ids)).logits.double(), dim=-1)
    expected = -logp[:, :-1].gather(2, torch.from_numpy(ids[:, 1:, None]))[..., 0].numpy()
    got = backend.nll(ids)
    assert got.dtype == np.float32 and got.shape == (B, L - 1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(backend.nll(ids[:1]), got[:1])
    assert [a.tolist() for a in backend.nll_many([ids, ids[1:]])] == [got.tolist(), got[1:].tolist()]
    assert backend.device_seconds() > 0


def test_torch_backends_say_what_their_host_lacks(tmp_path):
    from types import SimpleNamespace

    from npueval.actors.torch_backend import TorchBackend, TorchCudaBackend, TorchNpuBackend

    with pytest.raises(UserError, match=r"--model: the torch backends read the checkpoint .*nowhere where it lies, "
                                        r"and host .* has no such folder; put it at that path on every node"):
        TorchBackend(tmp_path / "nowhere", B, L)
    spec = SimpleNamespace(checkpoint=str(tmp_path), batch_size=B, seq_len=L, threads=1)
    with pytest.raises(UserError, match="--backend torch-cuda: PyTorch on host .* sees no CUDA GPU"):
        TorchCudaBackend.open(spec, None, None)  # the CPU wheel of torch here
    with pytest.raises(UserError, match="--backend torch-npu: host .* has no torch_npu"):
        TorchNpuBackend.open(spec, None, "0")
