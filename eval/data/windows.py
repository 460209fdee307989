"""Windows over a piece's token stream, built as the stream arrives (bounded memory).

Four modes (docs/design.md, "The data set"):

- ``seed``: the port's compare_loss.py loop. ``start = 0; while start < len(stream) - L:
  take stream[start:start + L]; start += S``. Every window is full and scores from
  position 1 (no context is carried over).
- ``sliding``: windows start at 0, s, 2s, …; the first scores positions 1…, every later one
  only the tokens the previous window did not reach (from local position L - s), so every
  token of the stream but its first is scored exactly once, with at least L - s tokens of
  context outside the first window. The last window may be short (padded).
- ``stride``: the windows of ``sliding``, over the stream of Hugging Face's perplexity guide (the
  documents joined by a blank line and tokenized as one text: joined.py); there the stride may be
  L, as in the guide, and each window's first token then goes unscored.
- ``rolling``: lm-evaluation-harness's ``loglikelihood_rolling`` (`RollingWindowMaker`), each
  document on its own.

Windows come out in blocks (arrays of rows of one piece), not one object per window: a
corpus has millions of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODES = ("seed", "sliding", "rolling", "stride")


@dataclass(frozen=True)
class Windows:
    """Consecutive windows of one piece, one row each."""

    piece: int
    ids: np.ndarray  # int32 (k, n_ctx), padded after n_valid
    n_valid: np.ndarray  # int64 (k,)
    score_from: np.ndarray  # int64 (k,): first scored position, >= 1
    doc_id: np.ndarray  # int64 (k,): the article of the first scored token
    scored_bytes: np.ndarray | None = None  # int64 (k,): UTF-8 bytes of the scored tokens, where known
    scored_words: np.ndarray | None = None  # int64 (k,): rolling mode: lm-eval's words of the documents begun here

    def __len__(self) -> int:
        return int(self.n_valid.shape[0])

    @property
    def scored(self) -> np.ndarray:
        return self.n_valid - self.score_from

    def take(self, rows) -> Windows:
        def optional(column):
            return None if column is None else column[rows]

        return Windows(self.piece, self.ids[rows], self.n_valid[rows], self.score_from[rows], self.doc_id[rows],
                       optional(self.scored_bytes), optional(self.scored_words))

    @staticmethod
    def concat(blocks: list[Windows]) -> Windows:
        def optional(name: str):
            return None if getattr(blocks[0], name) is None else np.concatenate([getattr(b, name) for b in blocks])

        return Windows(
            blocks[0].piece,
            np.concatenate([b.ids for b in blocks]),
            np.concatenate([b.n_valid for b in blocks]),
            np.concatenate([b.score_from for b in blocks]),
            np.concatenate([b.doc_id for b in blocks]),
            optional("scored_bytes"),
            optional("scored_words"),
        )


def window_maker(mode: str, n_ctx: int, stride: int, pad_id: int = 0) -> WindowMaker | RollingWindowMaker:
    if mode == "rolling":
        return RollingWindowMaker(n_ctx, pad_id)
    return WindowMaker("sliding" if mode == "stride" else mode, n_ctx, stride, pad_id)


class WindowMaker:
    """Feed a piece's stream in order with :meth:`add`; close the piece with :meth:`finish`."""

    def __init__(self, mode: str, n_ctx: int, stride: int, pad_id: int = 0):
        if mode not in ("seed", "sliding"):
            raise ValueError(f"mode must be seed or sliding, not {mode!r}")
        self.mode, self.n_ctx, self.stride, self.pad_id = mode, n_ctx, stride, pad_id
        self._reset(piece=-1)

    def _reset(self, piece: int) -> None:
        self.piece = piece
        self._ids = np.empty(0, dtype=np.int32)
        self._docs = np.empty(0, dtype=np.int64)
        self._bytes: np.ndarray | None = None  # int64 like _ids, where the stream carries them
        self._base = 0  # stream position of self._ids[0]
        self._next = 0  # stream position where the next window starts
        self._count = 0  # windows made in this piece

    @property
    def _end(self) -> int:
        return self._base + self._ids.shape[0]

    def add(self, piece: int, ids: np.ndarray, docs: np.ndarray, nbytes: np.ndarray | None = None,
            words: np.ndarray | None = None) -> list[Windows]:
        """Append framed ids of piece `piece`, with the article of each id (and the UTF-8 bytes
        it covers, where known; `words` are rolling mode's); returns the windows now complete."""
        out = []
        if piece != self.piece:
            out.extend(self.finish())
            self._reset(piece)
        self._ids = np.concatenate([self._ids, ids.astype(np.int32, copy=False)])
        self._docs = np.concatenate([self._docs, docs.astype(np.int64, copy=False)])
        if nbytes is not None:
            kept = self._bytes if self._bytes is not None else np.empty(0, dtype=np.int64)
            self._bytes = np.concatenate([kept, nbytes.astype(np.int64, copy=False)])
        # A full window is certain once the stream reaches past it (seed: by one token).
        need = self.n_ctx + (1 if self.mode == "seed" else 0)
        if self._end >= self._next + need:
            k = (self._end - need - self._next) // self.stride + 1
            out.append(self._full_windows(k))
        self._trim()
        return out

    def finish(self) -> list[Windows]:
        """Windows that only the end of the piece completes (sliding mode's short tail)."""
        out = []
        if self.mode == "sliding":
            while self._sliding_has_next():
                out.append(self._short_window())
        self._reset(self.piece)
        return out

    def _score_from(self, k: int) -> np.ndarray:
        """Of the next k windows of this piece."""
        # With stride = n_ctx (stride mode's guide allows it) a window's first token has no context, and is not scored.
        score_from = np.full(k, 1 if self.mode == "seed" else max(1, self.n_ctx - self.stride), dtype=np.int64)
        if self._count == 0:
            score_from[0] = 1
        return score_from

    def _full_windows(self, k: int) -> Windows:
        starts = self._next - self._base + self.stride * np.arange(k, dtype=np.int64)
        score_from = self._score_from(k)
        windows = Windows(
            piece=self.piece,
            # Rows of a strided view: a copy of k rows, with no (k, n_ctx) index array.
            ids=np.lib.stride_tricks.sliding_window_view(self._ids, self.n_ctx)[starts],
            n_valid=np.full(k, self.n_ctx, dtype=np.int64),
            score_from=score_from,
            doc_id=self._docs[starts + score_from],
            scored_bytes=self._scored_bytes(starts + score_from, starts + self.n_ctx),
        )
        self._count += k
        self._next += k * self.stride
        return windows

    def _sliding_has_next(self) -> bool:
        if self._count == 0:
            return self._end >= 2
        return self._next - self.stride + self.n_ctx < self._end

    def _short_window(self) -> Windows:
        lo = self._next - self._base
        n_valid = min(self.n_ctx, self._end - self._next)
        ids = np.full((1, self.n_ctx), self.pad_id, dtype=np.int32)
        ids[0, :n_valid] = self._ids[lo: lo + n_valid]
        score_from = self._score_from(1)
        # (With stride = n_ctx a last window of one token scores nothing: the guide's loss is NaN there.)
        doc = self._docs[min(lo + int(score_from[0]), lo + n_valid - 1)]
        windows = Windows(self.piece, ids, np.array([n_valid]), score_from, np.array([doc]),
                          self._scored_bytes(lo + score_from, np.array([lo + n_valid])))
        self._count += 1
        self._next += self.stride
        return windows

    def _scored_bytes(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
        """Σ bytes of buffered positions [lo, hi) per window, where the stream carries bytes."""
        return _sums(self._bytes, lo, hi)

    def _trim(self) -> None:
        drop = min(self._next, self._end) - self._base
        if drop > 0:
            self._ids = self._ids[drop:]
            self._docs = self._docs[drop:]
            if self._bytes is not None:
                self._bytes = self._bytes[drop:]
            self._base += drop


class RollingWindowMaker:
    """lm-evaluation-harness's rolling windows (lm_eval/utils.py get_rolling_token_windows with
    context_len 1, then make_disjoint_window), each document on its own, as rows of n_ctx = L ids.

    The stream of a document is its prefix token and its ids, D = [p, t0, t1, …] (m = len(D)).
    lm-eval at max_length M = L − 1 feeds a window's last M + 1 ids but one and scores the tokens
    its last logits predict, so each of its windows is one row of L ids here:
    - m ≤ L: one row, D itself, scoring t0 … (from position 1);
    - else K = 1 + ⌈(m − L) / M⌉ rows: row k < K − 1 is D[kM : kM + L], scoring positions 1 …
      L − 1 (its first id is the one token of context); the last row is D[m − L : m], full
      length, scoring only the tokens after the row before it (lm-eval takes its context from
      the document, not padding).
    An empty document is one row [p] that scores nothing: lm-eval counts its one word.

    `words` (one per id, the document's count on its prefix) are summed over a row's ids: the
    first row of a document holds them. Documents come whole or in consecutive runs (a long
    one across calls); rows that are certain not to be a document's last are made as soon as
    its ids reach past them, so memory stays one row's worth per document.
    """

    def __init__(self, n_ctx: int, pad_id: int = 0):
        self.n_ctx, self.step, self.pad_id = n_ctx, n_ctx - 1, pad_id
        self.piece = -1
        self._reset()

    def _reset(self) -> None:
        self._doc = -1  # the document whose ids are held (the last one given), -1: none
        self._ids = np.empty(0, dtype=np.int32)
        self._bytes: np.ndarray | None = None
        self._words: np.ndarray | None = None
        self._base = 0  # position in its document of self._ids[0]
        self._made = 0  # rows made of that document

    def add(self, piece: int, ids: np.ndarray, docs: np.ndarray, nbytes: np.ndarray | None = None,
            words: np.ndarray | None = None) -> list[Windows]:
        """Append framed ids (each document's prefix and ids), with the document of each id;
        returns the rows now certain."""
        out = self.finish() if piece != self.piece else []
        self.piece = piece
        if ids.shape[0]:
            out.append(self._advance(ids, docs, nbytes, words, last_complete=False))
        return [w for w in out if len(w)]

    def finish(self) -> list[Windows]:
        """The rows of the document held, now that it is complete."""
        if not self._ids.shape[0]:
            return []
        empty = np.empty(0, dtype=np.int64)
        rows = self._advance(empty, empty, None if self._bytes is None else empty,
                             None if self._words is None else empty, last_complete=True)
        return [rows] if len(rows) else []

    def _advance(self, ids, docs, nbytes, words, last_complete: bool) -> Windows:
        held = self._ids.shape[0]
        ids = np.concatenate([self._ids, ids.astype(np.int32, copy=False)])
        docs = np.concatenate([np.full(held, self._doc, dtype=np.int64), docs.astype(np.int64, copy=False)])
        nbytes, words = _joined(self._bytes, nbytes, held), _joined(self._words, words, held)
        starts = np.flatnonzero(np.diff(docs, prepend=docs[0] - 1))  # each document's run
        runs = starts.shape[0]
        base, made = np.zeros(runs, dtype=np.int64), np.zeros(runs, dtype=np.int64)
        if held:  # the held document goes on in the first run
            base[0], made[0] = self._base, self._made
        length = np.append(starts[1:], ids.shape[0]) - starts + base  # ids so far, in the document's positions
        L, M = self.n_ctx, self.step
        total = np.where(length <= L, 1, 1 + _ceil_div(length - L, M))  # rows of a complete document
        certain = np.where(length > L, _ceil_div(length - L, M), 0)  # rows that cannot be its last
        if not last_complete:
            total[-1] = certain[-1]
        count = total - made
        run = np.repeat(np.arange(runs), count)
        k = made[run] + np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        m, n_rows = length[run], total[run]
        is_last = (k == n_rows - 1) & np.append(np.ones(runs - 1, dtype=bool), last_complete)[run]
        tail = is_last & (n_rows > 1)  # a last row that reaches back into the document
        start = np.where(tail, m - L, k * M)
        n_valid = np.minimum(m, L)
        score_from = np.where(tail, L - (m - (L + (n_rows - 2) * M)), 1)
        at = starts[run] + start - base[run]  # in `ids`
        padded = np.concatenate([ids, np.full(L, self.pad_id, dtype=np.int32)])
        position = np.arange(L)
        rows = padded[at[:, None] + position]
        rows[position >= n_valid[:, None]] = self.pad_id
        made_rows = Windows(
            self.piece, rows, n_valid, score_from, docs[starts[run]],
            _sums(nbytes, at + score_from, at + n_valid), _sums(words, at, at + n_valid))
        # Keep the last document's ids from where its next rows can start: a middle row at
        # made·M or later, the last one at m − L or later.
        if last_complete:
            self._reset()
        else:
            keep = max(int(base[-1]), min(int(total[-1]) * M, int(length[-1]) - L))
            cut = int(starts[-1] + keep - base[-1])
            self._doc, self._base, self._made = int(docs[-1]), keep, int(total[-1])
            self._ids = ids[cut:]
            self._bytes = None if nbytes is None else nbytes[cut:]
            self._words = None if words is None else words[cut:]
        return made_rows


def _ceil_div(a: np.ndarray, b: int) -> np.ndarray:
    return -(-a // b)


def _joined(held: np.ndarray | None, new: np.ndarray | None, n_held: int) -> np.ndarray | None:
    if new is None:
        return None
    held = held if held is not None else np.zeros(n_held, dtype=np.int64)
    return np.concatenate([held.astype(np.int64, copy=False), new.astype(np.int64, copy=False)])


def _sums(values: np.ndarray | None, lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
    """Σ values[lo:hi] per row (int64), or None where the stream carries no such values."""
    if values is None:
        return None
    total = np.zeros(values.shape[0] + 1, dtype=np.int64)
    np.cumsum(values, out=total[1:])
    return total[np.minimum(hi, values.shape[0])] - total[np.minimum(lo, values.shape[0])]
