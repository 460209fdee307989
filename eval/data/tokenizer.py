"""GPT2-Chinese's classic BERT tokenizer, token for token, on the Rust `tokenizers` library.

The classic algorithm (docs/design.md, "The port's protocol" step 6, plus GPT2-Chinese's one change: characters
for which `str.isdigit()` holds are isolated like CJK characters) is defined by Python's
`unicodedata` and `str.lower()`. The stock `BertWordPieceTokenizer` differs from it on some
text (digits, the final sigma, characters of newer Unicode versions), so this module builds
its own pipeline, with every character class taken from Python's tables:

- Python (C-speed `re` and `str` calls, once per text): cut out special tokens and
  `str.lower()` every stretch between them, as the classic does per segment.
- numpy, over a whole batch at once: every code point is looked up in tables made from
  Python's `unicodedata` (whitespace, a character that is a token of its own with a known id,
  a word character). CJK text, nearly all of Chinese Wikipedia, is done right there.
- Rust (`tokenizers`), for the rest: each distinct word (a run of word characters, e.g.
  "beijing") goes once through NFD, removal of combining marks (Mn), punctuation split and
  greedy longest-match WordPiece with "##" continuations ([UNK] past 100 characters); the
  result is cached.
- Texts with characters that cleaning removes (control, format, unassigned, private-use,
  U+0000, U+FFFD: common in Wikipedia as direction marks, zero-width spaces, soft hyphens) are
  found in that numpy pass, cleaned in Python (one regex substitution per segment between special
  tokens, before lower-casing, as the classic cleans before it lower-cases: "ΑΣ\\x01Α" has a final
  sigma, "ΑΣΑ" not) and classified again: they stay on the fast path. No text needs a slower one:
  nothing that cleaning keeps lower-cases into something it removes (a test checks every code
  point), so cleaned text is text the fast path takes.

One corner of the classic is kept on purpose: a whitespace-delimited word that only becomes
a special token's spelling once control characters are removed ("[SE\\u200bP]") is neither
lower-cased nor kept whole: it is split as punctuation ("[", "SEP", "]"). Cleaning swaps such
words for private-use sentinels (which it guarantees the text cannot otherwise contain), each a
unit of its own whose ids are that split.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import re
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from npueval.core.cache import cache_root
from npueval.core.files import atomic_write_with
from npueval.core.vocab import SPECIAL_TOKENS, Vocab

log = logging.getLogger(__name__)

MAX_CHARS_PER_WORD = 100
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
#: Private-use code points standing for never-split words; cleaning removes every Co
#: character, so cleaned text cannot contain them.
_SENTINEL_BASE = 0xE000
#: Private-use code points standing for special tokens on the numpy path.
_PLACEHOLDER_BASE = 0xF000
#: Distinct words kept with their ids; Chinese Wikipedia has far fewer Latin-script words.
_WORD_CACHE_SIZE = 1 << 18


# What a code point of lower-cased, uncleaned text is to the classic tokenizer.
SPACE, SINGLE, WORD, SOLO, REMOVED, SPECIAL = range(6)


#: Bump when the tables' meaning changes: the cache file name carries it.
_TABLES_VERSION = 2  # 2: stored uncompressed (8 MB, read in a few ms)


@functools.lru_cache(maxsize=1)
def _char_classes() -> dict:
    """The classic's character predicates: code point tables and, for regexes, ranges."""
    return _load_or_build_tables()


@functools.cache
def _class_ranges(name: str) -> list[tuple[int, int]]:
    """Code point ranges of one character class, for a regex (built when first needed)."""
    tables = _char_classes()
    kind = tables["kind"]
    masks = {
        "spaced": lambda: tables["spaced"],  # CJK and digits: the classic puts spaces around them
        "isolated": lambda: (kind == SINGLE) | (kind == SOLO),  # spaced and punctuation: a word each
        "marks": lambda: tables["marks"],  # Mn: removed after NFD
    }
    return _ranges(masks[name]())


