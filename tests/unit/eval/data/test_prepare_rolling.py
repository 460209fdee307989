"""`npueval prepare --mode rolling` and `--mode stride`: lm-evaluation-harness's and Hugging Face's
protocols (docs/design.md, "Rolling and stride").

The references are written out here with the `tokenizers` library and reference/rolling.py's
transcription of lm-eval's windows: each document encoded whole with add_special_tokens=False
after the BOS; lm-eval's words and bytes of each document as its task counts them. The real
lm-eval is the oracle of tests/integration/test_lm_eval.py.
"""

import json
import random
import re

import pyarrow.parquet as pq
import pytest
from checkpoints import tokenizer_folder, write_tokenizer_json
from rolling_reference import scored_rows
from textgen import hard_text

from npueval.core.errors import UserError, VocabError
from npueval.eval.data.prepare import PrepareConfig, prepare

L = 24


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tokenizer_folder(tmp_path_factory.mktemp("llama"))


def documents(model_dir) -> list[str]:
    """Shorter than a window, exactly one (L - 1 tokens, lm-eval's max_length), one token more,
    many windows, an empty one, whitespace of every kind."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    rng = random.Random(3)
    words = ["北京", "tokenizer", "the", "模型", "每一块芯片", " ", "。", "stream", "\n", "\t "]
    docs = ["短文。", "", "a  b\n c ", " ", "\n"]
    docs += [hard_text(rng, words, max_parts=k) for k in (3, 30, 120, 400)]
    docs = ["".join(c for c in d if not 0xD800 <= ord(c) <= 0xDFFF) for d in docs]
    text = ""
    while len(tok.encode(text, add_special_tokens=False).ids) < L - 1:  # exactly max_length tokens, then one more
        text += rng.choice(["the ", "模型", "stream "])
    for extra in ("", "x"):
        probe = text
        while len(tok.encode(probe, add_special_tokens=False).ids) > L - 1 + len(extra):
            probe = probe[:-1]
        docs.append(probe + extra if extra else probe)
    return docs


def write_jsonl(path, docs):
    path.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    return path


def rows_of(out):
    return pq.read_table(sorted(out.glob("shard-*.parquet"))).to_pylist()


def lm_eval_tokens(tok, text: str, prefix: int = 1) -> list[int]:
    """HFLM.tok_encode: with the post-processor's special tokens, but for a text that starts with
    the prefix token's own text."""
    return tok.encode(text, add_special_tokens=not text.startswith(tok.decode([prefix], skip_special_tokens=False))).ids


@pytest.fixture(scope="module")
def model_with_bos(tmp_path_factory):
    """A tokenizer.json that puts its BOS before every text, as Llama 2's and 3's do: lm-eval then
    scores that BOS after its prefix BOS."""
    from checkpoints import add_bos_post_processor

    return add_bos_post_processor(tokenizer_folder(tmp_path_factory.mktemp("llama-bos")))


@pytest.mark.parametrize("which", ["model", "model_with_bos"])
def test_rolling_rows_words_and_bytes_are_lm_evals(which, request, tmp_path):
    from tokenizers import Tokenizer

    model = request.getfixturevalue(which)
    docs = [*documents(model), "<s> starts with the prefix's text", "<s>"]
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    lengths = [len(lm_eval_tokens(tok, d)) for d in docs]
    post_bos = which == "model_with_bos"
    assert {L - 1, L} <= set(lengths) and max(lengths) > 5 * L  # the cases are there
    assert (lengths[1], lengths[-1] > 0) == ((1, True) if post_bos else (0, True))  # the empty text: BOS, or nothing
    result = prepare(PrepareConfig(write_jsonl(tmp_path / "c.jsonl", docs), tokenizer=model, out=tmp_path / "ds",
                                   mode="rolling", max_length=L - 1, rows_per_shard=7, workers=1))
    m = result.manifest
    assert (m.mode, m.n_ctx, m.inputs.stride, m.inputs.bos_id, m.inputs.eos_id) == ("rolling", L, L - 1, 1, None)
    want = []
    for k, text in enumerate(docs):
        rows = scored_rows(lm_eval_tokens(tok, text), 1, L - 1) or [([1], 1)]
        want += [(k, ids, score_from) for ids, score_from in rows]
    got = rows_of(tmp_path / "ds")
    assert [(r["doc_id"], r["input_ids"][:r["n_valid"]], r["score_from"]) for r in got] == want
    assert all(set(r["input_ids"][r["n_valid"]:]) <= {m.pad_id} for r in got)
    by_doc = {}
    for r in got:
        words, nbytes = by_doc.get(r["doc_id"], (0, 0))
        by_doc[r["doc_id"]] = (words + r["scored_words"], nbytes + r["scored_bytes"])
    # every byte of a document on one of its scored ids (an added BOS covers none)
    assert by_doc == {k: (len(re.split(r"\s+", d)), len(d.encode())) for k, d in enumerate(docs)}
    assert (m.articles_kept, m.scored_tokens, m.scored_words, m.scored_bytes) == (
        len(docs), sum(lengths), sum(len(re.split(r"\s+", d)) for d in docs), sum(len(d.encode()) for d in docs))


