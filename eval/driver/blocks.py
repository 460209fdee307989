"""Blocks: fixed ranges of window_id, the unit a device evaluates, retries and resumes.

A run's plan cuts the windows it evaluates (--limit) into blocks once, when it starts; the run
folder keeps it (`BlockPlan`, OUT/plan.json), so `--resume` on any number of devices evaluates
the same blocks. `balanced_blocks` is the default: large blocks first, so that the per-call cost
stays noise, shrinking toward the end, so that the devices finish within about one model batch
of each other (guided self-scheduling). `fixed_blocks` cuts blocks of `--block-windows`. The
`BlockReader` reads a block's rows from the Parquet shards (the data manifest says which shard
holds which window ids), keeps only the windows the run scores (--drop-last), and checks that
every token id fits the model's vocabulary, naming the shard and row of the first that does not.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npueval.actors.evaluator import BlockRows
from npueval.core.errors import DatasetError
from npueval.eval.data.dataset import read_shard
from npueval.eval.data.manifest import DataManifest


@dataclass(frozen=True)
class Block:
    block_id: int
    first: int  # first window_id
    stop: int  # one past the last window_id


def fixed_blocks(windows: int, block_windows: int) -> list[Block]:
    """Blocks of `block_windows` (the last one shorter)."""
    return [Block(k, lo, min(lo + block_windows, windows)) for k, lo in enumerate(range(0, windows, block_windows))]


def balanced_blocks(windows: int, in_flight: int, batch_size: int, max_batches: int) -> list[Block]:
    """Blocks of whole model batches (the last may be short): each takes ceil(R / in_flight) of the
    R batches not planned yet, at most `max_batches` and at least one.

    `in_flight` is how many blocks the devices hold at once (two per device: one running, the next
    waiting). The dispatcher hands blocks out in order to whichever device frees up, so while R is
    large the blocks stay at `max_batches`, and near the end each is a share of what is left: when a
    device takes the last block, every other holds at most about as much, and all finish within
    about one block of the smallest size, a model batch, of each other."""
    if windows <= 0:
        return []
    total_batches = -(-windows // batch_size)
    blocks, first_batch = [], 0
    while first_batch < total_batches:
        left = total_batches - first_batch
        take = min(left, max(1, min(max_batches, -(-left // max(1, in_flight)))))
        stop_batch = first_batch + take
        blocks.append(Block(len(blocks), first_batch * batch_size, min(stop_batch * batch_size, windows)))
        first_batch = stop_batch
    return blocks


@dataclass(frozen=True)
class BlockPlan:
    """The blocks of a run, as OUT/plan.json keeps them: the first window of each, and the end."""

    format_version: int
    windows: int  # one past the last window_id covered
    starts: tuple[int, ...]

    @classmethod
    def of(cls, blocks: list[Block], windows: int) -> BlockPlan:
        return cls(format_version=PLAN_FORMAT, windows=windows, starts=tuple(b.first for b in blocks))

    def blocks(self) -> list[Block]:
        stops = (*self.starts[1:], self.windows)
        return [Block(k, first, stop) for k, (first, stop) in enumerate(zip(self.starts, stops))]

    def check(self) -> None:
        """The starts must cut 0 … windows into non-empty blocks, in order."""
        bounds = (*self.starts, self.windows)
        if (self.starts[:1] != (0,) and self.windows != 0) or any(a >= b for a, b in itertools.pairwise(bounds)):
            raise ValueError(f"block starts {self.starts[:4]}… do not cut 0…{self.windows} into blocks")


PLAN_FORMAT = 1


@dataclass(frozen=True)
class WindowIndex:
    """piece, doc_id (and scored bytes and words, where recorded) of every window, in window_id
    order: for --drop-last, --limit, seed_ppl, bits per byte, word perplexity and windows.parquet;
    and for stride data, which windows have context (the guide's weights)."""

    piece: np.ndarray  # int32 (W,)
    doc_id: np.ndarray  # int64 (W,)
    scored_bytes: np.ndarray | None = None  # int64 (W,); None: the data set does not record bytes
    scored_words: np.ndarray | None = None  # int64 (W,): rolling data sets
    with_context: np.ndarray | None = None  # bool (W,): stride data sets, score_from > 1


def read_index(data_dir: Path, manifest: DataManifest, stop: threading.Event | None = None) -> WindowIndex | None:
    """Reads every shard once, checking it against the manifest's sha256 before any block is sent;
    None once `stop` is set (the run ended before it needed the index), checked between shards."""
    optional = {"scored_bytes": manifest.scored_bytes is not None, "scored_words": manifest.scored_words is not None,
                "score_from": manifest.mode == "stride"}
    columns = ["piece", "doc_id"] + [name for name, wanted in optional.items() if wanted]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in columns}
    for shard in manifest.shards:
        if stop is not None and stop.is_set():
            return None
        table = read_shard(data_dir, shard, columns, verify=True)
        for name in columns:
            parts[name].append(table.column(name).to_numpy())
    joined = {name: np.concatenate(arrays) if arrays else np.zeros(0, np.int64) for name, arrays in parts.items()}

    def int64(name: str) -> np.ndarray | None:
        return joined[name].astype(np.int64) if name in joined else None

    return WindowIndex(joined["piece"].astype(np.int32), int64("doc_id"), int64("scored_bytes"), int64("scored_words"),
                       joined["score_from"] > 1 if "score_from" in joined else None)