def warm_tables() -> None:
    """Build (or load) the code point tables now, and keep them for other processes."""
    _char_classes()


def tables_cache_path() -> Path:
    """Where the code point tables are kept: they depend only on Python's Unicode version.

    Building them takes about a second (every code point through unicodedata); loading
    them, a few milliseconds (uncompressed: decompressing took 30 ms of every start). They live in
    npueval's cache folder (core/cache.py).
    """
    name = f"codepoints-unicode{unicodedata.unidata_version}-max{sys.maxunicode:x}-v{_TABLES_VERSION}.npz"
    return cache_root() / name


def _load_or_build_tables() -> dict[str, np.ndarray]:
    path = tables_cache_path()
    try:
        with np.load(path) as data:
            tables = {k: data[k] for k in ("kind", "single_char", "spaced", "marks")}
        if all(t.shape == (sys.maxunicode + 1,) for t in tables.values()):
            return tables
        log.debug("code point tables in %s have the wrong shape; rebuilding", path)
    except (OSError, KeyError, ValueError) as exc:
        log.debug("no usable code point tables at %s (%s); building them", path, exc)
    tables = _build_tables()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Each worker process of a first `prepare` may build them: a temporary of its own.
        atomic_write_with(path, lambda tmp: _save_tables(tmp, tables),
                          path.with_name(f".{path.name}.{os.getpid()}.tmp"))
    except OSError as exc:  # a read-only home only costs the next run a second
        log.debug("could not keep code point tables in %s: %s", path, exc)
    return tables


