"""`prepare --mode rolling` and `--mode stride` against their references, run here: the real
lm-evaluation-harness (the test extra pins lm-eval[hf]; tests/reference/lm_eval_oracle.py) and
the Hugging Face guide's loop (hf_guide.py), on a tiny Llama and a tiny GPT-2 with byte-level BPE
tokenizer.json files, and the Llama again with a tokenizer.json that adds BOS, as Llama 2's and
3's do ("llama-bos"); the corpus has documents shorter than one window, of exactly one, one token
over, of many windows, empty, and of odd whitespace.

First the oracles against each other, with nothing of npueval (lm-eval's protocol recomputed one
window at a time: rolling_reference.py), then npueval's build, prepare and run on two CPU workers
against them. A build of seq_len L holds one lm-eval window of max_length L − 1 per row
(docs/design.md, "Rolling and stride"): lm-eval runs at MAX_LEN, the build at MAX_LEN + 1.
"""

from __future__ import annotations

import json
import math
import random
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from checkpoints import GPT2_EOT, add_bos_post_processor, make_gpt2_hf_checkpoint, make_hf_checkpoint
from textgen import hard_text

#: lm-eval's max_length: windows of this many tokens.
MAX_LEN = 32
_BASE = ("The tokenizer travels with the model; every token of the stream is scored once, in order. "
         "数据并行的评测在每一块芯片上运行同一个模型。北京是中国的首都，上海是最大的城市。") * 12


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")


def _checkpoint(family, folder):
    if family == "gpt2":
        return make_gpt2_hf_checkpoint(folder)
    if family == "llama-bos":
        return add_bos_post_processor(make_hf_checkpoint(folder, "llama"))
    return make_hf_checkpoint(folder, family)


@pytest.fixture(scope="module", params=["llama", "gpt2", "llama-bos"])
def checkpoint(request, tmp_path_factory):
    return _checkpoint(request.param, tmp_path_factory.mktemp(request.param))


def _adds_bos(checkpoint):
    return checkpoint.name.startswith("llama-bos")


def _tokenizer(checkpoint):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoint)


def _n_tokens(tokenizer, text):
    return len(tokenizer.encode(text, add_special_tokens=False))


def _text_of(tokenizer, n_tokens):
    """The shortest prefix of _BASE that is exactly N_TOKENS tokens."""
    for end in range(len(_BASE)):
        if _n_tokens(tokenizer, _BASE[:end]) == n_tokens:
            return _BASE[:end]
    raise AssertionError(f"no prefix of _BASE is {n_tokens} tokens")


def corpus_texts(tokenizer):
    rng = random.Random(0)
    hard = "".join(c for c in hard_text(rng, ["tokenizer", "模型"], 80) if not 0xD800 <= ord(c) <= 0xDFFF)
    return [
        "The tokenizer travels with the model.",  # shorter than a window
        _text_of(tokenizer, MAX_LEN),  # exactly one window
        _text_of(tokenizer, MAX_LEN + 1),  # one window and one token
        _BASE,  # many windows
        "",
        "  two leading spaces,\ttab\t\tand\n\n\nnewlines\r\n 北京\u3000上海\u00a0nbsp\u2028ls\x85nel  ",
        " \n\t ",
        hard,
        tokenizer.bos_token + "The tokenizer travels with the model.",  # lm-eval adds no special token to it
    ]


@pytest.fixture(scope="module")
def corpus(checkpoint, tmp_path_factory):
    texts = corpus_texts(_tokenizer(checkpoint))
    path = tmp_path_factory.mktemp("corpus") / "c.jsonl"
    # ensure_ascii=False: the raw characters, U+2028 and U+0085 among them, as a corpus has them.
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return texts, path


@pytest.fixture(scope="module")
def lm_eval_result(checkpoint, corpus, tmp_path_factory):
    from lm_eval_oracle import run_lm_eval

    return run_lm_eval(checkpoint, corpus[1], MAX_LEN, tmp_path_factory.mktemp("lm-eval"))


