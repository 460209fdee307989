"""`npueval prepare` on long documents: a tokenizer.json's text goes through the tokenizer in
pieces cut only where the ids and offsets are provably those of the whole (eval/data/cuts.py),
so that memory stays bounded; a document that cannot be cut is tokenized whole, after one
warning that names its FILE:LINE and the memory it needs.

The reference is the `tokenizers` library itself on the whole text, for a tokenizer of each
family's layout (tests/checkpoints.py), trained on text full of what makes cuts hard.
"""

import json
import random
import re
import subprocess
import sys
from dataclasses import replace

import pytest
from checkpoints import TOKENIZER_STYLES, write_tokenizer_json
from textgen import hard_text

from npueval.eval.data.cuts import cuts_for
from npueval.eval.data.prepare import PrepareConfig, prepare

ATOMS = ("the", "model", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r", ".", "。", "，", "北京", "模型", "'s",
         "'t", "123", "4567", "\u00a0", "\u3000", "e\u0301", "\u0301", "\u2581", "😀", "\u200b", "ß", "(", ")",
         "stream", "-", "!!", "x", "Ǆ", "\u0b47\u0b3e", "\u1100\u1161", "\ufeff", "\x0b", "\x85", "\u2028")
#: Cut points next to what a wrong rule would get wrong.
PATHOLOGICAL = (
    "a  b", "a   b  c    d", "a \r\nb", "a\r\n\r\nb", "x.\n\ny", "end.\r\nNext line", "北京。\n模型\n\n数据",
    "  leading", "trailing  ", "a\tb \t c", "e\u0301 x\u0301 \u0301y", "<s> a</s> b <s>", "a<s> b", "word\u2581 word",
    "\u2581\u2581 x", "it's the model's", "12345 678 9", "a" * 3000, "a b" * 1000,
    "北京模型" * 500 + "\n" + "数据" * 500,
    "x\u3000y\u00a0z w", "line\nline\nline", "(\n)\n(\n)", "😀 😀\n😀",
)


def training_text(line_breaks: bool) -> str:
    rng = random.Random(9)
    text = "".join(rng.choice(ATOMS) for _ in range(8000))
    return text if line_breaks else re.sub("[\r\n\x85\u2028]", "", text)


def fuzz_texts() -> list[str]:
    rng = random.Random(2)
    texts = list(PATHOLOGICAL)
    texts += ["".join(rng.choice((*ATOMS, "<s>", "</s>")) for _ in range(rng.randint(1, 80))) for _ in range(300)]
    for _ in range(60):
        text = hard_text(rng, ["北京", "the", " ", "\n", "。", "<s>"], max_parts=rng.choice([5, 40]))
        texts.append("".join(c for c in text if not 0xD800 <= ord(c) <= 0xDFFF))
    return texts


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """Each style trained on text with line breaks (merges join across them) and without (a line
    break is a byte token no merge touches, as in Llama 2's vocabulary)."""
    root = tmp_path_factory.mktemp("tokenizers")
    return {(style, breaks): write_tokenizer_json(root / f"{style}-{breaks}", vocab_size=600, style=style,
                                                  text=training_text(breaks))
            for style in TOKENIZER_STYLES for breaks in (True, False)}


def encode(path, text, starts):
    """(ids, character ends) of TEXT whole (STARTS None) or in the pieces that start at STARTS."""
    from tokenizers import Tokenizer

    whole = Tokenizer.from_file(str(path))
    if starts is None:
        enc = whole.encode(text, add_special_tokens=False)
        return enc.ids, [end for _, end in enc.offsets]
    cuts = cuts_for(path.read_text(encoding="utf-8"))
    rest = Tokenizer.from_str(cuts.continuation) if cuts.continuation else whole
    ids, ends = [], []
    for k, (a, b) in enumerate(zip(starts, [*starts[1:], len(text)])):
        enc = (whole if k == 0 else rest).encode(text[a:b], add_special_tokens=False)
        ids += enc.ids
        ends += [a + end for _, end in enc.offsets]
    return ids, ends


#: Where each style cuts (trained with line breaks, without).
PLACES = {
    "gpt2": ("before whitespace that follows other characters",) * 2,
    "llama3": ("before a space or tab after other characters, or after a line break",) * 2,
    "qwen2": ("before a space or tab after other characters, or after a line break",) * 2,
    "metaspace": ("before a space after another character",
                  "before a space after another character, or before a line break after another character"),
    "llama2": ("before a space after another character",
               "before a space after another character, or before a line break after another character"),
}


@pytest.mark.parametrize("breaks", [True, False], ids=["merges-over-line-breaks", "line-breaks-untouched"])
@pytest.mark.parametrize("style", TOKENIZER_STYLES)
def test_the_pieces_have_the_ids_and_offsets_of_the_whole(tokenizers, style, breaks):
    path = tokenizers[style, breaks]
    cuts = cuts_for(path.read_text(encoding="utf-8"))
    assert cuts.places == PLACES[style][0 if breaks else 1]
    made = 0
    for text in fuzz_texts():
        starts = cuts.starts(text, 1)  # every safe cut
        made += len(starts) - 1
        assert encode(path, text, starts) == encode(path, text, None), (text, starts)
    assert made > 1000  # the rules do cut: the comparison is not vacuous
    assert cuts.starts("a" * 3000, 1) == [0] and cuts.starts("short text", 100) == [0]


