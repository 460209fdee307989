"""The fast tokenizer gives exactly the classic pure-Python tokenizer's ids, on any text."""

import random

import numpy as np
import pytest
from classic_bert import ClassicBertTokenizer
from textgen import WikiTextGen, hard_text
from vocabs import small_vocab_tokens, write_vocab

from npueval.core.vocab import load_vocab
from npueval.eval.data.tokenizer import BertChineseTokenizer


@pytest.fixture(scope="module")
def fast(vocab_path):
    return BertChineseTokenizer(load_vocab(vocab_path))


@pytest.fixture(scope="module")
def classic(vocab_path):
    return ClassicBertTokenizer(vocab_path)


def ids(vocab_path, *tokens):
    vocab = load_vocab(vocab_path).token_to_id
    return [vocab[t] for t in tokens]


@pytest.mark.parametrize("seed", range(4))
def test_identical_to_classic_on_hard_text(fast, classic, seed):
    rng = random.Random(seed)
    words = [t for t in small_vocab_tokens() if not t.startswith("[")]
    texts = [hard_text(rng, words) for _ in range(1500)]
    got = fast.encode_batch(texts)
    mismatches = [t for t, g in zip(texts, got) if g.tolist() != classic.encode(t)]
    assert mismatches == [], f"{len(mismatches)} texts differ, first: {mismatches[0]!r}"


def test_identical_to_classic_on_wiki_like_text(fast, classic):
    gen = WikiTextGen(small_vocab_tokens(), seed=1)
    texts = [gen.article().replace("\n", " [SEP] ") for _ in range(200)]
    got = fast.encode_batch(texts)
    assert [g.tolist() for g in got] == [classic.encode(t) for t in texts]
    assert all(g.dtype == np.int32 for g in got)


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("2019\u4e00年", ["2", "0", "1", "9", "\u4e00", "[UNK]"]),  # GPT2-Chinese isolates digits
        ("ΑΣ", ["α", "##ς"]),  # the final sigma: str.lower() on the word
        ("ΑΣΑ", ["α", "##σ", "##α"]),
        ("a [SEP] b", ["a", "[SEP]", "b"]),  # special tokens are cut out first
        ("[sep]", ["[", "s", "##e", "##p", "]"]),  # not a special token: lower case
        ("[SE\u200bP]", ["[", "[UNK]", "]"]),  # becomes "[SEP]" once cleaned: kept verbatim
        ("x[SE\u200bP]", ["x", "[", "s", "##e", "##p", "]"]),  # not a word of its own: lowered
        ("\u4e01\u200b\u4e02", ["\u4e01", "\u4e02"]),  # zero-width space removed
        ("éÅ", ["e", "##a"]),  # accents stripped after NFD
        ("\uf900", ["\u8c48"]),  # a CJK compatibility ideograph decomposes
        ("a" * 100, ["a"] + ["##a"] * 99),
        ("a" * 101, ["[UNK]"]),  # longer than 100 characters
        ("qqq", ["q", "##q", "##q"]),
        ("\u3000 \t\n", []),
        ("\ue000", []),  # private use: removed by cleaning
        ("\uf000b[SEP]\uf001", ["b", "[SEP]"]),  # code points npueval uses internally
    ],
)
def test_named_cases(fast, classic, vocab_path, text, tokens):
    expected = ids(vocab_path, *tokens)
    assert classic.encode(text) == expected
    assert fast.encode(text).tolist() == expected


#: What cleaning removes, one of each kind: C0 and C1 controls, format (LRM, RLM, ZWSP, ZWJ, BOM,
#: soft hyphen, word joiner), private use (the code points npueval uses inside among them),
#: unassigned, U+0000 and U+FFFD.
REMOVED_SAMPLES = ("\x01\x1f\x7f\x85\u200e\u200f\u200b\u200d\ufeff\u00ad\u2060\ue000\ue004\uf000\uf8ff\u0378"
                   "\U000e0001\x00\ufffd")


