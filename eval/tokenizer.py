"""GPT2-Chinese's classic BERT tokenizer, token for token, on the Rust `tokenizers` library.

The classic algorithm (port-protocol.md step 6, plus GPT2-Chinese's one change: characters
for which `str.isdigit()` holds are isolated like CJK characters) is defined by Python's
`unicodedata` and `str.lower()`. The stock `BertWordPieceTokenizer` differs from it on some
text (digits, the final sigma, characters of newer Unicode versions), so this module builds
its own pipeline, with every character class taken from Python's tables:

- Python (C-speed `re` and `str` calls, once per text): remove control, format, unassigned
  and private-use characters (rare: only texts that have them take this path), then
  `str.lower()` every stretch between special tokens, as the classic does per segment.
- Rust, in parallel over a batch: special tokens matched on the raw text; NFD and removal of
  combining marks (Mn); split on whitespace; CJK, digit and punctuation characters isolated;
  greedy longest-match WordPiece with "##" continuations, [UNK] past 100 characters.

One corner of the classic is kept on purpose: a whitespace-delimited word that only becomes
a special token's spelling once control characters are removed ("[SE\\u200bP]") is neither
lower-cased nor kept whole: it is split as punctuation ("[", "SEP", "]"). Such words are
swapped for private-use sentinels (which cleaning guarantees the text cannot contain) and
expanded after encoding.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Sequence

import numpy as np

from .vocab import SPECIAL_TOKENS, Vocab

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


@functools.lru_cache(maxsize=1)
def _char_classes() -> dict[str, list[tuple[int, int]]]:
    """Code point ranges of the classic's character predicates, from Python's unicodedata."""
    removed, isolated, spaced, marks = [], [], [], []
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        cat = unicodedata.category(ch)
        if cp in (0, 0xFFFD) or (cat[0] == "C" and ch not in "\t\n\r"):
            removed.append(cp)
            continue
        if cat == "Mn":
            marks.append(cp)
        if any(lo <= cp <= hi for lo, hi in _CJK_RANGES) or ch.isdigit():
            spaced.append(cp)
            isolated.append(cp)
        elif (
            33 <= cp <= 47
            or 58 <= cp <= 64
            or 91 <= cp <= 96
            or 123 <= cp <= 126
            or cat[0] == "P"
        ):
            isolated.append(cp)
    return {
        "removed": _ranges(removed),  # dropped by cleaning
        "spaced": _ranges(spaced),  # CJK and digits: the classic puts spaces around them
        "isolated": _ranges(isolated),  # spaced, plus punctuation: each its own word
        "marks": _ranges(marks),  # Mn: removed after NFD
    }


def _ranges(cps: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for cp in cps:
        if out and out[-1][1] == cp - 1:
            out[-1] = (out[-1][0], cp)
        else:
            out.append((cp, cp))
    return out


def _python_class(ranges: list[tuple[int, int]]) -> str:
    def esc(cp: int) -> str:
        return f"\\U{cp:08x}"

    return "[" + "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges) + "]"


def _onig_class(ranges: list[tuple[int, int]]) -> str:
    def esc(cp: int) -> str:
        return f"\\x{{{cp:x}}}"

    return "[" + "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges) + "]"


class BertChineseTokenizer:
    """Encodes texts to ids exactly as GPT2-Chinese's BertTokenizer (transformers 2.5.1 base)."""

    def __init__(self, vocab: Vocab):
        from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers
        from tokenizers.models import WordPiece

        self.vocab = vocab
        classes = _char_classes()
        token_to_id = dict(vocab.token_to_id)
        unk = "[UNK]"

        def wordpiece_tokenizer(normalize: bool):
            tok = Tokenizer(
                WordPiece(token_to_id, unk_token=unk, max_input_chars_per_word=MAX_CHARS_PER_WORD)
            )
            if normalize:
                tok.normalizer = normalizers.Sequence(
                    [normalizers.NFD(), normalizers.Replace(Regex(_onig_class(classes["marks"])), "")]
                )
            tok.pre_tokenizer = pre_tokenizers.Sequence(
                [
                    pre_tokenizers.WhitespaceSplit(),
                    pre_tokenizers.Split(Regex(_onig_class(classes["isolated"])), behavior="isolated"),
                ]
            )
            return tok

        # A never-split word is punctuation-split but neither lower-cased nor accent-stripped.
        verbatim = wordpiece_tokenizer(normalize=False)
        self._never_split_ids = {
            s: np.asarray(verbatim.encode(s, add_special_tokens=False).ids, dtype=np.int32)
            for s in SPECIAL_TOKENS
        }
        self._sentinels = {s: chr(_SENTINEL_BASE + i) for i, s in enumerate(SPECIAL_TOKENS)}

        self._rust = wordpiece_tokenizer(normalize=True)
        self._rust.add_special_tokens(
            [AddedToken(s, normalized=False) for s in (*SPECIAL_TOKENS, *self._sentinels.values())]
        )
        # Ids the Rust side gives that the vocab does not have: a special token missing from
        # vocab.txt (the classic maps it to [UNK]) and the sentinels (expanded after encoding).
        self._extra_ids: dict[int, np.ndarray] = {}
        for s in SPECIAL_TOKENS:
            rid = self._rust.token_to_id(s)
            if s not in token_to_id:
                self._extra_ids[rid] = np.asarray([vocab.unk_id], dtype=np.int32)
        for s, sentinel in self._sentinels.items():
            self._extra_ids[self._rust.token_to_id(sentinel)] = self._never_split_ids[s]
        self._first_extra_id = min(self._extra_ids)

        self._special_split = re.compile("(" + "|".join(re.escape(s) for s in SPECIAL_TOKENS) + ")")
        self._removed = re.compile(_python_class(classes["removed"]))
        # A special token's spelling that stands as a word of its own once cleaned: preceded
        # and followed by the text's edge, whitespace or a spaced (CJK or digit) character.
        edge = "\\s" + _python_class(classes["spaced"])[1:-1]
        self._never_split = re.compile(
            f"(?<![^{edge}])(" + "|".join(re.escape(s) for s in SPECIAL_TOKENS) + f")(?![^{edge}])"
        )

    # ------------------------------------------------------------------------------------
    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids (int32) of each text; the Rust part runs on all cores."""
        prepared = [self._prepare(t) for t in texts]
        encodings = self._rust.encode_batch_fast(prepared, add_special_tokens=False)
        out = []
        for enc in encodings:
            ids = np.asarray(enc.ids, dtype=np.int32)
            if ids.size and ids.max() >= self._first_extra_id:
                ids = self._expand_extra(ids)
            out.append(ids)
        return out

    def encode(self, text: str) -> np.ndarray:
        return self.encode_batch([text])[0]

    def _prepare(self, text: str) -> str:
        """Clean (if needed) and lower-case each stretch between special tokens."""
        parts = self._special_split.split(text)
        dirty = self._removed.search(text) is not None
        for i in range(0, len(parts), 2):
            segment = parts[i]
            if dirty:
                segment = self._removed.sub("", segment)
                segment = self._never_split.sub(lambda m: self._sentinels[m.group(1)], segment)
            parts[i] = segment.lower()
        return "".join(parts)

    def _expand_extra(self, ids: np.ndarray) -> np.ndarray:
        pieces = []
        start = 0
        for pos in np.flatnonzero(ids >= self._first_extra_id):
            pieces.append(ids[start:pos])
            pieces.append(self._extra_ids[int(ids[pos])])
            start = pos + 1
        pieces.append(ids[start:])
        return np.concatenate(pieces)