class BlockReader:
    """Rows of a block as numpy arrays. Blocks come in window order, so one shard is cached."""

    def __init__(self, data_dir: Path, manifest: DataManifest, keep: np.ndarray, vocab_size: int | None):
        self.data_dir, self.keep, self.vocab_size = data_dir, keep, vocab_size
        self.shards = manifest.shards
        self.n_ctx = manifest.n_ctx
        self._starts = np.array([s.first_window_id for s in self.shards], dtype=np.int64)
        self._cached: tuple[int, dict] | None = None

    def read(self, block: Block) -> BlockRows:
        """The block's kept windows."""
        parts = []
        lo = block.first
        while lo < block.stop:
            k = int(np.searchsorted(self._starts, lo, side="right")) - 1
            shard = self._shard(k)
            first = self.shards[k].first_window_id
            hi = min(block.stop, self.shards[k].last_window_id + 1)
            rows = slice(lo - first, hi - first)
            part = {name: column[rows] for name, column in shard.items()}
            self._check_ids(part["input_ids"], k, lo - first)
            parts.append(part)
            lo = hi
        data = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        kept = self.keep[data["window_ids"]]
        return BlockRows(**{name: column[kept] for name, column in data.items()})

    def _shard(self, k: int) -> dict:
        if self._cached is None or self._cached[0] != k:
            table = read_shard(self.data_dir, self.shards[k], ["input_ids", "score_from", "n_valid", "window_id"])
            ids = table.column("input_ids").combine_chunks().flatten()  # flatten honours slice offsets
            self._cached = (k, {
                "input_ids": ids.to_numpy().reshape(-1, self.n_ctx),
                "score_from": table.column("score_from").to_numpy(),
                "n_valid": table.column("n_valid").to_numpy(),
                "window_ids": table.column("window_id").to_numpy(),
            })
        return self._cached[1]

    def _check_ids(self, ids: np.ndarray, shard: int, first_row: int) -> None:
        if self.vocab_size is None or not ids.size:
            return
        bad = (ids < 0) | (ids >= self.vocab_size)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise DatasetError(
                f"{self.data_dir / self.shards[shard].name}: row {first_row + int(row)} holds token id "
                f"{int(ids[row, col])} at position {int(col)}, outside the model's vocabulary of {self.vocab_size}: "
                "prepare the data with the model's vocab.txt"
            )