def test_the_transcribed_windows_are_lm_evals():
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
    from rolling_reference import rolling_windows

    rng = random.Random(0)
    for n in [0, 1, 2, *range(30, 70), *rng.sample(range(70, 400), 20)]:
        tokens = [rng.randrange(1000) for _ in range(n)]
        for max_len in (1, 2, 3, 31, 32, 33, 64):
            expected = [make_disjoint_window(w) for w in get_rolling_token_windows(tokens, -1, max_len, 1)]
            got = rolling_windows(tokens, -1, max_len)
            assert got == expected, (n, max_len)
            # Every token scored once, in order; each window at most max_len long.
            assert [t for _, cont in got for t in cont] == tokens
            assert all(len(ctx) + len(cont) - 1 <= max_len for ctx, cont in got)


def test_the_corpus_has_each_edge(checkpoint, corpus):
    tokenizer = _tokenizer(checkpoint)
    counts = [_n_tokens(tokenizer, t) for t in corpus[0]]
    assert counts[0] < MAX_LEN
    assert counts[1:3] == [MAX_LEN, MAX_LEN + 1]
    assert counts[3] > 8 * MAX_LEN
    assert counts[4] == 0
    assert all(c > 0 for i, c in enumerate(counts) if i != 4)
    assert corpus[0][8].startswith(tokenizer.decode(tokenizer.bos_token_id))


@pytest.mark.slow
def test_lm_evals_loglikelihoods_are_the_windows_recomputed(checkpoint, corpus, lm_eval_result):
    from rolling_reference import rolling_loglikelihoods

    expected = rolling_loglikelihoods(checkpoint, corpus[0], MAX_LEN)
    got = [d.loglikelihood for d in lm_eval_result.docs]
    if _adds_bos(checkpoint):  # the empty document is its BOS, scored after the prefix BOS
        assert got[4] < 0 and expected[4] < 0
    else:  # the empty document: no window
        assert got[4] == expected[4] == 0.0
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert math.isclose(g, e, rel_tol=1e-6), (i, g, e)


@pytest.mark.slow
def test_lm_evals_words_and_bytes(corpus, lm_eval_result):
    texts = corpus[0]
    assert [d.words for d in lm_eval_result.docs] == [len(re.split(r"\s+", t)) for t in texts]
    assert [d.bytes for d in lm_eval_result.docs] == [len(t.encode()) for t in texts]
    # What that count makes of the edges: "" is one word, and leading or trailing whitespace one more each.
    assert [d.words for d in lm_eval_result.docs][4:7] == [1, 13, 2]


def test_lm_evals_tokens_are_the_tokenizer_jsons_with_special_tokens(checkpoint, corpus):
    """lm-eval tokenizes with special tokens: the same as without on these tokenizer.json files,
    which add none; BOS then the text on llama-bos, which the prefix makes BOS BOS text. A text
    that starts with BOS's spelling gets none added."""
    from rolling_reference import lm_eval_tokens

    tokenizer = _tokenizer(checkpoint)
    for i, text in enumerate(corpus[0]):
        plain = tokenizer.encode(text, add_special_tokens=False)
        bos = [tokenizer.bos_token_id] if _adds_bos(checkpoint) and i != 8 else []
        assert lm_eval_tokens(tokenizer, text) == bos + plain


@pytest.mark.slow
def test_lm_evals_aggregates_are_the_documents_sums(lm_eval_result):
    ll = sum(d.loglikelihood for d in lm_eval_result.docs)
    words = sum(d.words for d in lm_eval_result.docs)
    n_bytes = sum(d.bytes for d in lm_eval_result.docs)
    assert math.isclose(lm_eval_result.word_perplexity, math.exp(-ll / words), rel_tol=1e-12)
    assert math.isclose(lm_eval_result.byte_perplexity, math.exp(-ll / n_bytes), rel_tol=1e-12)
    assert math.isclose(lm_eval_result.bits_per_byte, -ll / n_bytes / math.log(2), rel_tol=1e-12)


