"""`npueval prepare --tokenizer`: any causal LM's tokenizer.json, any corpus format, one stream.

The reference is written out here token by token with the `tokenizers` library itself: each
document is BOS + encode(text, add_special_tokens=False) + EOS, the stream is their
concatenation, and sliding windows must score every token of it but the first exactly once, in
order, each with the stream's own context before it.
"""

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from checkpoints import tokenizer_folder, write_tokenizer_json
from textgen import hard_text

from npueval.core.errors import CorpusError, UserError, VocabError
from npueval.eval.data.prepare import PrepareConfig, prepare

N_CTX, STRIDE = 24, 8


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tokenizer_folder(tmp_path_factory.mktemp("llama"))


def texts(seed=0, n=40, ascii_only=False):
    rng = random.Random(seed)
    words = ["北京", "tokenizer", "the", "模型", "每一块芯片", " ", "。", "stream"]
    out = []
    for _ in range(n):
        if ascii_only:
            text = " ".join(rng.choice(["the", "model", "stream", "token", "once,", "in", "order."])
                            for _ in range(rng.randint(1, 40)))
        else:
            text = hard_text(rng, words, max_parts=rng.choice([3, 30, 120]))
            text = "".join(c for c in text if not 0xD800 <= ord(c) <= 0xDFFF)  # lone surrogates: their own test
        out.append(text)
    return out


def stream_of(model_dir, docs, bos=1, eos=2):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    stream, token_bytes = [], []
    for text in docs:
        if not text:  # no text, no document
            continue
        enc = tok.encode(text, add_special_tokens=False)
        before, after = [bos] if bos is not None else [], [eos] if eos is not None else []
        stream += before + enc.ids + after
        token_bytes += [0] * len(before) + [len(t) for t in enc.tokens] + [0] * len(after)
    return stream, token_bytes


def rows(out):
    manifest = json.loads((out / "manifest.json").read_text())
    table = pa.concat_tables([pq.read_table(out / s["name"]) for s in manifest["shards"]])
    return manifest, table.to_pylist()


def check_stream(out, stream):
    manifest, windows = rows(out)
    scored = [t for w in windows for t in w["input_ids"][w["score_from"]:w["n_valid"]]]
    assert scored == stream[1:]
    for k, w in enumerate(windows):  # each window is the stream from k * stride: its context is the stream's
        assert w["input_ids"][:w["n_valid"]] == stream[k * STRIDE: k * STRIDE + w["n_valid"]]
    assert manifest["scored_tokens"] == len(stream) - 1
    return manifest, windows


def write_corpus(folder, fmt, docs):
    folder.mkdir(parents=True, exist_ok=True)
    half = len(docs) // 2
    for name, part in (("part-0", docs[:half]), ("part-1", docs[half:])):
        if fmt == "jsonl":
            (folder / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in part))
        elif fmt == "parquet":
            pq.write_table(pa.table({"text": part}), folder / f"{name}.parquet", row_group_size=5)
        else:  # text: paragraphs of non-blank lines, a blank line between
            (folder / f"{name}.txt").write_text("\n\n".join(part) + "\n", encoding="utf-8")
    return folder


def text_paragraphs(docs):
    """Texts a .txt file can hold as paragraphs: no blank line inside, none blank."""
    out = []
    for text in docs:
        lines = [line for line in text.replace("\r", " ").replace("\x85", " ").split("\n") if line.strip()]
        if lines:
            out.append("\n".join(lines))
    return out