@pytest.mark.parametrize("style", TOKENIZER_STYLES)
def test_a_cut_before_any_whitespace_would_change_the_ids(tokenizers, style):
    """What the rules keep out: a naive cut before every whitespace character gives other ids with
    each of these tokenizers (the comparison above can tell)."""
    path = tokenizers[style, True]
    naive = replace(cuts_for(path.read_text(encoding="utf-8")), at=re.compile(r"\s"))
    changed = sum(encode(path, t, naive.starts(t, 1)) != encode(path, t, None) for t in fuzz_texts())
    assert changed > 10


def edit(config, **changes):
    out = json.loads(json.dumps(config))
    for path, value in changes.items():
        node = out
        *parents, last = path.split("__")
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value(node[last]) if callable(value) else value
    return json.dumps(out)


@pytest.mark.parametrize("style, changes, reason", [
    ("gpt2", {"pre_tokenizer": {"type": "Whitespace"}}, "its pre-tokenizer Whitespace with normalizer none is not"),
    ("gpt2", {"truncation": {"max_length": 512}}, "it sets truncation"),
    ("gpt2", {"model__dropout": 0.1}, "its BPE has dropout"),
    ("gpt2", {"added_tokens__1__lstrip": True}, "its added token '<s>' strips or holds whitespace"),
    ("gpt2", {"added_tokens__1__content": "< s>"}, "its added token '< s>' strips or holds whitespace"),
    ("gpt2", {"normalizer": {"type": "Lowercase"}}, "its normalizer is Lowercase"),
    ("gpt2", {"post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True}},
     "its ByteLevel post-processor trims the first token's offsets apart"),
    ("llama3", {"pre_tokenizer__pretokenizers__0__pattern": {"Regex": r"\s+|\S+"}},
     "its Split pattern is not one whose cuts are known"),
    ("metaspace", {"model__ignore_merges": True}, "its BPE ignores merges"),
    ("metaspace", {"model__merges": lambda merges: [*merges, ["x", "\u2581the"]]},
     "its merge 'x' + '▁the' joins across '▁'"),
    ("llama2", {"model__continuing_subword_prefix": "##"}, "its BPE has a continuing_subword_prefix"),
])
def test_a_tokenizer_whose_cuts_are_not_proven_is_not_cut(tokenizers, style, changes, reason):
    """Trained with line breaks: no cut before one either."""
    config = json.loads(tokenizers[style, True].read_text(encoding="utf-8"))
    cuts = cuts_for(edit(config, **changes))
    assert cuts.at is None and reason in cuts.places
    assert cuts.starts("a b " * 100, 1) == [0]


def test_metaspace_puts_no_line_break_cut_where_every_added_token_gets_a_prefix(tokenizers):
    """prepend_scheme "always" puts ▁ after every added token: only cuts before a space, whose
    pieces start with ▁ anyway, and the one tokenizer for every piece."""
    config = json.loads(tokenizers["metaspace", False].read_text(encoding="utf-8"))
    cuts = cuts_for(edit(config, pre_tokenizer__prepend_scheme="always"))
    assert cuts.places == "before a space after another character" and cuts.continuation is None


def long_docs(seed=0):
    rng = random.Random(seed)
    return ["".join(rng.choice(ATOMS) for _ in range(rng.choice([5, 400, 3000]))) for _ in range(12)]


@pytest.mark.parametrize("style, workers", [(s, 0) for s in TOKENIZER_STYLES] + [("llama2", 2)])
def test_a_data_set_cut_into_small_pieces_is_the_one_made_whole(tokenizers, tmp_path, monkeypatch, style, workers):
    """Every cut, call and step of the windows tiny (many of each) against none: the same shards."""
    import npueval.eval.data.framing as framing
    import npueval.eval.data.prepare as prepare_module

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in long_docs()))
    model = tokenizers[style, False].parent

    def shards(out, piece, call, step):
        monkeypatch.setattr(framing, "PIECE_CHARS", piece)
        monkeypatch.setattr(framing, "CALL_CHARS", call)
        monkeypatch.setattr(prepare_module, "STREAM_TOKENS", step)
        m = prepare(PrepareConfig(corpus_dir=corpus, tokenizer=model, out=tmp_path / out, n_ctx=16, stride=8,
                                  rows_per_shard=40, workers=workers)).manifest
        return [s.sha256 for s in m.shards], m.scored_bytes, m.stream_tokens

    whole = shards("whole", 10**9, 10**9, 10**9)
    assert shards("cut", 5, 40, 7) == whole
    assert whole[1] == sum(len(t.encode()) for t in long_docs())


