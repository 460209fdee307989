"""Ranges of corpus lines → framed token streams, on every core.

The driver of `prepare` cuts the files into ranges of about a megabyte and keeps everything
that depends on order (pieces, windows, shards). What each line becomes on its own (JSON
parsing, [SEP] for newlines, the length filter, tokenizing, [MASK] … [CLS] framing:
the port's protocol, docs/design.md, steps 2, 3, 5, 6, 7) happens here, in worker processes that read their
range from the file themselves, and comes back in order.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .corpus import LineRange, parse_text, read_lines

KEPT, SHORT, BAD = 0, 1, 2


@dataclass(frozen=True)
class FramedBatch:
    lines: int  # physical lines in the range, blank ones included
    status: np.ndarray  # int8, one per non-blank line (article): KEPT, SHORT (dropped by --min-length) or BAD
    problems: dict[int, tuple[int, str]]  # article position → (its physical line in the range, from 0; what is wrong)
    framed: np.ndarray  # int32: [MASK] ids [CLS] of each kept line, end to end
    bounds: np.ndarray  # int64, kept + 1: kept line k is framed[bounds[k]:bounds[k + 1]]


_tokenizer = None  # one per process, made by _init


def _init(vocab_path: str) -> None:
    global _tokenizer
    from npueval.core.vocab import load_vocab

    from .tokenizer import BertChineseTokenizer

    _tokenizer = BertChineseTokenizer(load_vocab(vocab_path))


def frame_range(path: str, start: int, end: int, min_length: int) -> FramedBatch:
    lines = read_lines(path, start, end)
    articles = [(i, raw) for i, raw in enumerate(lines) if raw.strip()]
    status = np.full(len(articles), KEPT, dtype=np.int8)
    problems: dict[int, tuple[int, str]] = {}
    texts: list[str] = []
    for pos, (line, raw) in enumerate(articles):
        text, problem = parse_text(raw)
        if problem is not None:
            status[pos] = BAD
            problems[pos] = (line, problem)
            continue
        text = text.replace("\n", " [SEP] ")
        if len(text) <= min_length:
            status[pos] = SHORT
            continue
        texts.append(text)
    ids, bounds = _tokenizer.encode_batch_flat(texts)
    framed, framed_bounds = _frame(ids, bounds, _tokenizer.vocab.mask_id, _tokenizer.vocab.cls_id)
    return FramedBatch(len(lines), status, problems, framed, framed_bounds)


def _frame(ids: np.ndarray, bounds: np.ndarray, mask_id: int, cls_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Put [MASK] before and [CLS] after each text's ids (the port's protocol, step 7)."""
    n = bounds.shape[0] - 1
    k = np.arange(n, dtype=np.int64)
    out = np.empty(ids.shape[0] + 2 * n, dtype=np.int32)
    out[bounds[:-1] + 2 * k] = mask_id
    out[bounds[1:] + 2 * k + 1] = cls_id
    out[np.arange(ids.shape[0]) + 2 * np.repeat(k, np.diff(bounds)) + 1] = ids
    return out, bounds + 2 * np.arange(n + 1, dtype=np.int64)


def _ray_running() -> bool:
    """A Ray driver has threads of its own that a fork would copy half-way: spawn then."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


@contextmanager
def batch_framer(vocab_path: Path, workers: int, min_length: int):
    """A function that maps LineRanges to FramedBatches in order.

    `workers` processes, or the calling process itself with 0. At most two batches per
    worker are in flight, so memory stays bounded. The tokenizer is built here first; on
    Linux the workers are forked and start with it (building it costs about as much as
    tokenizing 10 MB of text); elsewhere, or inside a Ray driver, they are spawned and build
    their own.
    """
    _init(str(vocab_path))
    if workers == 0:

        def run_here(ranges: Iterable[LineRange]) -> Iterator[FramedBatch]:
            for r in ranges:
                yield frame_range(str(r.file.path), r.start, r.end, min_length)

        yield run_here
        return

    if sys.platform == "linux" and not _ray_running():
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    else:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init, initargs=(str(vocab_path),))
    with pool:

        def run(ranges: Iterable[LineRange]) -> Iterator[FramedBatch]:
            pending: deque = deque()
            for r in ranges:
                pending.append(pool.submit(frame_range, str(r.file.path), r.start, r.end, min_length))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

        try:
            yield run
        except BaseException:
            # wait=True: a shutdown(wait=False) forgets the pool's manager thread, so the `with`'s own
            # shutdown cannot join it, and at exit CPython 3.11's atexit hook races that thread for
            # its wake-up pipe ("Exception ignored … Bad file descriptor" after our one-line error).
            # Only the batches already running are waited for; the queued ones are cancelled.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