@pytest.mark.parametrize("fmt", ["jsonl", "text", "parquet"])
@pytest.mark.parametrize("workers", [0, 2])
def test_every_token_of_the_stream_is_scored_once_in_order(model, tmp_path, fmt, workers, monkeypatch):
    import npueval.eval.data.prepare as prepare_module

    monkeypatch.setattr(prepare_module, "BATCH_BYTES", 300)  # many chunks, in and out of order
    docs = texts(seed=workers)
    if fmt == "text":
        docs = text_paragraphs(docs)
    corpus = write_corpus(tmp_path / "corpus", fmt, docs)
    result = prepare(PrepareConfig(corpus_dir=corpus, tokenizer=model, out=tmp_path / "data", n_ctx=N_CTX,
                                   stride=STRIDE, rows_per_shard=64, workers=workers))
    stream, _ = stream_of(model, docs)
    manifest, _ = check_stream(result.out, stream)
    assert (manifest["corpus_format"], manifest["mode"]) == (fmt, "sliding")
    assert (manifest["bos_id"], manifest["eos_id"]) == (1, 2)
    assert manifest["scored_bytes"] == sum(len(t.encode()) for t in docs)
    assert manifest["articles_kept"] == sum(1 for t in docs if t)


def test_each_window_records_the_bytes_its_scored_tokens_cover(model, tmp_path):
    """ASCII through a byte-level BPE: each token covers exactly the characters of its own spelling."""
    docs = texts(seed=5, ascii_only=True)
    corpus = write_corpus(tmp_path / "corpus", "jsonl", docs)
    result = prepare(PrepareConfig(corpus_dir=corpus, tokenizer=model, out=tmp_path / "data", n_ctx=N_CTX,
                                   stride=STRIDE, workers=0))
    stream, token_bytes = stream_of(model, docs)
    _, windows = check_stream(result.out, stream)
    position = 1
    for w in windows:
        n = w["n_valid"] - w["score_from"]
        assert w["scored_bytes"] == sum(token_bytes[position: position + n])
        position += n


@pytest.mark.parametrize("config, bos, eos", [
    ({"bos_token": None, "eos_token": "</s>"}, None, 2),  # Qwen2's base models
    ({"bos_token": {"content": "<s>", "lstrip": False, "__type": "AddedToken"}, "eos_token": None}, 1, None),
    (None, None, None),  # no tokenizer_config.json: nothing between documents, and a warning says so
])
def test_bos_and_eos_are_what_tokenizer_config_names(model, tmp_path, config, bos, eos, caplog):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "tokenizer.json").write_bytes((model / "tokenizer.json").read_bytes())
    if config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    docs = texts(seed=7, n=12)
    corpus = write_corpus(tmp_path / "corpus", "jsonl", docs)
    result = prepare(PrepareConfig(corpus_dir=corpus, tokenizer=folder / "tokenizer.json", out=tmp_path / "data",
                                   n_ctx=N_CTX, stride=STRIDE, workers=0))
    check_stream(result.out, stream_of(model, docs, bos, eos)[0])
    assert (result.manifest.inputs.bos_id, result.manifest.inputs.eos_id) == (bos, eos)
    assert ("no tokenizer_config.json beside it" in caplog.text) == (config is None)


def test_a_special_token_the_tokenizer_lacks_is_named(model, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "tokenizer.json").write_bytes((model / "tokenizer.json").read_bytes())
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<|begin_of_text|>"}))
    corpus = write_corpus(tmp_path / "corpus", "jsonl", ["text"])
    with pytest.raises(VocabError, match=r"tokenizer_config.json: bos_token '<\|begin_of_text\|>' is not a token of "
                                         "tokenizer.json"):
        prepare(PrepareConfig(corpus_dir=corpus, tokenizer=folder, out=tmp_path / "data", workers=0))


def test_a_lone_surrogate_is_a_bad_line(model, tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "fine text"}\n{"text": "bad \\ud800 text"}\n{"text": "more fine text"}\n')
    with pytest.raises(CorpusError, match=r"c.jsonl:2: a lone surrogate \\ud800 at character 4, which is not text; "
                                          "fix the line or pass --skip-bad-lines"):
        prepare(PrepareConfig(corpus_dir=corpus, tokenizer=model, out=tmp_path / "data", n_ctx=4, workers=0))
    result = prepare(PrepareConfig(corpus_dir=corpus, tokenizer=model, out=tmp_path / "data", n_ctx=4,
                                   skip_bad_lines=True, workers=0))
    assert (result.manifest.bad_lines, result.manifest.articles_kept) == (1, 2)