@pytest.mark.parametrize("text", [
    "ΑΣ\x01Α",  # cleaned before lower-casing: not a final sigma (str.lower() on the raw text says final)
    "ΑΣ\u200dΑ", "ΑΣ\x01", "\x01ΑΣ",
    REMOVED_SAMPLES,  # nothing but such characters
    "中\u200b [SEP] \u200b文", "\u200b[SEP]\u200b", "[SEP]\u200e[CLS]", "a\u00ad[SEP]\u00adb",  # at [SEP]
    "[SE\u200bP] [CL\x01S]x [MA\ue000SK]", "中[SE\u200bP]中", "1[SE\u200bP]2",  # specials once cleaned
    "\ue000", "\ue000[SEP]", "x \ue002 y",  # the sentinels' own code points, in raw text
    "beij\u200bing be\u00adijing", "\u200b" * 300 + "中",
])
def test_text_with_characters_cleaning_removes(fast, classic, text):
    assert fast.encode(text).tolist() == classic.encode(text)


def test_dense_such_characters_in_a_batch_of_clean_and_dirty_texts(fast, classic):
    rng = random.Random(7)
    words = [t for t in small_vocab_tokens() if not t.startswith("[")] + ["[SEP]", "[CLS]", "ΑΣ", "beijing"]
    texts = ["".join(rng.choice([rng.choice(words), rng.choice(REMOVED_SAMPLES), " "])
                     for _ in range(rng.randint(0, 80))) for _ in range(600)]
    assert [g.tolist() for g in fast.encode_batch(texts)] == [classic.encode(t) for t in texts]


def test_nothing_cleaning_keeps_lower_cases_into_what_it_removes(fast):
    """Why no text needs a slow path: cleaned, lower-cased text holds no character cleaning
    removes and none of the code points npueval uses inside (placeholders, sentinels)."""
    import sys

    from npueval.eval.data.tokenizer import _PLACEHOLDER_BASE, _SENTINEL_BASE, REMOVED, _char_classes

    kind = _char_classes()["kind"]
    internal = set(range(_SENTINEL_BASE, _SENTINEL_BASE + 5)) | set(range(_PLACEHOLDER_BASE, _PLACEHOLDER_BASE + 5))
    bad = [cp for cp in range(sys.maxunicode + 1) if kind[cp] != REMOVED
           and any(kind[ord(c)] == REMOVED or ord(c) in internal for c in chr(cp).lower())]
    assert bad == []


def test_special_token_missing_from_vocab_maps_to_unk(tmp_path):
    tokens = [t if t != "[PAD]" else "[unused0]" for t in small_vocab_tokens()]
    path = write_vocab(tmp_path / "vocab.txt", tokens)
    fast = BertChineseTokenizer(load_vocab(path))
    classic = ClassicBertTokenizer(path)
    text = "a [PAD] b"
    assert fast.encode(text).tolist() == classic.encode(text) == ids(path, "a", "[UNK]", "b")


def test_cached_tables_equal_freshly_built_ones(tables_cache):
    from npueval.eval.data import tokenizer

    tokenizer.warm_tables()
    path = tokenizer.tables_cache_path()
    assert path.parent == tables_cache and path.is_file()
    loaded = tokenizer._load_or_build_tables()
    built = tokenizer._build_tables()
    assert loaded.keys() == built.keys()
    for key in built:
        np.testing.assert_array_equal(loaded[key], built[key])


def test_a_corrupt_or_unwritable_cache_is_rebuilt(tmp_path, monkeypatch):
    from npueval.eval.data import tokenizer

    monkeypatch.setenv("NPUEVAL_CACHE_DIR", str(tmp_path))
    path = tokenizer.tables_cache_path()
    path.write_bytes(b"not an npz file")
    tables = tokenizer._load_or_build_tables()
    assert tables["kind"][ord("\u4e00")] == tokenizer.SINGLE
    with np.load(path) as data:  # replaced by a good one
        np.testing.assert_array_equal(data["kind"], tables["kind"])
    blocked = tmp_path / "file"
    blocked.write_text("x")
    monkeypatch.setenv("NPUEVAL_CACHE_DIR", str(blocked / "sub"))  # cannot be made
    assert tokenizer._load_or_build_tables()["kind"][ord(" ")] == tokenizer.SPACE
