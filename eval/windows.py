"""Windows over a piece's token stream, built as the stream arrives (bounded memory).

Two modes (DESIGN.md, Dataset):

- ``seed``: the port's compare_loss.py loop. ``start = 0; while start < len(stream) - L:
  take stream[start:start + L]; start += S``. Every window is full and scores from
  position 1 (no context is carried over).
- ``sliding``: windows start at 0, s, 2s, …; the first scores positions 1…, every later one
  only the tokens the previous window did not reach (from local position L - s), so every
  token of the stream but its first is scored exactly once, with at least L - s tokens of
  context outside the first window. The last window may be short (padded when stored).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODES = ("seed", "sliding")


@dataclass(frozen=True)
class Window:
    piece: int
    ids: np.ndarray  # int32, (n_valid,), n_valid <= n_ctx
    score_from: int
    doc_id: int  # the article of the first scored token

    @property
    def n_valid(self) -> int:
        return int(self.ids.shape[0])

    @property
    def scored(self) -> int:
        return self.n_valid - self.score_from


class WindowMaker:
    """Feed a piece's stream in order with :meth:`add`; close the piece with :meth:`finish`."""

    def __init__(self, mode: str, n_ctx: int, stride: int):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode, self.n_ctx, self.stride = mode, n_ctx, stride
        self._reset(piece=-1)

    def _reset(self, piece: int) -> None:
        self.piece = piece
        self._ids = np.empty(0, dtype=np.int32)
        self._docs = np.empty(0, dtype=np.int64)
        self._base = 0  # stream position of self._ids[0]
        self._next = 0  # stream position where the next window starts
        self._count = 0  # windows made in this piece

    @property
    def _end(self) -> int:
        return self._base + self._ids.shape[0]

    def add(self, piece: int, ids: np.ndarray, doc_id: int) -> list[Window]:
        """Append one article's framed ids to piece `piece`; returns windows now complete."""
        out: list[Window] = []
        if piece != self.piece:
            out.extend(self.finish())
            self._reset(piece)
        self._ids = np.concatenate([self._ids, ids.astype(np.int32, copy=False)])
        self._docs = np.concatenate([self._docs, np.full(ids.shape[0], doc_id, dtype=np.int64)])
        # A full window is certain once the stream reaches past it (seed: by one token).
        need = self.n_ctx + (1 if self.mode == "seed" else 0)
        while self._end >= self._next + need:
            out.append(self._take(self._next, self._next + self.n_ctx))
        self._trim()
        return out

    def finish(self) -> list[Window]:
        """Windows that only the end of the piece completes (sliding mode's short tail)."""
        out: list[Window] = []
        if self.mode == "sliding":
            while self._sliding_has_next():
                out.append(self._take(self._next, min(self._next + self.n_ctx, self._end)))
        self._reset(self.piece)
        return out

    def _sliding_has_next(self) -> bool:
        if self._count == 0:
            return self._end >= 2
        return self._next - self.stride + self.n_ctx < self._end

    def _take(self, start: int, stop: int) -> Window:
        lo, hi = start - self._base, stop - self._base
        if self.mode == "seed" or self._count == 0:
            score_from = 1
        else:
            score_from = self.n_ctx - self.stride
        window = Window(
            piece=self.piece,
            ids=self._ids[lo:hi].copy(),
            score_from=score_from,
            doc_id=int(self._docs[lo + score_from]),
        )
        self._count += 1
        self._next += self.stride
        return window

    def _trim(self) -> None:
        drop = min(self._next, self._end) - self._base
        if drop > 0:
            self._ids = self._ids[drop:]
            self._docs = self._docs[drop:]
            self._base += drop
