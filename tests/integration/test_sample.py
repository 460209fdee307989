"""The bundled sample as a user meets it: bare `npueval run`, `npueval report`, and the model's quality bar.

The run's numbers are checked against onnxruntime called directly on the same windows; the
quality bar is recomputed from the committed files with PyTorch (transformers' own loader) and
numpy, independently of the training script.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npueval.core.files import file_sha256
from npueval.core.vocab import load_vocab
from npueval.eval.sample import corpus as sample_corpus
from npueval.eval.sample.bundled import BUILD, CHECKPOINT

#: The sample model's quality on the 247 held-out windows, as docs/design.md ("The bundled
#: sample") states it: recomputed here from the committed files.
HELD_OUT_PERPLEXITY, UNIGRAM_PERPLEXITY = 109.17, 678.69
LIMIT = 12


def npueval(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, "-m", "npueval.eval", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def results_folder(stdout: str, cwd: Path) -> Path:
    (line,) = [line for line in stdout.splitlines() if line.startswith("→ ")]
    return cwd / line[2:].split("  (")[0]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Bare `npueval run --limit`, twice, as a user types it: the second finds the sample cached."""
    cwd = tmp_path_factory.mktemp("user")
    first = npueval("run", "--limit", str(LIMIT), cwd=cwd)
    assert first.returncode == 0, first.stderr
    second = npueval("run", "--limit", str(LIMIT), cwd=cwd)
    assert second.returncode == 0, second.stderr
    return cwd, first, second


def onnx_reference(data: Path, windows: int) -> tuple[float, int]:
    """Σ NLL and scored tokens of the first WINDOWS windows, straight from model.onnx and the shards."""
    import onnxruntime as ort
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables(pq.read_table(p) for p in sorted(data.glob("shard-*.parquet")))
    order = np.argsort(table.column("window_id").to_numpy())[:windows]
    ids = np.stack(table.column("input_ids").to_numpy(zero_copy_only=False)).astype(np.int64)[order]
    score_from, n_valid = table.column("score_from").to_numpy()[order], table.column("n_valid").to_numpy()[order]
    manifest = json.loads((BUILD / "manifest.json").read_text())
    session = ort.InferenceSession(str(BUILD / manifest["onnx"]), providers=["CPUExecutionProvider"])
    batch = manifest["batch_size"]
    total, count = 0.0, 0
    for start in range(0, windows, batch):
        x = ids[start:start + batch]
        rows = len(x)
        x = np.concatenate([x, np.zeros((batch - rows, x.shape[1]), np.int64)])
        targets = np.concatenate([x[:, 1:], np.zeros((batch, 1), np.int64)], axis=1)
        (nll,) = session.run(["nll"], {"input_ids": x, "targets": targets})
        for r in range(rows):
            t = np.arange(1, x.shape[1])  # column t − 1 holds the NLL of token t
            scored = (t >= score_from[start + r]) & (t < n_valid[start + r])
            total += float(nll[r, t[scored] - 1].astype(np.float64).sum())
            count += int(scored.sum())
    return total, count


def test_bare_run_says_what_it_runs_and_matches_onnxruntime(two_runs):
    cwd, first, _ = two_runs
    lines = first.stdout.splitlines()
    assert lines[0] == ("npueval: running the bundled sample on CPU with onnxruntime: "
                        "no NPU found (no npu-smi on PATH).")
    assert "npueval run --model BUILD --data DATA" in lines[2]
    out = results_folder(first.stdout, cwd)
    assert out.parent == cwd / "npueval-results" and out.name.startswith("sample-")
    results = json.loads((out / "results.json").read_text())
    assert results["windows"] == LIMIT and results["backend"] == "onnx" and results["fallback"] is None
    data = Path(results["data"])
    assert data.parent.parent == Path(os.environ["NPUEVAL_CACHE_DIR"])  # the test session's cache
    manifest = json.loads((data / "manifest.json").read_text())
    assert (manifest["mode"], manifest["n_ctx"], manifest["stride"], manifest["num_pieces"]) == ("seed", 512, 768, 100)
    nll_sum, tokens = onnx_reference(data, LIMIT)
    assert results["tokens"] == tokens == LIMIT * 511
    assert results["nll_sum"] == pytest.approx(nll_sum, rel=1e-9)
    assert results["mean_ce"] == pytest.approx(nll_sum / tokens, rel=1e-9)
    assert results["ppl"] == pytest.approx(math.exp(nll_sum / tokens), rel=1e-9)
    assert (out / "windows.parquet").is_file() and (out / "result.txt").read_text().startswith("seed_ppl")


def test_second_run_reuses_the_prepared_sample(two_runs):
    cwd, first, second = two_runs
    assert "(prepared now)" in first.stderr and "(cached)" in second.stderr
    a, b = (json.loads((results_folder(r.stdout, cwd) / "results.json").read_text()) for r in (first, second))
    assert results_folder(first.stdout, cwd) != results_folder(second.stdout, cwd)
    assert (a["nll_sum"], a["tokens"], a["data_manifest_sha256"]) == (b["nll_sum"], b["tokens"],
                                                                      b["data_manifest_sha256"])


