"""`npueval run` with real models: onnxruntime on CPU workers against PyTorch, and the om backend
on simulated NPU resources against the fake ais_bench (tests/fakes), which rounds to fp16 here."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from checkpoints import make_checkpoint, tiny_model
from local_ray import local_ray
from run_data import FAKES, build_tiny, prepare_data, read_shards
from vocabs import small_vocab_tokens

from npueval.core.errors import DatasetError, RunError, UserError
from npueval.eval.driver.fleet import DeviceConfig, choose_backend
from npueval.eval.driver.run import RunConfig, run

B, L = 4, 64


FP16 = {"FAKE_AIS_BENCH_FP16": "1"}


@pytest.fixture(scope="module")
def knobs(tmp_path_factory):
    """The fake ais_bench's knobs file, named before Ray starts (its workers keep that environment)
    and written per test: fp16 outputs unless a test says otherwise."""
    path = tmp_path_factory.mktemp("knobs") / "knobs.json"

    def write(**values: str) -> None:
        path.write_text(json.dumps({**FP16, **values}))

    write()
    write.path = path
    return write


@pytest.fixture(scope="module")
def ray_with_fake_chips(knobs):
    """A local Ray with 2 simulated NPUs whose actors import the fake ais_bench."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "FAKE_AIS_BENCH_KNOBS")}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(FAKES), os.environ["PYTHONPATH"]])
    os.environ["FAKE_AIS_BENCH_KNOBS"] = str(knobs.path)
    with local_ray(num_cpus=2, simulated_npus=2) as session:
        for k, v in saved.items():  # the workers have it now; later subprocesses of the tests must not
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        yield session


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("model"), B, L)