def _save_tables(path: Path, tables: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would add .npz to a path
        np.savez(f, **tables)


def _build_tables() -> dict[str, np.ndarray]:
    """Per code point, from Python's unicodedata: `kind` (SPACE; SINGLE, a token of its own
    whose text after NFD and mark removal is the one character `single_char`; SOLO, a token
    of its own that needs the word path; WORD; REMOVED), and the `spaced` (CJK or digit) and
    `marks` (Mn) masks."""
    n = sys.maxunicode + 1
    cats = [unicodedata.category(chr(cp)) for cp in range(n)]
    cat_names = sorted(set(cats))
    cat = np.fromiter(map({c: i for i, c in enumerate(cat_names)}.__getitem__, cats), dtype=np.uint8, count=n)
    del cats

    def in_cats(predicate) -> np.ndarray:
        return np.isin(cat, [i for i, c in enumerate(cat_names) if predicate(c)])

    cps = np.arange(n)
    tab_nl_cr = np.isin(cps, [9, 10, 13])
    removed = np.isin(cps, [0, 0xFFFD]) | (in_cats(lambda c: c[0] == "C") & ~tab_nl_cr)
    space = (np.fromiter(map(str.isspace, map(chr, range(n))), dtype=bool, count=n) | in_cats(lambda c: c == "Zs"))
    digit = np.fromiter(map(str.isdigit, map(chr, range(n))), dtype=bool, count=n)
    cjk = np.zeros(n, dtype=bool)
    for lo, hi in _CJK_RANGES:
        cjk[lo: hi + 1] = True
    spaced = (cjk | digit) & ~removed
    ascii_punct = ((cps >= 33) & (cps <= 47)) | ((cps >= 58) & (cps <= 64)) | ((cps >= 91) & (cps <= 96)) | (
        (cps >= 123) & (cps <= 126)
    )
    isolated = (spaced | ascii_punct | in_cats(lambda c: c[0] == "P")) & ~removed
    marks = in_cats(lambda c: c == "Mn")

    kind = np.full(n, WORD, dtype=np.uint8)
    kind[space & ~removed] = SPACE
    kind[removed] = REMOVED
    single_char = np.full(n, -1, dtype=np.int32)
    for cp in np.flatnonzero(isolated).tolist():
        ch = chr(cp)
        stripped = "".join(c for c in unicodedata.normalize("NFD", ch) if unicodedata.category(c) != "Mn")
        if ch.lower() == ch and len(stripped) == 1:
            kind[cp], single_char[cp] = SINGLE, ord(stripped)
        else:
            kind[cp] = SOLO
    return {"kind": kind, "single_char": single_char, "spaced": spaced, "marks": marks}


def _ranges(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (first, last) code point ranges where `mask` holds."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist()))


def _char_class(ranges: list[tuple[int, int]], escape) -> str:
    return "[" + "".join(escape(a) if a == b else f"{escape(a)}-{escape(b)}" for a, b in ranges) + "]"


def _python_class(ranges: list[tuple[int, int]]) -> str:
    """A character class for Python's `re`."""
    return _char_class(ranges, lambda cp: f"\\U{cp:08x}")


def _onig_class(ranges: list[tuple[int, int]]) -> str:
    """A character class for the Oniguruma regexes of `tokenizers`."""
    return _char_class(ranges, lambda cp: f"\\x{{{cp:x}}}")


class BertChineseTokenizer:
    """Encodes texts to ids exactly as GPT2-Chinese's BertTokenizer (transformers 2.5.1 base)."""

    def __init__(self, vocab: Vocab):
        from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
        from tokenizers.models import WordPiece

        self.vocab = vocab
        classes = _char_classes()
        token_to_id = dict(vocab.token_to_id)
        unk = "[UNK]"

        self._rust = Tokenizer(WordPiece(token_to_id, unk_token=unk, max_input_chars_per_word=MAX_CHARS_PER_WORD))
        self._rust.normalizer = normalizers.Sequence(
            [normalizers.NFD(), normalizers.Replace(Regex(_onig_class(_class_ranges("marks"))), "")]
        )
        self._rust.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.WhitespaceSplit(),
                pre_tokenizers.Split(Regex(_onig_class(_class_ranges("isolated"))), behavior="isolated"),
            ]
        )
        # A never-split word is punctuation-split but neither lower-cased nor accent-stripped.
        # The special tokens are plain ASCII, which NFD and mark removal leave as they are, so
        # the tokenizer gives their verbatim pieces before it learns them as added tokens.
        self._never_split_ids = {
            s: np.asarray(self._rust.encode(s, add_special_tokens=False).ids, dtype=np.int32)
            for s in SPECIAL_TOKENS
        }
        self._sentinels = {s: chr(_SENTINEL_BASE + i) for i, s in enumerate(SPECIAL_TOKENS)}
        # A sentinel is a unit of its own (SOLO, below) whose ids are its special token's verbatim pieces.
        self._fixed_words = {self._sentinels[s]: ids.tolist() for s, ids in self._never_split_ids.items()}

        self._special_split = re.compile("(" + "|".join(re.escape(s) for s in SPECIAL_TOKENS) + ")")

        # The numpy path: per code point, what it is and (for SINGLE) its id. Special tokens
        # stand in the lower-cased text as private-use placeholders of kind SPECIAL; a text that
        # already had such a code point has the wrong count of them, and is cleaned (which removes it).
        self._kind = classes["kind"].copy()
        char_id = np.full(self._kind.shape[0], vocab.unk_id, dtype=np.int32)  # one-character tokens
        for token, token_id in token_to_id.items():
            if len(token) == 1:
                char_id[ord(token)] = token_id
        singles = np.flatnonzero(self._kind == SINGLE)
        self._single_id = np.full(self._kind.shape[0], vocab.unk_id, dtype=np.int32)
        self._single_id[singles] = char_id[classes["single_char"][singles]]
        self._placeholders = {}
        for i, s in enumerate(SPECIAL_TOKENS):
            cp = _PLACEHOLDER_BASE + i
            self._placeholders[s] = chr(cp)
            self._kind[cp] = SPECIAL
            self._single_id[cp] = token_to_id.get(s, vocab.unk_id)
        # In raw text a sentinel is a private-use character (REMOVED: the text is cleaned); in cleaned
        # text it is one of ours. Cleaning itself goes by the classic's own table.
        self._raw_kind = classes["kind"]
        self._kind_cleaned = self._kind.copy()
        for sentinel in self._fixed_words:
            self._kind_cleaned[ord(sentinel)] = SOLO
        self._word_ids: dict[str, list[int]] = dict(self._fixed_words)

    # ------------------------------------------------------------------------------------
    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids (int32) of each text."""
        ids, bounds = self.encode_batch_flat(texts)
        return [ids[bounds[i]: bounds[i + 1]] for i in range(len(texts))]

    def encode_batch_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """All texts' ids (int32) end to end, and bounds (int64, len(texts) + 1): text i's
        ids are ids[bounds[i]:bounds[i + 1]]."""
        if not texts:
            return np.empty(0, dtype=np.int32), np.zeros(1, dtype=np.int64)
        lowered = list(map(self._lower, texts))
        batch = self._classify(lowered, self._kind)
        dirty = self._dirty(*batch[2:], lowered)
        if dirty.size:  # clean those texts and classify the batch again
            for i in dirty.tolist():
                lowered[i] = self._lower(texts[i], clean=True)
            batch = self._classify(lowered, self._kind_cleaned)
            if self._dirty(*batch[2:], lowered).size:
                raise RuntimeError("the tokenizer's cleaning left a character it removes; please report the text")
        return self._encode_clean(*batch)

    @staticmethod
    def _classify(lowered: list[tuple[str, int]], table: np.ndarray) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
        """The batch as one string (every text followed by a space), its code points, what each is
        to the classic (by `table`), and where each text starts."""
        bounds = np.zeros(len(lowered) + 1, dtype=np.int64)
        np.cumsum([len(t) + 1 for t, _ in lowered], out=bounds[1:])
        big = " ".join(t for t, _ in lowered) + " "
        cps = np.frombuffer(big.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        return big, cps, table[cps], bounds

    @staticmethod
    def _dirty(kind: np.ndarray, bounds: np.ndarray, lowered: list[tuple[str, int]]) -> np.ndarray:
        """The texts holding a character cleaning removes (a private-use code point among them, which
        also makes the count of special-token placeholders wrong)."""

        def text_of(positions: np.ndarray) -> np.ndarray:
            return np.searchsorted(bounds, positions, side="right") - 1

        dirty = np.zeros(len(lowered), dtype=bool)
        dirty[text_of(np.flatnonzero(kind == REMOVED))] = True
        placeholders = np.bincount(text_of(np.flatnonzero(kind == SPECIAL)), minlength=len(lowered))
        dirty |= placeholders != np.fromiter((n for _, n in lowered), dtype=np.int64, count=len(lowered))
        return np.flatnonzero(dirty)

    def encode(self, text: str) -> np.ndarray:
        return self.encode_batch([text])[0]

    def _lower(self, text: str, clean: bool = False) -> tuple[str, int]:
        """Lower-case the stretches between special tokens, cleaned first with `clean`; specials
        become placeholders. (text, number of placeholders)."""
        parts = self._special_split.split(text)
        if clean:
            parts = self._cleaned(text, parts)
        for i in range(0, len(parts), 2):
            parts[i] = parts[i].lower()
        for i in range(1, len(parts), 2):
            parts[i] = self._placeholders[parts[i]]
        return "".join(parts), len(parts) // 2

    def _cleaned(self, text: str, parts: list[str]) -> list[str]:
        """PARTS (TEXT split at its special tokens) without the characters cleaning removes, a
        never-split word in each stretch swapped for its sentinel. The removal is one numpy pass
        over the whole text (a regex of every removed code point is some 2 MB/s); special tokens
        are ASCII and lose nothing, so each part's end moves by what was removed before it."""
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        keep = self._raw_kind[cps] != REMOVED
        cleaned = cps[keep].tobytes().decode("utf-32-le", "surrogatepass")
        kept_before = np.zeros(cps.shape[0] + 1, dtype=np.int64)
        np.cumsum(keep, out=kept_before[1:])
        ends = kept_before[np.cumsum(np.fromiter(map(len, parts), dtype=np.int64, count=len(parts)))].tolist()
        out = [cleaned[a:b] for a, b in zip([0, *ends[:-1]], ends)]
        for i in range(0, len(out), 2):
            if "[" in out[i]:  # every special token's spelling starts with one
                out[i] = self._never_split.sub(lambda m: self._sentinels[m.group(1)], out[i])
        return out

    def _encode_clean(self, big: str, cps: np.ndarray, kind: np.ndarray, bounds: np.ndarray):
        """Ids of the whole batch, and where each text's ids start and end in them.

        Units are the tokens-to-be in text order: a SINGLE or SPECIAL code point (one id
        from the table), a SOLO code point, or a run of WORD code points (ids from Rust).
        """
        is_single = (kind == SINGLE) | (kind == SPECIAL)
        is_word = kind == WORD
        word_start = is_word.copy()
        word_start[1:] &= ~is_word[:-1]
        word_last = is_word.copy()
        word_last[:-1] &= ~is_word[1:]
        is_solo = kind == SOLO
        unit_pos = np.flatnonzero(is_single | word_start | is_solo)
        complex_pos = np.flatnonzero(word_start | is_solo)

        complex_end = complex_pos + 1
        starts_word = is_word[complex_pos]
        complex_end[starts_word] = np.flatnonzero(word_last) + 1
        words = [big[a:b] for a, b in zip(complex_pos.tolist(), complex_end.tolist())]
        word_ids = self._lookup_words(words)

        unit_len = np.ones(unit_pos.shape[0], dtype=np.int64)
        complex_idx = np.searchsorted(unit_pos, complex_pos)
        lens = np.fromiter(map(len, word_ids), dtype=np.int64, count=len(word_ids))
        unit_len[complex_idx] = lens
        unit_end = np.cumsum(unit_len)
        unit_off = unit_end - unit_len
        total = int(unit_end[-1]) if unit_end.size else 0

        ids = np.empty(total, dtype=np.int32)
        single_idx = np.flatnonzero(is_single[unit_pos])
        ids[unit_off[single_idx]] = self._single_id[cps[unit_pos[single_idx]]]
        n_word_ids = int(lens.sum())
        if n_word_ids:
            flat = np.fromiter(itertools.chain.from_iterable(word_ids), dtype=np.int32, count=n_word_ids)
            shift = np.repeat(unit_off[complex_idx] - (np.cumsum(lens) - lens), lens)
            ids[shift + np.arange(n_word_ids)] = flat
        token_bounds = np.concatenate([[0], unit_end])[np.searchsorted(unit_pos, bounds)]
        return ids, token_bounds

    def _lookup_words(self, words: list[str]) -> list[list[int]]:
        """Ids of each word; every distinct word goes through Rust once (cached)."""
        cache = self._word_ids
        missing = list({w for w in words if w not in cache})
        if missing:
            if len(cache) + len(missing) > _WORD_CACHE_SIZE:
                cache.clear()
                cache.update(self._fixed_words)
            for word, enc in zip(missing, self._rust.encode_batch_fast(missing, add_special_tokens=False)):
                cache[word] = enc.ids
        return [cache[w] for w in words]

    @functools.cached_property
    def _never_split(self) -> re.Pattern:
        """A special token's spelling that stands as a word of its own once cleaned: preceded
        and followed by the text's edge, whitespace or a spaced (CJK or digit) character."""
        edge = "\\s" + _python_class(_class_ranges("spaced"))[1:-1]
        alternatives = "|".join(re.escape(s) for s in SPECIAL_TOKENS)
        return re.compile(f"(?<![^{edge}])({alternatives})(?![^{edge}])")