def test_lm_evals_prefix_is_bos(checkpoint):
    from rolling_reference import prefix_token

    tokenizer = _tokenizer(checkpoint)
    expected = GPT2_EOT if checkpoint.name.startswith("gpt2") else "<s>"  # gpt2: BOS is EOS
    assert tokenizer.convert_ids_to_tokens(prefix_token(tokenizer)) == expected


def test_auto_tokenizer_encodes_as_tokenizer_json(checkpoint, corpus):
    """What lm-eval and the guide tokenize with (transformers' AutoTokenizer) against the
    tokenizer.json itself (the `tokenizers` library), with and without special tokens."""
    from tokenizers import Tokenizer

    tokenizer = _tokenizer(checkpoint)
    raw = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    for text in [*corpus[0], "\n\n".join(corpus[0]), f"{GPT2_EOT}<s>a</s>"]:
        plain = raw.encode(text, add_special_tokens=False).ids
        assert tokenizer.encode(text, add_special_tokens=False) == plain
        assert tokenizer(text)["input_ids"] == tokenizer.encode(text) == raw.encode(text).ids
        assert raw.encode(text).ids == ([tokenizer.bos_token_id] if _adds_bos(checkpoint) else []) + plain


@pytest.mark.parametrize("family", ["llama", "gpt2", "llama-bos"])
@pytest.mark.parametrize(("max_length", "stride"), [(32, 32), (32, 8), (32, 31), (500, 100)])
def test_the_guides_exact_sum_is_each_scored_tokens_nll(tmp_path, family, max_length, stride):
    """The guide's windows begin every STRIDE tokens; each scores the tokens from where the last
    one ended (but never its own first), with the window's tokens before each as context:
    recomputed here one forward pass per token. With stride < max_length every token but the
    first is scored once, and the guide's own count misses one in each window after the first;
    with stride = max_length each window's first token goes unscored, and the guide counts right."""
    import torch
    from hf_guide import guide_perplexity
    from transformers import AutoModelForCausalLM

    folder = _checkpoint(family, tmp_path / family)
    texts = ["The tokenizer travels with the model.", "", _BASE[:300], "北京 上海"]
    got = guide_perplexity(folder, texts, max_length, stride)

    ids = _tokenizer(folder)("\n\n".join(texts))["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    nll, scored, prev_end, windows = 0.0, 0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + max_length, len(ids))
        for i in range(max(prev_end, begin + 1), end):
            with torch.no_grad():
                logits = model(torch.tensor([ids[begin:i]])).logits[0, -1]
            nll -= torch.log_softmax(logits.double(), -1)[ids[i]].item()
            scored += 1
        prev_end, windows = end, windows + 1
        if end == len(ids):
            break
    assert got.seq_len == len(ids)
    assert got.n_tokens == scored == (len(ids) - 1 if stride < max_length else len(ids) - windows)
    assert math.isclose(got.nll_sum, nll, rel_tol=1e-6)
    assert got.guide_n_tokens == len(ids) - windows
    if windows == 1 or stride == max_length:  # the guide's figure is exact
        assert math.isclose(got.ppl, got.exact_ppl, rel_tol=1e-5)
    else:
        assert not math.isclose(got.ppl, got.exact_ppl, rel_tol=1e-5)


# -- npueval against them ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_cpu2():
    from local_ray import local_ray

    with local_ray(num_cpus=2) as session:
        yield session


@pytest.fixture(scope="module")
def build(checkpoint, tmp_path_factory):
    from npueval.build.pipeline import BuildConfig, build

    return build(BuildConfig(checkpoint, tmp_path_factory.mktemp("build") / "build", batch_size=4,
                             seq_len=MAX_LEN + 1, soc="Ascend310P3")).out


def npueval_run(model, data, out, **flags) -> dict:
    from npueval.eval.driver.run import RunConfig, run

    return run(RunConfig.from_flags(data=data, out=out, model=model, backend="onnx", devices=2, block_windows=8,
                                    **flags)).results.to_json()


@pytest.mark.slow
def test_npueval_rolling_gives_lm_evals_three_numbers(build, corpus, lm_eval_result, ray_cpu2, tmp_path):
    from npueval.eval.data.prepare import PrepareConfig, prepare

    data = prepare(PrepareConfig(corpus[1], tokenizer=build, out=tmp_path / "data", mode="rolling",
                                 rows_per_shard=16, workers=0)).manifest
    assert (data.n_ctx, data.inputs.stride) == (MAX_LEN + 1, MAX_LEN)  # the build's length; lm-eval's max_length
    ours = npueval_run(build, tmp_path / "data", tmp_path / "out")
    theirs = lm_eval_result
    assert ours["words"] == sum(d.words for d in theirs.docs) and ours["bytes"] == sum(d.bytes for d in theirs.docs)
    for key in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert math.isclose(ours[key], getattr(theirs, key), rel_tol=1e-6), (key, ours[key], getattr(theirs, key))
    # Document by document, from windows.parquet (lm-eval sums each window in float32).
    windows = pq.read_table(tmp_path / "out" / "windows.parquet").to_pydict()
    per_doc = np.zeros(len(corpus[0]))
    np.add.at(per_doc, windows["doc_id"], windows["nll_sum"])
    assert per_doc == pytest.approx([-d.loglikelihood for d in theirs.docs], rel=1e-5, abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("stride", [12, MAX_LEN + 1])
def test_npueval_stride_gives_the_guides_number_and_the_exact_one(checkpoint, build, corpus, ray_cpu2, tmp_path,
                                                                   stride):
    from hf_guide import guide_perplexity

    from npueval.eval.data.prepare import PrepareConfig, prepare

    prepare(PrepareConfig(corpus[1], tokenizer=build, out=tmp_path / "data", mode="stride", stride=stride,
                          rows_per_shard=16, workers=0))
    ours = npueval_run(build, tmp_path / "data", tmp_path / "out")
    guide = guide_perplexity(checkpoint, corpus[0], max_length=MAX_LEN + 1, stride=stride)
    assert ours["tokens"] == guide.n_tokens
    assert math.isclose(ours["mean_ce"], guide.nats_per_token, rel_tol=1e-6)
    if math.isnan(guide.ppl):  # its last window holds one token: no label after the shift, a NaN mean
        assert (guide.seq_len - 1) % stride == 0 and stride == MAX_LEN + 1
    else:  # the guide accumulates in float32 tensors: its own number carries that rounding
        assert math.isclose(ours["guide_ppl"], guide.ppl, rel_tol=1e-5)
    assert (ours["guide_ppl"] == pytest.approx(ours["ppl"], rel=1e-9)) is (stride == MAX_LEN + 1)


@pytest.mark.slow
def test_limit_on_rolling_data_takes_whole_documents_and_drop_last_is_refused(build, corpus, ray_cpu2, tmp_path,
                                                                              caplog):
    from npueval.core.errors import UserError
    from npueval.eval.data.prepare import PrepareConfig, prepare

    caplog.set_level("INFO", logger="npueval.eval.driver.run")
    texts, path = corpus
    prepare(PrepareConfig(path, tokenizer=build, out=tmp_path / "data", mode="rolling", workers=0))
    doc_id = pq.read_table(sorted((tmp_path / "data").glob("shard-*.parquet")), columns=["doc_id"]).column(0)
    doc_id = doc_id.to_numpy()
    long_doc = int(np.bincount(doc_id).argmax())  # the document of many windows
    first = int(np.flatnonzero(doc_id == long_doc)[0])
    results = npueval_run(build, tmp_path / "data", tmp_path / "out", limit=first + 1)
    whole = int(np.flatnonzero(doc_id == long_doc)[-1]) + 1
    assert results["windows"] == whole > first + 1
    assert results["words"] == sum(len(re.split(r"\s+", t)) for t in texts[:long_doc + 1])
    assert f"--limit {first + 1}: {whole} windows, to the end of document {long_doc}" in caplog.text
    with pytest.raises(UserError, match=r"--drop-last: the port's, for seed data; .* is a rolling data set"):
        npueval_run(build, tmp_path / "data", tmp_path / "out2", drop_last=True)