@pytest.fixture(scope="module")
def sliding_data(model, tmp_path_factory):
    return prepare_data(tmp_path_factory.mktemp("sliding"), model / "ckpt" / "vocab.txt", 60_000, mode="sliding",
                        n_ctx=L, stride=L // 2)


def torch_reference(data: Path):
    """Per-window NLL sums from the PyTorch model over score_from ≤ t < n_valid, in float64."""
    import torch

    rows = read_shards(data)
    net = tiny_model(len(small_vocab_tokens()))
    sums = []
    with torch.no_grad():
        for lo in range(0, len(rows["input_ids"]), 64):
            x = torch.from_numpy(rows["input_ids"][lo: lo + 64])
            logp = torch.log_softmax(net(x).logits.double(), dim=-1)
            nll = -logp[:, :-1].gather(2, x[:, 1:, None])[..., 0]
            t = torch.arange(1, x.shape[1])
            mask = (t >= torch.from_numpy(rows["score_from"][lo: lo + 64].astype(np.int64))[:, None]) & (
                t < torch.from_numpy(rows["n_valid"][lo: lo + 64].astype(np.int64))[:, None])
            sums.append((nll * mask).sum(1).numpy())
    scored = (rows["n_valid"] - rows["score_from"]).astype(np.int64)
    return np.concatenate(sums), scored, rows["piece"]


def test_onnx_on_two_cpu_workers_equals_pytorch(ray_with_fake_chips, model, sliding_data, tmp_path):
    results = run(RunConfig.from_flags(data=sliding_data, out=tmp_path / "out", model=model / "build", backend="onnx",
                                       devices=2, block_windows=40)).results.to_json()
    sums, scored, pieces = torch_reference(sliding_data)
    assert results["backend"] == "onnx" and results["tokens"] == scored.sum()
    assert results["mean_ce"] == pytest.approx(sums.sum() / scored.sum(), rel=1e-5)
    batch_means = []  # the port's formula: per piece, batches of B consecutive windows
    for piece in np.unique(pieces):
        rows = np.flatnonzero(pieces == piece)
        batch_means += [sums[rows[i: i + B]].sum() / scored[rows[i: i + B]].sum() for i in range(0, len(rows), B)]
    assert results["seed_ppl"] == pytest.approx(np.exp(np.mean(batch_means)), rel=1e-5)
    assert sorted(d["device"] for d in results["per_device"]) == ["cpu:0", "cpu:1"]
    assert results["vocab_checked"] is True and results["model_manifest_sha256"]


def assert_checked(results: dict, check_batches: int) -> None:
    """Each worker checked its first `check_batches` batches. Blocks go to whichever worker is
    free, so a worker that started late may have run fewer, or none."""
    assert sum(d["batches"] for d in results["per_device"]) >= check_batches
    for d in results["per_device"]:
        if d["batches"] == 0:
            assert d["check"] is None
        else:
            assert d["check"]["batches"] == min(check_batches, d["batches"]) and d["check"]["tokens"] > 0
    # …and the run's own record of the check is theirs, summed.
    checks = [d["check"] for d in results["per_device"] if d["check"]]
    assert results["check"]["batches"] == sum(c["batches"] for c in checks) >= check_batches
    assert results["check"]["tokens"] == sum(c["tokens"] for c in checks)
    assert results["check"]["max_rel_err"] == max(c["max_rel_err"] for c in checks)


def test_om_on_the_fake_chips_with_check_against(ray_with_fake_chips, model, sliding_data, tmp_path):
    """auto picks the OM where the cluster has NPUs; --check-against measures the fp16 drift."""
    results = run(RunConfig.from_flags(data=sliding_data, out=tmp_path / "out", model=model / "build", block_windows=40,
                                       check_against=model / "build" / "model.onnx", check_batches=3)).results.to_json()
    sums, scored, _ = torch_reference(sliding_data)
    assert results["backend"] == "om" and results["fallback"] is None
    assert results["mean_ce"] == pytest.approx(sums.sum() / scored.sum(), rel=1e-3)  # fp16 outputs
    devices = {d["device"]: d for d in results["per_device"]}
    assert set(devices) == {"npu:0", "npu:1"}
    assert_checked(results, 3)
    for d in (d for d in devices.values() if d["batches"]):
        assert 0 < d["check"]["max_rel_err"] < 2e-3 and 0 < d["check"]["max_abs_err"] < 2e-2
        assert d["fps"] > 0  # from ais_bench's exec_time_list


def test_a_model_with_its_weights_beside_it_runs_on_every_worker(ray_with_fake_chips, model, sliding_data, tmp_path,
                                                                 monkeypatch):
    """A model over protobuf's 2 GiB (the limit lowered here, build/onnx_files.py): model.onnx.data
    travels with model.onnx to every worker, and with the --check-against reference; the OM holds
    its weights."""
    from npueval.build import onnx_files, simplify
    from npueval.build.pipeline import BuildConfig, build

    monkeypatch.setattr(onnx_files, "INLINE_LIMIT", 0)
    monkeypatch.setattr(simplify, "WEIGHT_MIN_BYTES", 1024)
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    folder = build(BuildConfig(model / "ckpt", tmp_path / "build", batch_size=B, seq_len=L, soc="Ascend310P3")).out
    assert (folder / "model.onnx.data").is_file()
    sums, scored, _ = torch_reference(sliding_data)
    onnx = run(RunConfig.from_flags(data=sliding_data, out=tmp_path / "onnx", model=folder, backend="onnx", devices=2,
                                    block_windows=40)).results.to_json()
    assert onnx["backend"] == "onnx" and onnx["tokens"] == scored.sum()
    assert onnx["mean_ce"] == pytest.approx(sums.sum() / scored.sum(), rel=1e-5)
    om = run(RunConfig.from_flags(data=sliding_data, out=tmp_path / "om", model=folder, block_windows=40,
                                  check_against=folder / "model.onnx", check_batches=2)).results.to_json()
    assert om["backend"] == "om" and om["mean_ce"] == pytest.approx(sums.sum() / scored.sum(), rel=1e-3)
    assert_checked(om, 2)
    assert all(d["check"]["max_rel_err"] < 2e-3 for d in om["per_device"] if d["check"])
    # The bare file takes its weights from beside it, and they are part of its identity.
    from npueval.core.files import file_sha256
    from npueval.eval.driver.model_spec import resolve_model

    bare = run(RunConfig.from_flags(data=sliding_data, out=tmp_path / "bare", model=folder / "model.onnx",
                                    backend="onnx", devices=1, limit=20)).results.to_json()
    assert bare["windows"] == 20 and bare["tokens"] == scored[:20].sum()
    shas = f"{file_sha256(folder / 'model.onnx')}:{file_sha256(folder / 'model.onnx.data')}"
    assert resolve_model(folder / "model.onnx").identity == hashlib.sha256(shas.encode()).hexdigest()
    (folder / "model.onnx.data").unlink()
    with pytest.raises(UserError, match=r"the manifest names model.onnx.data, which is missing; run `npueval build`"):
        resolve_model(folder)


def test_a_bare_model_file_reads_its_shapes_and_says_whether_the_vocab_was_checked(
        ray_with_fake_chips, model, sliding_data, tmp_path, capfd):
    onnx = model / "build" / "model.onnx"
    unchecked = run(RunConfig.from_flags(data=sliding_data, out=tmp_path / "a", model=onnx, devices=1,
                                         limit=20)).results.to_json()
    checked = run(RunConfig.from_flags(data=sliding_data, out=tmp_path / "b", model=onnx, devices=1, limit=20,
                                       vocab=model / "ckpt" / "vocab.txt")).results.to_json()
    assert unchecked["vocab_checked"] is False and checked["vocab_checked"] is True
    assert unchecked["mean_ce"] == checked["mean_ce"] and unchecked["model_manifest_sha256"] is None
    # The model's bytes reach the actors through describe(), not their constructor (ray#53727).
    assert "constructor arguments in the object store" not in capfd.readouterr().err


def test_a_pair_that_does_not_fit_is_refused_before_any_device_work(model, sliding_data, tmp_path, vocab_path):
    other_vocab = tmp_path / "vocab.txt"
    other_vocab.write_text(vocab_path.read_text() + "extra\n")
    with pytest.raises(UserError, match=r"the vocab of its build manifest has sha256 .* but --data .* was tokenized"):
        run(RunConfig.from_flags(data=prepare_data(tmp_path / "v", other_vocab, 20_000, mode="sliding", n_ctx=L),
                                 out=tmp_path / "o1", model=model / "build"))
    with pytest.raises(UserError, match=r"takes sequences of 64 tokens but --data .* holds windows of 32"):
        run(RunConfig.from_flags(data=prepare_data(tmp_path / "n", model / "ckpt" / "vocab.txt", 20_000, mode="sliding",
                                        n_ctx=32), out=tmp_path / "o2", model=model / "build"))
    with pytest.raises(UserError, match=r"the vocab of --vocab .*vocab.txt has sha256 .* but --data .* was tokenized"):
        run(RunConfig.from_flags(data=sliding_data, out=tmp_path / "o3", model=model / "build" / "model.onnx",
                                 vocab=other_vocab))


def test_a_token_outside_the_models_vocabulary_names_shard_and_row(ray_with_fake_chips, model, sliding_data, tmp_path):
    """A logits model over a smaller vocabulary than the data's ids, given as a bare file."""
    from npueval.build.pipeline import BuildConfig, build

    small = small_vocab_tokens()[:300]
    build(BuildConfig(make_checkpoint(tmp_path / "ckpt", vocab_tokens=small), tmp_path / "build", batch_size=B,
                      seq_len=L, output="logits", soc="Ascend310P3"))
    ids = read_shards(sliding_data)["input_ids"]
    row = int(np.argmax((ids >= 300).any(axis=1)))
    with pytest.raises(DatasetError, match=rf"shard-00000\.parquet: row {row} holds token id \d+ at position \d+, "
                                           r"outside the model's vocabulary of 300"):
        run(RunConfig.from_flags(data=sliding_data, out=tmp_path / "out", model=tmp_path / "build" / "model.onnx",
                                 devices=1))
    with pytest.raises(UserError, match=r"--vocab .* has \d+ tokens but --model .* predicts 300"):
        run(RunConfig.from_flags(data=sliding_data, out=tmp_path / "out", model=tmp_path / "build" / "model.onnx",
                                 vocab=model / "ckpt" / "vocab.txt"))


def test_auto_falls_back_to_onnx_without_npus_and_says_why(model):
    from npueval.eval.driver.model_spec import resolve_model
    from npueval.eval.driver.results_file import Fallback

    spec = resolve_model(model / "build")
    config = DeviceConfig()
    assert choose_backend(config, spec, {"NPU": 2}).backend == "om"
    choice = choose_backend(config, spec, {"CPU": 2})
    assert choice.backend == "onnx" and choice.fallback == Fallback("om", "onnx", "the Ray cluster has no NPU")
    with pytest.raises(UserError, match="is an OM and the Ray cluster has no NPU"):
        choose_backend(config, resolve_model(model / "build" / "model.om"), {"CPU": 2})


def test_bench_on_the_fake_chips_reads_ais_bench_times(ray_with_fake_chips, model):
    from npueval.eval.bench import BenchConfig, bench

    (row,) = bench(BenchConfig(models=(model / "build",), loop=3, inputs="random"))
    assert row.backend == "om" and row.batch_size == B and len(row.per_device) == 2
    assert all(d.fps > 0 and d.figures.device_s > 0 for d in row.per_device)
    assert row.device_fps_sum == pytest.approx(sum(d.fps for d in row.per_device))


def block_with_a_rare_id(data: Path, block_windows: int) -> tuple[int, int]:
    """(a token id found in one block only, that block): the input a test makes the fake chip fail on."""
    ids = read_shards(data)["input_ids"]
    blocks = np.arange(len(ids)) // block_windows
    for token in np.unique(ids):
        holding = np.unique(blocks[(ids == token).any(axis=1)])
        if len(holding) == 1 and holding[0] > 0:
            return int(token), int(holding[0])
    raise AssertionError("no token id is found in one block only")


def test_a_device_that_dies_inside_infer_pipeline_ends_the_run_naming_the_block(
        ray_with_fake_chips, knobs, model, sliding_data, tmp_path):
    """An error inside ais_bench's infer_pipeline ends the actor's process (std::terminate): Ray
    restarts it, it finds its note, and the run ends there, naming the device, the block and
    --no-pipeline, instead of feeding the block to device after device. --resume --no-pipeline then
    gets the error itself: aclruntime's RuntimeError, as the root cause of the block's failure."""
    token, block = block_with_a_rare_id(sliding_data, 40)
    knobs(FAKE_AIS_BENCH_FAIL_ON_ID=str(token))
    try:
        with pytest.raises(RunError) as err:
            run(RunConfig.from_flags(data=sliding_data, out=tmp_path / "out", model=model / "build", block_windows=40))
        message = str(err.value)
        assert f"died inside ais_bench infer_pipeline on block {block} (windows {block * 40}–" in message
        assert "--resume --no-pipeline" in message and "\n" not in message
        with pytest.raises(RunError) as err:
            run(RunConfig.from_flags(data=sliding_data, out=tmp_path / "out", model=model / "build", block_windows=40,
                                     resume=True, pipeline=False, max_retries=1))
        assert f"block {block} (windows {block * 40}–" in str(err.value)
        assert "failed 2 times" in str(err.value) and "RuntimeError: [-1][ACL: general failure]" in str(err.value)
    finally:
        knobs()
    done = run(RunConfig.from_flags(data=sliding_data, out=tmp_path / "out", model=model / "build", block_windows=40,
                                    resume=True)).results.to_json()
    assert done["blocks_resumed"] > 0 and done["windows"] == len(read_shards(sliding_data)["window_id"])


def test_the_pre_2024_ais_bench_on_the_fake_chips(ray_with_fake_chips, knobs, model, sliding_data, tmp_path):
    knobs(FAKE_AIS_BENCH_OLD="1", FAKE_AIS_BENCH_FP16="")
    try:
        old = run(RunConfig.from_flags(data=sliding_data, out=tmp_path / "old", model=model / "build",
                                       block_windows=40)).results.to_json()
    finally:
        knobs()
    knobs(FAKE_AIS_BENCH_FP16="")
    try:
        new = run(RunConfig.from_flags(data=sliding_data, out=tmp_path / "new", model=model / "build",
                                       block_windows=40)).results.to_json()
    finally:
        knobs()
    onnx = run(RunConfig.from_flags(data=sliding_data, out=tmp_path / "onnx", model=model / "build", backend="onnx",
                                    devices=2, block_windows=40)).results.to_json()
    assert (old["ais_bench_api"], new["ais_bench_api"], onnx["ais_bench_api"]) == ("infer", "pipeline", None)
    assert old["mean_ce"] == new["mean_ce"] == onnx["mean_ce"]


def causal_lm_texts(n: int = 80) -> list[str]:
    import random

    rng = random.Random(11)
    words = ["数据", "并行", "评测", "芯片", "模型", "the", "stream", "token", "once", "北京", "，", "。", " ", "\n"]
    return ["".join(rng.choice(words) for _ in range(rng.randint(1, 60))) for _ in range(n)]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_a_causal_lm_with_its_own_tokenizer_through_build_prepare_and_run(ray_with_fake_chips, tmp_path, family):
    """Issue 16's bar: a tiny Llama (BOS and EOS) and Qwen2 (EOS only, as its base models) with
    their tokenizer.json, built, a JSONL corpus prepared with the build folder's tokenizer, and run
    on two workers: every token of the stream scored once in order, mean CE as PyTorch's, and bits
    per byte over exactly the corpus's bytes."""
    import torch
    from checkpoints import make_hf_checkpoint
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    from npueval.build.pipeline import BuildConfig, build
    from npueval.eval.data.prepare import PrepareConfig, prepare

    ckpt = make_hf_checkpoint(tmp_path / "ckpt", family, tie=family == "qwen2")
    bos = 1 if family == "llama" else None
    (ckpt / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>" if bos else None, "eos_token": "</s>"}))
    os.environ["PATH"], old_path = f"{FAKES}{os.pathsep}{os.environ['PATH']}", os.environ["PATH"]
    try:
        build(BuildConfig(ckpt, tmp_path / "build", batch_size=B, seq_len=L, soc="Ascend310P3"))
    finally:
        os.environ["PATH"] = old_path
    texts = causal_lm_texts()
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    data = prepare(PrepareConfig(corpus_dir=tmp_path / "corpus", tokenizer=tmp_path / "build", out=tmp_path / "data",
                                 n_ctx=L, rows_per_shard=20, workers=0)).out
    results = run(RunConfig.from_flags(data=data, out=tmp_path / "out", model=tmp_path / "build", backend="onnx",
                                       devices=2, block_windows=8)).results.to_json()

    tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    stream = [i for t in texts if t for i in [*([bos] if bos else []), *tok.encode(t, add_special_tokens=False).ids, 2]]
    rows = read_shards(data)
    scored = [int(x) for ids, a, b in zip(rows["input_ids"], rows["score_from"], rows["n_valid"]) for x in ids[a:b]]
    assert scored == stream[1:]

    net = AutoModelForCausalLM.from_pretrained(ckpt, attn_implementation="eager").eval()
    nll_sum = 0.0
    with torch.no_grad():
        for ids, a, b in zip(rows["input_ids"], rows["score_from"], rows["n_valid"]):
            x = torch.from_numpy(ids[:b][None])
            logp = torch.log_softmax(net(x).logits.double(), dim=-1)[0]
            nll_sum += float(-logp[a - 1: b - 1].gather(1, x[0, a:b, None]).sum())
    n_bytes = sum(len(t.encode()) for t in texts)
    if not bos:  # the stream's first token, unscored, is the first text's: its bytes do not count
        first = texts[0][: tok.encode(texts[0], add_special_tokens=False).offsets[0][1]]
        n_bytes -= len(first.encode())
    assert results["tokens"] == len(stream) - 1 and results["bytes"] == n_bytes
    assert results["mean_ce"] == pytest.approx(nll_sum / (len(stream) - 1), rel=1e-5)
    assert results["bits_per_byte"] == pytest.approx(nll_sum / n_bytes / np.log(2), rel=1e-5)
    assert results["byte_perplexity"] == pytest.approx(np.exp(nll_sum / n_bytes), rel=1e-5)
    assert results["vocab_checked"] is True

    # The torch backend on the checkpoint itself (batches of 8 against the ONNX model's 4), checked
    # on every worker against the build's ONNX as the OM would be.
    eager = run(RunConfig.from_flags(data=data, out=tmp_path / "torch", model=ckpt, backend="torch", devices=2,
                                     block_windows=8, check_against=tmp_path / "build" / "model.onnx",
                                     check_batches=2)).results.to_json()
    assert (eager["backend"], eager["batch_size"], eager["tokens"], eager["bytes"]) == ("torch", 8, len(stream) - 1,
                                                                                        n_bytes)
    assert eager["mean_ce"] == pytest.approx(nll_sum / (len(stream) - 1), rel=1e-5)
    assert eager["vocab_checked"] is True
    assert_checked(eager, 2)
    assert all(d["check"]["max_rel_err"] < 1e-4 for d in eager["per_device"] if d["check"])