def test_a_call_of_texts_without_a_token_keeps_their_bytes(tmp_path, monkeypatch):
    """Calls of four characters: one holds only "     ", which a Whitespace pre-tokenizer makes
    no token of; its bytes go onto its EOS, as ever."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    import npueval.eval.data.framing as framing

    folder = tmp_path / "model"
    folder.mkdir()
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["the model"] * 3, trainers.BpeTrainer(vocab_size=40, show_progress=False,
                                                                   special_tokens=["<unk>", "<s>", "</s>"]))
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    corpus = tmp_path / "c.jsonl"
    docs = ["the model", "     ", "the"]
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    monkeypatch.setattr(framing, "CALL_CHARS", 4)
    m = prepare(PrepareConfig(corpus_dir=corpus, tokenizer=folder, out=tmp_path / "d", n_ctx=4, workers=0)).manifest
    assert (m.stream_tokens, m.scored_bytes) == (4 + 2 + 3, sum(map(len, docs)))  # BOS ids EOS each


def test_a_document_that_cannot_be_cut_is_named_once_with_what_it_needs(tokenizers, tmp_path, monkeypatch, caplog):
    import npueval.eval.data.framing as framing
    import npueval.eval.data.prepare as prepare_module

    monkeypatch.setattr(framing, "LONG_CHARS", 2000)
    monkeypatch.setattr(framing, "PIECE_CHARS", 500)
    monkeypatch.setattr(prepare_module, "BATCH_BYTES", 50)  # the long line in a chunk of its own, far in
    lines = ["short text", "another one", "", "x" * 5000, "and " * 2000, "y" * 2500 + " " + "z" * 3000, "end"]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join((json.dumps({"text": t}) if t else "") + "\n" for t in lines))
    prepare(PrepareConfig(corpus_dir=corpus, tokenizer=tokenizers["gpt2", True].parent, out=tmp_path / "d",
                          n_ctx=16, workers=0))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    tail = ("with no place to cut them that keeps the ids (before whitespace that follows other characters): that "
            "needs about {} MiB of memory (some 400 bytes a character); if this machine has less to spare, split "
            "the document into smaller ones (or pass fewer --workers)")
    assert warnings == [  # nowhere to cut 5,000 characters; the 8,000 with spaces are cut; two pieces, one warning
        f"{corpus}:4: a document of 5,000 characters, of which 5,000 from character 0 are tokenized in one piece, "
        + tail.format(1.9),
        f"{corpus}:6: a document of 5,501 characters, of which 3,001 from character 2,500 are tokenized in one "
        "piece, " + tail.format(1.1)]


def test_a_worker_warns_before_it_tokenizes_a_document_that_cannot_be_cut(tmp_path):
    """Through the CLI with two workers: the worker that meets the document says so on stderr,
    with the document's FILE:LINE, for a tokenizer that cannot be cut at all."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    folder = tmp_path / "model"
    folder.mkdir()
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["the model reads the stream"] * 3,
                            trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>"], show_progress=False))
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text("{}")
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["the model", "the stream " * 300, "the"]))
    code = ("import sys; import npueval.eval.data.framing as f; f.LONG_CHARS = 1000; "
            "import npueval.eval.data.prepare as p; p.BATCH_BYTES = 10; "
            "from npueval.eval.cli import main; sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "prepare", str(corpus), "--tokenizer", str(folder), "--out",
                           str(tmp_path / "d"), "--n-ctx", "8", "--workers", "2"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
    assert warned == [
        f"WARNING npueval.eval.data.batches: {corpus}:2: a document of 3,300 characters, tokenized whole since this "
        "tokenizer.json cannot be cut: its pre-tokenizer Whitespace with normalizer none is not one whose cuts are "
        "known: that needs about 1.3 MiB of memory (some 400 bytes a character); if this machine has less to "
        "spare, split the document into smaller ones (or pass fewer --workers)"]


MEASURE = """
import json, random, shutil, sys
from pathlib import Path
import pyarrow.parquet  # imported before the baseline, as prepare imports it
from npueval.eval.data.prepare import PrepareConfig, prepare

work, model, chars = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
rng = random.Random(0)
words = "the model reads a stream of tokens once in order and every device scores its windows".split()
text = " ".join(rng.choice(words) + ("\\n" if rng.random() < 0.1 else "") for _ in range(chars // 5))[:chars]
(work / "long.jsonl").write_text(json.dumps({"text": text}) + "\\n")
(work / "small.jsonl").write_text(json.dumps({"text": text[:5000]}) + "\\n")

def status(key):
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) << 10

prepare(PrepareConfig(corpus_dir=work / "small.jsonl", tokenizer=model, out=work / "warm", workers=0))
base = status("VmRSS")
prepare(PrepareConfig(corpus_dir=work / "long.jsonl", tokenizer=model, out=work / "out", workers=0))
print(json.dumps({"growth": status("VmHWM") - base}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_long_document_takes_bounded_memory(tokenizers, tmp_path):
    """One 3 MB line of words: tokenized whole it took some 250 bytes a character (762 MiB more
    at its peak than before); in pieces about 100 MiB, for the calls of the tokenizer and the ids."""
    done = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path), str(tokenizers["gpt2", True].parent),
                           str(3_000_000)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["growth"] < 300 * 2**20
