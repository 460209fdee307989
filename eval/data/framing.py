"""Texts → one framed token stream, in a tokenizing worker.

`ClassicFramer` is the port's protocol (docs/design.md, steps 3, 6, 7): "\\n" becomes [SEP], the
classic tokenizer, and each article [MASK] ids [CLS]. `JsonFramer` runs a tokenizer.json through
the `tokenizers` library and frames each document as BOS ids EOS (where the tokenizer defines
them); it also gives the UTF-8 bytes of the text each id covers, so that a run can report bits
per byte: ids whose character offsets overlap (byte-level BPE splits a character) share its bytes
with the first of them, bytes no id covers (spaces a tokenizer trims from its offsets) go to the
next id, and a document's trailing ones to its EOS (or last id). Every byte of a document is
counted once, on one of its ids.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import numpy as np

from .model_tokenizer import ModelTokenizer

_SURROGATE = re.compile("[\ud800-\udfff]")


class ClassicFramer:
    def __init__(self, tokenizer: ModelTokenizer):
        from npueval.core.vocab import load_vocab

        from .tokenizer import BertChineseTokenizer

        self._tokenizer = BertChineseTokenizer(load_vocab(tokenizer.file.path, flag=None))

    @staticmethod
    def clean(text: str) -> tuple[str | None, str | None]:
        return text.replace("\n", " [SEP] "), None

    def frame(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        ids, bounds = self._tokenizer.encode_batch_flat(texts)
        vocab = self._tokenizer.vocab
        framed, framed_bounds = frame_ids(ids, bounds, vocab.mask_id, vocab.cls_id)
        return framed, framed_bounds, None


class JsonFramer:
    def __init__(self, tokenizer: ModelTokenizer):
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(tokenizer.file.path))
        self.bos_id, self.eos_id = tokenizer.bos_id, tokenizer.eos_id

    @staticmethod
    def clean(text: str) -> tuple[str | None, str | None]:
        """A text that the tokenizer can take: one with a lone surrogate (a JSON "\\ud800" escape)
        is no Unicode text and is a bad line."""
        found = _SURROGATE.search(text)
        if found:
            return None, f"a lone surrogate \\u{ord(found.group()):04x} at character {found.start()}, which is not text"
        return text, None

    def frame(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(framed ids int32, bounds int64 of each text's frame, UTF-8 bytes int32 of each id)."""
        n = len(texts)
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        counts = np.fromiter(map(len, encodings), dtype=np.int64, count=n)
        total = int(counts.sum())
        chain = itertools.chain.from_iterable
        ids = np.fromiter(chain(e.ids for e in encodings), dtype=np.int64, count=total)
        offsets = np.fromiter(chain(chain(e.offsets for e in encodings)), dtype=np.int64, count=2 * total)
        token_bytes, text_bytes = _covered_bytes(texts, counts, offsets.reshape(total, 2)[:, 1])
        bounds = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=bounds[1:])
        framed, framed_bounds = frame_ids(ids, bounds, self.bos_id, self.eos_id)
        # The bytes, framed as the ids are: 0 for BOS and EOS, then each text's remainder onto its last slot.
        nbytes, _ = frame_ids(token_bytes, bounds, 0 if self.bos_id is not None else None,
                              0 if self.eos_id is not None else None)
        nbytes = nbytes.astype(np.int64)
        length = np.diff(framed_bounds)
        has_slot = length > 0
        last = framed_bounds[1:][has_slot] - 1
        covered = np.bincount(np.repeat(np.arange(n), counts), weights=token_bytes, minlength=n).astype(np.int64)
        np.add.at(nbytes, last, (text_bytes - covered)[has_slot])
        return framed, framed_bounds, nbytes.astype(np.int32)


def _covered_bytes(texts: Sequence[str], counts: np.ndarray, char_ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bytes each token newly covers, UTF-8 bytes of each text), from the tokens' character ends."""
    n = len(texts)
    chars = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=n), out=chars[1:])
    code_points = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32)
    width = 1 + (code_points >= 0x80).astype(np.int64) + (code_points >= 0x800) + (code_points >= 0x10000)
    byte_at = np.zeros(code_points.shape[0] + 1, dtype=np.int64)  # of each character of the joined texts
    np.cumsum(width, out=byte_at[1:])
    text_start = byte_at[chars]  # n + 1: each text's first byte, and the end
    doc = np.repeat(np.arange(n), counts)
    ends = np.maximum(byte_at[chars[doc] + char_ends], text_start[doc])
    # Positions in the joined texts: an earlier text's never pass a later one's start, so one
    # running maximum serves them all, each text's first token counting from its own start.
    covered = np.maximum.accumulate(ends) if ends.size else ends
    before = np.empty_like(covered)
    before[1:] = covered[:-1]
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    first = starts[:-1][counts > 0]
    before[first] = text_start[:-1][counts > 0]
    return (covered - before), np.diff(text_start)


def frame_ids(ids: np.ndarray, bounds: np.ndarray, before: int | None,
              after: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Put `before` ahead of and `after` behind each text's ids (None: nothing), end to end."""
    n = bounds.shape[0] - 1
    k = np.arange(n, dtype=np.int64)
    extra = (before is not None) + (after is not None)
    out = np.empty(ids.shape[0] + extra * n, dtype=np.int32)
    if before is not None:
        out[bounds[:-1] + extra * k] = before
    if after is not None:
        out[bounds[1:] + extra * k + extra - 1] = after
    out[np.arange(ids.shape[0]) + extra * np.repeat(k, np.diff(bounds)) + (before is not None)] = ids
    return out, bounds + extra * np.arange(n + 1, dtype=np.int64)
