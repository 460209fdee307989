"""Texts → one framed token stream, in a tokenizing worker.

`ClassicFramer` is the port's protocol (docs/design.md, steps 3, 6, 7): "\\n" becomes [SEP], the
classic tokenizer, and each article [MASK] ids [CLS]. `JsonFramer` runs a tokenizer.json through
the `tokenizers` library and frames each document as BOS ids EOS (where the tokenizer defines
them); it also gives the UTF-8 bytes of the text each id covers, so that a run can report bits
per byte: ids whose character offsets overlap (byte-level BPE splits a character) share its bytes
with the first of them, bytes no id covers (spaces a tokenizer trims from its offsets) go to the
next id, and a document's trailing ones to its EOS (or last id). Every byte of a document is
counted once, on one of its ids.

A long document goes through the tokenizer in pieces, cut where the ids and offsets are provably
those of the whole (cuts.py), so that its memory stays that of a small call; one that cannot be
cut is tokenized whole, after a warning that says what it needs.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from .cuts import cuts_for
from .model_tokenizer import ModelTokenizer

_SURROGATE = re.compile("[\ud800-\udfff]")
_WORD_GAP = re.compile(r"\s+")
#: A text is cut into pieces of at least this many characters where it can be (cuts.py) …
PIECE_CHARS = 1 << 14
#: … and texts and pieces go through the tokenizer in calls of about this many.
CALL_CHARS = 1 << 16
#: What tokenizing a text whole holds at its peak, per character: measured 220 to 400 with 32,000-token
#: byte-level and SentencePiece-style BPE on ASCII and Chinese text with nowhere to cut (about 360
#: a token; more where a character takes several tokens, as Chinese through a tiny vocabulary).
BYTES_PER_CHAR = 400
#: A piece longer than this (about 0.8 GiB to tokenize) is warned about.
LONG_CHARS = 1 << 21
WarnFn = Callable[[int, str], None]  # (index of the text, what to say about it)


class ClassicFramer:
    def __init__(self, tokenizer: ModelTokenizer):
        from npueval.core.vocab import load_vocab

        from .tokenizer import BertChineseTokenizer

        self._tokenizer = BertChineseTokenizer(load_vocab(tokenizer.file.path, flag=None))

    @staticmethod
    def clean(text: str) -> tuple[str | None, str | None]:
        return text.replace("\n", " [SEP] "), None

    def frame(self, texts: Sequence[str], warn: WarnFn | None = None) -> tuple[np.ndarray, np.ndarray, None]:
        ids, bounds = self._tokenizer.encode_batch_flat(texts)
        vocab = self._tokenizer.vocab
        framed, framed_bounds = frame_ids(ids, bounds, vocab.mask_id, vocab.cls_id)
        return framed, framed_bounds, None


def lm_eval_words(text: str) -> int:
    """A document's words as lm-evaluation-harness counts them for word_perplexity
    (lm_eval/api/task.py, count_words): the pieces between runs of whitespace, so an empty text
    is one word and a trailing space adds one."""
    return len(_WORD_GAP.split(text))


def _whole(tokenizer):
    """The tokenizer with any truncation or padding its file was saved with turned off: a
    tokenizer.json saved with truncation to 512 would silently cut every document there, and
    lm-evaluation-harness encodes documents whole too."""
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


class JsonFramer:
    def __init__(self, tokenizer: ModelTokenizer):
        from tokenizers import Tokenizer

        self._tokenizer = _whole(Tokenizer.from_file(str(tokenizer.file.path)))
        self.bos_id, self.eos_id = tokenizer.bos_id, tokenizer.eos_id
        self._framing = tokenizer
        self._cuts = cuts_for(tokenizer.file.path.read_text(encoding="utf-8"))
        self._continuation = (_whole(Tokenizer.from_str(self._cuts.continuation))
                              if self._cuts.continuation is not None else self._tokenizer)

    @staticmethod
    def clean(text: str) -> tuple[str | None, str | None]:
        """A text that the tokenizer can take: one with a lone surrogate (a JSON "\\ud800" escape)
        is no Unicode text and is a bad line."""
        found = _SURROGATE.search(text)
        if found:
            return None, f"a lone surrogate \\u{ord(found.group()):04x} at character {found.start()}, which is not text"
        return text, None

    def frame(self, texts: Sequence[str], warn: WarnFn | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(framed ids int32, bounds int64 of each text's frame, UTF-8 bytes int32 of each id).

        The texts go through the tokenizer in calls of about CALL_CHARS characters, a long one in
        pieces (cuts.py), each call's ids and bytes kept as numpy arrays: what tokenizing holds
        at once is bounded but for a text that cannot be cut, which WARN is told about first."""
        n = len(texts)
        counts = np.zeros(n, dtype=np.int64)
        # Byte positions in the stream of all the texts: where each starts (and the end), the
        # furthest byte each one's tokens reach.
        text_start = np.zeros(n + 1, dtype=np.int64)
        reached = np.zeros(n, dtype=np.int64)
        seen = np.zeros(n, dtype=bool)  # a token of the text has come
        ids_parts, bytes_parts = [], []
        stream = covered = 0  # bytes of the pieces done; the furthest byte their tokens reach
        for call in self._calls(texts, warn):
            which = np.fromiter((i for i, _, _ in call), dtype=np.int64, count=len(call))
            pieces = [piece for _, piece, _ in call]
            encodings = self._encode(call)
            count = np.fromiter(map(len, encodings), dtype=np.int64, count=len(call))
            total = int(count.sum())
            chain = itertools.chain.from_iterable
            ids_parts.append(np.fromiter(chain(e.ids for e in encodings), dtype=np.int32, count=total))
            char_ends = np.fromiter(chain(chain(e.offsets for e in encodings)), dtype=np.int64,
                                    count=2 * total)[1::2]
            del encodings
            chars = np.zeros(len(call) + 1, dtype=np.int64)
            np.cumsum(np.fromiter(map(len, pieces), dtype=np.int64, count=len(call)), out=chars[1:])
            byte_at = stream + _utf8_offsets("".join(pieces))  # of each character of the call, and its end
            first_piece = np.fromiter((first for _, _, first in call), dtype=bool, count=len(call))
            text_start[which[first_piece]] = byte_at[chars[:-1][first_piece]]
            # Each token's end, and the furthest any has reached: a piece's tokens end at or after its
            # start, past every byte earlier pieces cover, so one running maximum serves the call.
            ends = byte_at[chars[np.repeat(np.arange(len(call)), count)] + char_ends]
            reach = np.maximum.accumulate(ends) if total else ends
            before = np.empty_like(reach)
            before[:1] = covered
            before[1:] = reach[:-1]
            first_token = np.cumsum(count) - count
            with_tokens = np.flatnonzero(count > 0)
            text_of = which[with_tokens]
            opens = with_tokens[np.flatnonzero(np.diff(text_of, prepend=-1))]  # each text's first piece here
            opens = opens[~seen[which[opens]]]
            before[first_token[opens]] = text_start[which[opens]]  # a text's first token counts from its start
            seen[text_of] = True
            bytes_parts.append((reach - before).astype(np.int32))
            np.maximum.at(reached, text_of, reach[first_token[with_tokens] + count[with_tokens] - 1])
            np.add.at(counts, which, count)
            covered = int(reach[-1]) if total else covered
            stream = int(byte_at[-1])
        text_start[n] = stream
        ids = np.concatenate(ids_parts) if ids_parts else np.empty(0, dtype=np.int32)
        token_bytes = np.concatenate(bytes_parts) if bytes_parts else np.empty(0, dtype=np.int32)
        del ids_parts, bytes_parts
        bounds = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=bounds[1:])
        edges = self._edges(texts)
        framed, framed_bounds = insert_ids(ids, bounds, edges)
        del ids
        # The bytes, framed as the ids are: 0 for BOS and EOS, then each text's remainder onto its last slot.
        nbytes, _ = insert_ids(token_bytes, bounds, [(before, None if v is None else 0, m) for before, v, m in edges])
        del token_bytes
        has_slot = np.diff(framed_bounds) > 0
        remainder = text_start[1:] - np.maximum(reached, text_start[:-1])
        np.add.at(nbytes, framed_bounds[1:][has_slot] - 1, remainder[has_slot].astype(np.int32))
        return framed, framed_bounds, nbytes

    def _edges(self, texts: Sequence[str]) -> list[Edge]:
        """BOS and EOS around every text; in rolling mode also the ids the tokenizer's post-processor
        adds, but not to a text that begins with the prefix token's own text (lm-eval's tok_encode)."""
        edges: list[Edge] = [(True, self.bos_id, None)]
        t = self._framing
        if t.post_bos is not None or t.post_eos is not None:
            plain = t.plain_if_starts_with
            mask = None if plain is None else np.fromiter((not x.startswith(plain) for x in texts), dtype=bool,
                                                          count=len(texts))
            edges += [(True, t.post_bos, mask), (False, t.post_eos, mask)]
        return [*edges, (False, self.eos_id, None)]

    def _calls(self, texts: Sequence[str], warn: WarnFn | None) -> Iterator[list[tuple[int, str, bool]]]:
        """The texts' pieces (text index, piece, whether it is the text's first) in calls of about
        CALL_CHARS characters. A text whose longest piece needs much memory is told to WARN first."""
        call: list[tuple[int, str, bool]] = []
        size = 0
        for i, text in enumerate(texts):
            starts = self._cuts.starts(text, PIECE_CHARS)
            ends = [*starts[1:], len(text)]
            longest = max(range(len(starts)), key=lambda k: ends[k] - starts[k])
            if ends[longest] - starts[longest] > LONG_CHARS and warn is not None:  # once, for its longest piece
                warn(i, self._long_note(len(text), starts[longest], ends[longest]))
            for k, (a, b) in enumerate(zip(starts, ends)):
                if call and size + b - a > CALL_CHARS:
                    yield call
                    call, size = [], 0
                call.append((i, text if b - a == len(text) else text[a:b], k == 0))
                size += b - a
        if call:
            yield call

    def _encode(self, call: list[tuple[int, str, bool]]) -> list:
        if self._continuation is self._tokenizer:
            return self._tokenizer.encode_batch([piece for _, piece, _ in call], add_special_tokens=False)
        out = [None] * len(call)
        for tokenizer, first in ((self._tokenizer, True), (self._continuation, False)):
            where = [k for k, (_, _, is_first) in enumerate(call) if is_first == first]
            encoded = tokenizer.encode_batch([call[k][1] for k in where], add_special_tokens=False)
            for k, encoding in zip(where, encoded):
                out[k] = encoding
        return out

    def _long_note(self, chars: int, a: int, b: int) -> str:
        need = (b - a) * BYTES_PER_CHAR
        need = f"{need / 2**30:.1f} GiB" if need >= 2**30 else f"{need / 2**20:.1f} MiB"
        if self._cuts.at is None:
            what = f"a document of {chars:,} characters, tokenized whole since {self._cuts.places}"
        else:
            what = (f"a document of {chars:,} characters, of which {b - a:,} from character {a:,} are tokenized "
                    f"in one piece, with no place to cut them that keeps the ids ({self._cuts.places})")
        return (f"{what}: that needs about {need} of memory (some {BYTES_PER_CHAR} bytes a character); "
                "if this machine has less to spare, split the document into smaller ones (or pass fewer --workers)")