def test_the_tokenizer_of_a_build_folder_or_checkpoint(model, tmp_path):
    """A build folder's manifest names its tokenizer; a checkpoint folder's tokenizer.json is found."""
    from npueval.build.manifest import BuildManifest

    build = tmp_path / "build"
    build.mkdir()
    (build / "tokenizer.json").write_bytes((model / "tokenizer.json").read_bytes())
    (build / "tokenizer_config.json").write_bytes((model / "tokenizer_config.json").read_bytes())
    BuildManifest(format_version=1, checkpoint=str(model), weights_sha256="0" * 64, vocab_sha256="0" * 64,
                  config={"vocab_size": 320}, batch_size=1, seq_len=N_CTX, output="nll", inputs=(), outputs=(),
                  opset=17, exporter="torch.onnx", onnx="model.onnx", om=None, tolerance=1e-4,
                  tolerance_loosened=False, stages={}, atc={}, family="llama", tokenizer="tokenizer.json").write(build)
    corpus = write_corpus(tmp_path / "corpus", "jsonl", texts(n=6))
    keys = {prepare(PrepareConfig(corpus_dir=corpus, tokenizer=source, out=tmp_path / name, n_ctx=N_CTX,
                                  workers=0)).manifest.dataset_key
            for name, source in (("a", build), ("b", model), ("c", model / "tokenizer.json"))}
    assert len(keys) == 1


def test_a_gpt2_checkpoint_keeps_the_ports_tokenizer(vocab_path, tmp_path):
    """--tokenizer on a GPT2-Chinese folder is --vocab on its vocab.txt: the same data set."""
    from textgen import write_wiki_corpus

    folder = tmp_path / "gpt2"
    folder.mkdir()
    (folder / "vocab.txt").write_bytes(vocab_path.read_bytes())
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    write_tokenizer_json(folder)  # a tokenizer.json too: GPT-2 still prefers vocab.txt
    corpus = tmp_path / "wiki"
    write_wiki_corpus(corpus, [[["中文" * 200, "文字" * 100]]])
    by_folder = prepare(PrepareConfig(corpus_dir=corpus, tokenizer=folder, out=tmp_path / "a", workers=0)).manifest
    by_vocab = prepare(PrepareConfig(corpus_dir=corpus, vocab=vocab_path, out=tmp_path / "b", workers=0)).manifest
    assert by_folder.dataset_key == by_vocab.dataset_key and by_folder.mode == "seed"
    assert by_folder.scored_bytes is None


def test_a_gpt2_build_folder_names_its_vocab_txt(tmp_path):
    """The bundled sample's build folder: `--tokenizer BUILD` is `--vocab BUILD/vocab.txt`."""
    from textgen import write_wiki_corpus

    from npueval.eval.sample.bundled import BUILD

    corpus = tmp_path / "wiki"
    write_wiki_corpus(corpus, [[["中文" * 200, "文字" * 100]]])
    by_build = prepare(PrepareConfig(corpus_dir=corpus, tokenizer=BUILD, out=tmp_path / "a", workers=0)).manifest
    by_vocab = prepare(PrepareConfig(corpus_dir=corpus, vocab=BUILD / "vocab.txt", out=tmp_path / "b",
                                     workers=0)).manifest
    assert by_build.dataset_key == by_vocab.dataset_key and by_build.vocab_path == str((BUILD / "vocab.txt").resolve())


