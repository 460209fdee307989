"""Windows over a piece's token stream, built as the stream arrives (bounded memory).

Two modes (docs/design.md, "The data set"):

- ``seed``: the port's compare_loss.py loop. ``start = 0; while start < len(stream) - L:
  take stream[start:start + L]; start += S``. Every window is full and scores from
  position 1 (no context is carried over).
- ``sliding``: windows start at 0, s, 2s, …; the first scores positions 1…, every later one
  only the tokens the previous window did not reach (from local position L - s), so every
  token of the stream but its first is scored exactly once, with at least L - s tokens of
  context outside the first window. The last window may be short (padded).

Windows come out in blocks (arrays of rows of one piece), not one object per window: a
corpus has millions of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODES = ("seed", "sliding")


@dataclass(frozen=True)
class Windows:
    """Consecutive windows of one piece, one row each."""

    piece: int
    ids: np.ndarray  # int32 (k, n_ctx), padded after n_valid
    n_valid: np.ndarray  # int64 (k,)
    score_from: np.ndarray  # int64 (k,): first scored position, >= 1
    doc_id: np.ndarray  # int64 (k,): the article of the first scored token
    scored_bytes: np.ndarray | None = None  # int64 (k,): UTF-8 bytes of the scored tokens, where known

    def __len__(self) -> int:
        return int(self.n_valid.shape[0])

    @property
    def scored(self) -> np.ndarray:
        return self.n_valid - self.score_from

    def take(self, rows) -> Windows:
        nbytes = None if self.scored_bytes is None else self.scored_bytes[rows]
        return Windows(self.piece, self.ids[rows], self.n_valid[rows], self.score_from[rows], self.doc_id[rows],
                       nbytes)

    @staticmethod
    def concat(blocks: list[Windows]) -> Windows:
        nbytes = None if blocks[0].scored_bytes is None else np.concatenate([b.scored_bytes for b in blocks])
        return Windows(
            blocks[0].piece,
            np.concatenate([b.ids for b in blocks]),
            np.concatenate([b.n_valid for b in blocks]),
            np.concatenate([b.score_from for b in blocks]),
            np.concatenate([b.doc_id for b in blocks]),
            nbytes,
        )


class WindowMaker:
    """Feed a piece's stream in order with :meth:`add`; close the piece with :meth:`finish`."""

    def __init__(self, mode: str, n_ctx: int, stride: int, pad_id: int = 0):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
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

    def add(self, piece: int, ids: np.ndarray, docs: np.ndarray, nbytes: np.ndarray | None = None) -> list[Windows]:
        """Append framed ids of piece `piece`, with the article of each id (and the UTF-8 bytes
        it covers, where known); returns the windows now complete."""
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
        score_from = np.full(k, 1 if self.mode == "seed" else self.n_ctx - self.stride, dtype=np.int64)
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
        windows = Windows(self.piece, ids, np.array([n_valid]), score_from, self._docs[lo + score_from],
                          self._scored_bytes(lo + score_from, np.array([lo + n_valid])))
        self._count += 1
        self._next += self.stride
        return windows

    def _scored_bytes(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
        """Σ bytes of buffered positions [lo, hi) per window, where the stream carries bytes."""
        if self._bytes is None:
            return None
        total = np.zeros(self._bytes.shape[0] + 1, dtype=np.int64)
        np.cumsum(self._bytes, out=total[1:])
        return total[hi] - total[lo]

    def _trim(self) -> None:
        drop = min(self._next, self._end) - self._base
        if drop > 0:
            self._ids = self._ids[drop:]
            self._docs = self._docs[drop:]
            if self._bytes is not None:
                self._bytes = self._bytes[drop:]
            self._base += drop