def _utf8_offsets(text: str) -> np.ndarray:
    """int64, one more than TEXT's characters: the UTF-8 bytes before each character, and in all."""
    out = np.zeros(len(text) + 1, dtype=np.int64)
    if text.isascii():
        out[1:] = np.arange(1, len(text) + 1)
        return out
    code_points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    width = (code_points >= 0x80).astype(np.uint8)
    width += code_points >= 0x800
    width += code_points >= 0x10000
    width += 1
    np.cumsum(width, out=out[1:])
    return out


def frame_ids(ids: np.ndarray, bounds: np.ndarray, before: int | None,
              after: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Put `before` ahead of and `after` behind each text's ids (None: nothing), end to end (int32)."""
    return insert_ids(ids, bounds, [(True, before, None), (False, after, None)])


#: An id put before (True) or after (False) each text, or None for none; where a mask (bool, one per
#: text) is given, only around the texts it marks.
Edge = tuple[bool, "int | None", "np.ndarray | None"]


def insert_ids(ids: np.ndarray, bounds: np.ndarray, edges: list[Edge]) -> tuple[np.ndarray, np.ndarray]:
    """The ids of the texts (text k is ids[bounds[k]:bounds[k + 1]]) with EDGES put around each,
    those before a text in the order given, end to end (int32), and the bounds of each framed text."""
    n = bounds.shape[0] - 1
    ids = ids.astype(np.int32, copy=False)
    at_parts, value_parts, key_parts = [], [], []
    for before, value, mask in edges:
        if value is None:
            continue
        texts = np.arange(n, dtype=np.int64) if mask is None else np.flatnonzero(mask)
        at_parts.append(bounds[texts] if before else bounds[texts + 1])
        value_parts.append(np.full(texts.shape[0], value, dtype=np.int32))
        # Text k's ids before it sort as 2k, after it as 2k + 1: where the end of one text and the start
        # of the next share an index, the first one's come first.
        key_parts.append(2 * texts if before else 2 * texts + 1)
    if not at_parts:
        return ids, bounds.copy()
    key = np.concatenate(key_parts)
    order = np.argsort(key, kind="stable")  # by text, then in the order of EDGES
    inserted = np.bincount(key // 2, minlength=n)
    framed_bounds = bounds.copy()
    framed_bounds[1:] += np.cumsum(inserted)
    return np.insert(ids, np.concatenate(at_parts)[order], np.concatenate(value_parts)[order]), framed_bounds