def test_seed_mode_and_vocab_json_are_refused_with_a_tokenizer_json(model, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", "jsonl", ["text"])
    with pytest.raises(UserError, match="--mode seed: the port's protocol"):
        prepare(PrepareConfig(corpus_dir=corpus, tokenizer=model, out=tmp_path / "d", mode="seed", workers=0))
    with pytest.raises(VocabError, match="--vocab .*tokenizer.json: a tokenizer.json; pass it as --tokenizer"):
        prepare(PrepareConfig(corpus_dir=corpus, vocab=model / "tokenizer.json", out=tmp_path / "d", workers=0))
    with pytest.raises(VocabError, match="pass --tokenizer MODEL_DIR"):
        prepare(PrepareConfig(corpus_dir=corpus, out=tmp_path / "d", workers=0))


def test_bytes_no_token_covers_go_to_the_next_token_and_the_tail_to_eos(tmp_path):
    """A tokenizer that drops whitespace (its tokens' offsets leave the spaces out): every byte of
    each document still lands on exactly one of its ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    folder = tmp_path / "model"
    folder.mkdir()
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["the model reads the stream, once. 北京 模型"] * 3,
                            trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"],
                                                show_progress=False))
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    docs = ["  the model  ", "北京\u3000 模型 the\t", "once.", "   "]
    corpus = write_corpus(tmp_path / "corpus", "jsonl", docs)
    result = prepare(PrepareConfig(corpus_dir=corpus, tokenizer=folder, out=tmp_path / "data", n_ctx=4, stride=1,
                                   workers=0))
    expected = []  # per id of the stream: BOS, tokens, EOS
    for text in docs:
        enc = tok.encode(text, add_special_tokens=False)
        expected.append(0)
        covered = 0
        for _, end in enc.offsets:
            expected.append(len(text[covered:max(end, covered)].encode()))
            covered = max(end, covered)
        expected.append(len(text[covered:].encode()))
    _, windows = rows(result.out)
    spans = [w["n_valid"] - w["score_from"] for w in windows]
    ends = [1 + sum(spans[: k + 1]) for k in range(len(spans))]
    assert [w["scored_bytes"] for w in windows] == [sum(expected[e - n: e]) for n, e in zip(spans, ends)]
    assert result.manifest.scored_bytes == sum(len(t.encode()) for t in docs)


def test_a_data_set_made_before_any_tokenizer_json_keeps_its_key():
    """The key of a wiki_zh + vocab.txt data set is the sha256 of the inputs it always had: the
    fields added for other corpora and tokenizers count only where they are not the defaults."""
    import hashlib

    from npueval.eval.data.manifest import CorpusFileEntry, DataInputs

    old = {"format_version": 1, "mode": "seed", "n_ctx": 512, "stride": 768, "num_pieces": 100, "min_length": 128,
           "shuffle": False, "files_mode": "first", "skip_bad_lines": False, "rows_per_shard": 4096,
           "vocab_sha256": "ab" * 32, "files": [{"path": "AA/wiki_00", "sha256": "cd" * 32, "lines": 3}]}
    inputs = DataInputs(**{**old, "files": (CorpusFileEntry("AA/wiki_00", "cd" * 32, 3),)})
    assert inputs.key() == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()
    for change in ({"corpus_format": "jsonl"}, {"text_field": "body"}, {"bos_id": 1}, {"eos_id": 2}):
        assert DataInputs(**{**inputs.__dict__, **change}).key() != inputs.key()


def test_a_tokenizer_json_saved_with_truncation_and_padding_still_tokenizes_each_document_whole(model, tmp_path):
    """Some checkpoints ship a tokenizer.json saved with truncation (and padding) on: the library
    then cut every document at max_length, silently, and padded short ones with pad ids."""
    import shutil

    saved = tmp_path / "saved"
    shutil.copytree(model, saved)
    config = json.loads((saved / "tokenizer.json").read_text(encoding="utf-8"))
    config["truncation"] = {"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0}
    config["padding"] = {"strategy": {"Fixed": 64}, "direction": "Right", "pad_to_multiple_of": None, "pad_id": 0,
                         "pad_type_id": 0, "pad_token": "<unk>"}
    (saved / "tokenizer.json").write_text(json.dumps(config), encoding="utf-8")
    docs = texts(seed=7)
    corpus = write_corpus(tmp_path / "corpus", "jsonl", docs)
    result = prepare(PrepareConfig(corpus_dir=corpus, tokenizer=saved, out=tmp_path / "data", n_ctx=N_CTX,
                                   stride=STRIDE, workers=0))
    stream, _ = stream_of(model, docs)  # the tokenizer as the model was trained with it: no truncation
    check_stream(result.out, stream)