def test_report_one_run_two_runs_and_a_plot(two_runs):
    cwd, first, second = two_runs
    a, b = results_folder(first.stdout, cwd), results_folder(second.stdout, cwd)
    results = json.loads((a / "results.json").read_text())
    one = npueval("report", str(a), cwd=cwd)
    assert one.returncode == 0, one.stderr
    assert f"perplexity           {results['ppl']:.4f}" in one.stdout
    assert f"per-window loss (nats/token) over {LIMIT} windows" in one.stdout
    evaluation = next(p for p in results["phases"] if p["name"] == "evaluation")
    assert f"evaluation {evaluation['start_s']:.2f}–{evaluation['end_s']:.2f}" in one.stdout
    assert re.search(r"devices busy \d+\.\d% of the evaluation \(\d+\.\d\d s, \d+ blocks? on 1 device\)", one.stdout)
    both = npueval("report", str(a), str(b), "--plot", "both.png", cwd=cwd)
    assert both.returncode == 0, both.stderr
    assert "same model: yes    same data set: yes" in both.stdout
    assert f"over the {LIMIT} windows both scored alike" in both.stdout
    assert "per-window |B − A| max 0.00e+00" in both.stdout  # one deterministic model, the same windows
    assert re.search(r"perplexity\s+" + f"{results['ppl']:.4f}" + r"\s+" + f"{results['ppl']:.4f}" + r"\s+\+0\.0000",
                     both.stdout)
    png = (cwd / "both.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1320, 1056)  # 12 × 9.6 inches at 110 dpi: the plots, then each run's timeline


def test_committed_onnx_was_built_from_the_committed_checkpoint():
    manifest = json.loads((BUILD / "manifest.json").read_text())
    assert manifest["weights_sha256"] == file_sha256(CHECKPOINT / "model.safetensors")
    assert manifest["vocab_sha256"] == file_sha256(CHECKPOINT / "vocab.txt")
    assert manifest["output"] == "nll" and manifest["seq_len"] == 512
    config = json.loads((CHECKPOINT / "config.json").read_text())
    assert (config["n_layer"], config["n_embd"], config["n_head"], config["n_positions"]) == (4, 256, 4, 512)
    assert config["vocab_size"] == load_vocab(CHECKPOINT / "vocab.txt").size
    lines = (CHECKPOINT / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert (lines[0], lines[1], lines[99]) == ("[PAD]", "[unused1]", "[unused99]")  # BERT-Chinese layout
    assert lines[100:104] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] and len(set(lines)) == len(lines)
    total = sum(p.stat().st_size for folder in (BUILD, CHECKPOINT) for p in folder.iterdir())
    assert total < 32 * 2**20


@pytest.mark.slow
def test_quality_bar_from_the_committed_files(tmp_path):
    """Held-out perplexity at most half a unigram model's, on the windows bare `npueval run` evaluates."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from transformers import GPT2LMHeadModel

    from npueval.eval.data.tokenizer import BertChineseTokenizer
    from npueval.eval.sample.bundled import prepare_sample

    data = prepare_sample(cache=tmp_path).data
    table = pa.concat_tables(pq.read_table(p) for p in sorted(data.glob("shard-*.parquet")))
    windows = np.stack(table.column("input_ids").to_numpy(zero_copy_only=False)).astype(np.int64)
    assert (table.column("score_from").to_numpy() == 1).all() and (table.column("n_valid").to_numpy() == 512).all()
    targets = windows[:, 1:]  # every token after the first is scored

    model = GPT2LMHeadModel.from_pretrained(CHECKPOINT, torch_dtype=torch.float32).eval()
    nll = 0.0
    with torch.no_grad():
        for start in range(0, len(windows), 16):
            x = torch.from_numpy(windows[start:start + 16])
            logp = torch.log_softmax(model(x).logits[:, :-1].double(), dim=-1)
            nll -= float(logp.gather(-1, x[:, 1:, None]).sum())
    model_ppl = math.exp(nll / targets.size)

    vocab = load_vocab(CHECKPOINT / "vocab.txt")
    training = sample_corpus.training(sample_corpus.articles())
    counts = np.zeros(vocab.size, np.float64)
    for ids in BertChineseTokenizer(vocab).encode_batch([a.text.replace("\n", " [SEP] ") for a in training]):
        counts += np.bincount(ids, minlength=vocab.size)
    counts[[vocab.mask_id, vocab.cls_id]] += len(training)  # each article's stream: [MASK] ids [CLS]
    p = (counts + 1) / (counts.sum() + vocab.size)  # add-one smoothed: the held-out text has [UNK]s
    unigram_ppl = math.exp(-np.log(p[targets]).sum() / targets.size)

    assert model_ppl <= 0.5 * unigram_ppl
    assert model_ppl == pytest.approx(HELD_OUT_PERPLEXITY, abs=0.01)
    assert unigram_ppl == pytest.approx(UNIGRAM_PERPLEXITY, abs=0.01)
    design = (Path(__file__).parents[2] / "docs" / "design.md").read_text(encoding="utf-8")
    assert f"perplexity {HELD_OUT_PERPLEXITY}" in design and f"against {UNIGRAM_PERPLEXITY}" in design