@pytest.mark.parametrize("stride", [10, L])
def test_stride_is_the_guides_one_joined_stream(model, tmp_path, stride):
    from tokenizers import Tokenizer

    docs = documents(model)
    joined = "\n\n".join(docs)
    encoding = Tokenizer.from_file(str(model / "tokenizer.json")).encode(joined, add_special_tokens=True)
    stream = encoding.ids
    result = prepare(PrepareConfig(write_jsonl(tmp_path / "c.jsonl", docs), tokenizer=model, out=tmp_path / "ds",
                                   mode="stride", n_ctx=L, stride=stride, workers=0))
    got = rows_of(tmp_path / "ds")
    rebuilt, prev_end = [], 0
    for begin in range(0, len(stream), stride):  # the guide's loop: labels from prev_end_loc on, never the first
        end = min(begin + L, len(stream))
        rebuilt.append((stream[begin:end], max(1, prev_end - begin)))
        prev_end = end
        if end == len(stream):
            break
    assert [(r["input_ids"][:r["n_valid"]], r["score_from"]) for r in got] == rebuilt
    if stride < L:  # every byte but the first token's, which is never predicted
        first = joined[:encoding.offsets[0][1]]
        assert result.manifest.scored_bytes == len(joined.encode()) - len(first.encode())
    assert result.manifest.scored_words is None


@pytest.mark.parametrize("kw, message", [
    (dict(mode="rolling", stride=8), "--stride: not with --mode rolling"),
    (dict(mode="rolling", min_length=5), "--min-length: not with --mode rolling"),
    (dict(mode="rolling", num_pieces=4), "--num-pieces 4: the port's, for --mode seed; rolling mode makes one"),
    (dict(mode="stride", min_length=5), "--min-length: not with --mode stride"),
    (dict(mode="stride", n_ctx=16, stride=17), "--stride 17: in stride mode at most --n-ctx 16; past it the guide's "
                                               "windows leave tokens out"),
    (dict(mode="sliding", max_length=15), "--max-length: lm-evaluation-harness's window, for --mode rolling"),
    (dict(mode="rolling", max_length=15, n_ctx=15), "--max-length 15 and --n-ctx 15: rolling windows of "
                                                    "max_length M are rows of M + 1 ids"),
])
def test_flags_that_do_not_fit_the_mode_are_refused(model, tmp_path, kw, message):
    corpus = write_jsonl(tmp_path / "c.jsonl", ["text"])
    with pytest.raises(UserError, match=re.escape(message)):
        prepare(PrepareConfig(corpus, tokenizer=model, out=tmp_path / "ds", workers=0, **kw))
    assert not (tmp_path / "ds").exists()


def test_the_ports_vocab_keeps_its_own_modes(vocab_path, tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", ["text"])
    with pytest.raises(UserError, match="--mode rolling: lm-evaluation-harness's and Hugging Face's protocols, for a "
                                        "model's tokenizer.json"):
        prepare(PrepareConfig(corpus, vocab=vocab_path, out=tmp_path / "ds", mode="rolling", workers=0))


def test_rolling_without_bos_takes_the_eos_and_without_either_is_refused(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    write_tokenizer_json(folder)
    corpus = write_jsonl(tmp_path / "c.jsonl", ["text"])
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    result = prepare(PrepareConfig(corpus, tokenizer=folder, out=tmp_path / "eos", mode="rolling", n_ctx=8, workers=0))
    assert result.manifest.inputs.bos_id == 2 and rows_of(tmp_path / "eos")[0]["input_ids"][0] == 2
    (folder / "tokenizer_config.json").write_text(json.dumps({}))
    with pytest.raises(VocabError, match=r"--mode rolling puts the model's BOS \(else EOS\) token before each "
                                         "document, as lm-evaluation-harness does, and the tokenizer_config.json "
                                         "beside it names neither"):
        prepare(PrepareConfig(corpus, tokenizer=folder, out=tmp_path / "none", mode="rolling", n_ctx=8, workers=0))
