"""npueval's rolling and stride numbers against their own references, run here: the real
lm-evaluation-harness (the test extra pins lm-eval[hf]; reference/lm_eval_oracle.py) and a
transcription of Hugging Face's perplexity guide (reference/hf_guide.py), on tiny models saved in
the fixture and a corpus with documents shorter than one window, of exactly one, one token over,
of many windows, and empty.

A build of seq_len L holds one lm-eval window of max_length L − 1 per row (docs/design.md,
"Rolling and stride"): lm-eval runs at max_length L − 1, prepare takes the build's length.
"""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from npueval.eval.driver.run import RunConfig, run

pytestmark = pytest.mark.slow

L, B = 32, 4


def corpus_texts(tokenizer_json) -> list[str]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    rng = random.Random(7)
    words = ["数据", "并行", "评测", "芯片", "模型", "the", "stream", "token", "once", "北京", "，", "。",
             " ", "\n", "  "]
    texts = ["".join(rng.choice(words) for _ in range(rng.randint(1, 80))) for _ in range(10)]
    texts += ["", " ", "短文。", "a  b\n c "]
    exact = ""
    while len(tok.encode(exact, add_special_tokens=False).ids) < L - 1:
        exact += rng.choice(["the ", "模型", "stream "])
    while len(tok.encode(exact, add_special_tokens=False).ids) > L - 1:
        exact = exact[:-1]
    texts += [exact, exact + "x", "".join(rng.choice(words) for _ in range(400))]
    return texts


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from checkpoints import make_hf_checkpoint

    from npueval.build.pipeline import BuildConfig, build

    root = tmp_path_factory.mktemp("llama")
    ckpt = make_hf_checkpoint(root / "ckpt", "llama")
    build(BuildConfig(ckpt, root / "build", batch_size=B, seq_len=L, soc="Ascend310P3"))
    texts = corpus_texts(ckpt / "tokenizer.json")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return root, ckpt, corpus, texts


@pytest.fixture(scope="module")
def ray_cpu2():
    from local_ray import local_ray

    with local_ray(num_cpus=2) as session:
        yield session


def npueval_run(build, data, out) -> dict:
    return run(RunConfig.from_flags(data=data, out=out, model=build, backend="onnx", devices=2,
                                    block_windows=8)).results.to_json()


def test_rolling_gives_lm_evals_three_numbers(llama, ray_cpu2, tmp_path):
    from lm_eval_oracle import run_lm_eval

    from npueval.eval.data.prepare import PrepareConfig, prepare

    root, ckpt, corpus, texts = llama
    data = prepare(PrepareConfig(corpus, tokenizer=root / "build", out=tmp_path / "data", mode="rolling",
                                 rows_per_shard=16, workers=0)).manifest
    assert (data.n_ctx, data.inputs.stride) == (L, L - 1)  # the build's length; lm-eval's max_length L - 1
    ours = npueval_run(root / "build", tmp_path / "data", tmp_path / "out")
    theirs = run_lm_eval(ckpt, corpus, L - 1, tmp_path / "lm_eval")

    assert ours["words"] == sum(d.words for d in theirs.docs) and ours["bytes"] == sum(d.bytes for d in theirs.docs)
    for key in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert ours[key] == pytest.approx(getattr(theirs, key), rel=1e-6), key
    # Document by document, from windows.parquet.
    windows = pq.read_table(tmp_path / "out" / "windows.parquet").to_pydict()
    per_doc = np.zeros(len(texts))
    np.add.at(per_doc, windows["doc_id"], windows["nll_sum"])
    assert per_doc == pytest.approx([-d.loglikelihood for d in theirs.docs], rel=1e-5, abs=1e-6)


def test_stride_gives_the_guides_number_and_the_exact_one(llama, ray_cpu2, tmp_path):
    from hf_guide import guide_perplexity

    from npueval.eval.data.prepare import PrepareConfig, prepare

    root, ckpt, corpus, texts = llama
    prepare(PrepareConfig(corpus, tokenizer=root / "build", out=tmp_path / "data", mode="stride", stride=12,
                          rows_per_shard=16, workers=0))
    ours = npueval_run(root / "build", tmp_path / "data", tmp_path / "out")
    guide = guide_perplexity(ckpt, texts, max_length=L, stride=12)
    assert ours["tokens"] == guide.n_tokens
    assert ours["mean_ce"] == pytest.approx(guide.nats_per_token, rel=1e-6)
    # The guide accumulates in float32 tensors: its own number carries that rounding.
    assert ours["guide_ppl"] == pytest.approx(guide.ppl, rel=1e-5)
    assert ours["guide_ppl"] != pytest.approx(ours["ppl"], rel=1e-7)


def test_limit_on_rolling_data_takes_whole_documents_and_drop_last_is_refused(llama, ray_cpu2, tmp_path, caplog):
    from npueval.core.errors import UserError
    from npueval.eval.data.prepare import PrepareConfig, prepare

    caplog.set_level("INFO", logger="npueval.eval.driver.run")
    root, _, corpus, texts = llama
    prepare(PrepareConfig(corpus, tokenizer=root / "build", out=tmp_path / "data", mode="rolling", workers=0))
    doc_id = pq.read_table(sorted((tmp_path / "data").glob("shard-*.parquet")), columns=["doc_id"]).column(0)
    doc_id = doc_id.to_numpy()
    long_doc = int(np.bincount(doc_id).argmax())  # a document of several windows
    first = int(np.flatnonzero(doc_id == long_doc)[0])
    results = run(RunConfig.from_flags(data=tmp_path / "data", out=tmp_path / "out", model=root / "build",
                                       backend="onnx", limit=first + 1)).results
    whole = int(np.flatnonzero(doc_id == long_doc)[-1]) + 1
    assert results.windows == whole > first + 1 and results.words == sum(
        len(re.split(r"\s+", t)) for t in texts[:long_doc + 1])
    assert f"--limit {first + 1}: {whole} windows, to the end of document {long_doc}" in caplog.text
    with pytest.raises(UserError, match=r"--drop-last: the port's, for seed data; .* is a rolling data set"):
        run(RunConfig.from_flags(data=tmp_path / "data", out=tmp_path / "out2", model=root / "build",
                                 backend="onnx", drop_last=True))
