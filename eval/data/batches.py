"""Chunks of a corpus → framed token streams, on every core.

The driver of `prepare` cuts the files into chunks of about a megabyte (documents.py) and keeps
everything that depends on order (pieces, windows, shards). What each document becomes on its own
(its text read and checked, the length filter, tokenizing and framing: framing.py; for
GPT2-Chinese the port's protocol, docs/design.md, steps 2, 3, 5, 6, 7) happens here, in worker
processes that read their chunk from the file themselves, and comes back in order.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from npueval.core.signals import shielded

from .documents import Chunk, lines_before, read_documents
from .framing import lm_eval_words
from .model_tokenizer import ModelTokenizer

log = logging.getLogger(__name__)

KEPT, SHORT, BAD = 0, 1, 2


@dataclass(frozen=True)
class FramedBatch:
    lines: int  # physical lines (Parquet: rows) in the chunk, blank ones included
    status: np.ndarray  # int8, one per document: KEPT, SHORT (dropped by --min-length) or BAD
    problems: dict[int, tuple[int, str]]  # document position → (its physical line in the chunk, from 0; what is wrong)
    framed: np.ndarray  # int32: each kept document's framed ids, end to end
    bounds: np.ndarray  # int64, kept + 1: kept document k is framed[bounds[k]:bounds[k + 1]]
    nbytes: np.ndarray | None  # int32 like `framed`: the UTF-8 bytes each id covers (tokenizer.json only)
    words: np.ndarray | None = None  # int64, one per kept document: lm-eval's count of its words (rolling mode)


@dataclass(frozen=True)
class Reading:
    """How every chunk is read and framed: the same in every worker."""

    tokenizer: ModelTokenizer
    format: str
    text_field: str
    min_length: int | None  # documents of at most this many characters are dropped; None: none, empty ones neither
    count_words: bool = False  # lm-eval's words of each document (rolling mode)


_framer = None  # one per process, made by _init
_reading: Reading | None = None


def _init(reading: Reading, parent: int | None = None) -> None:
    """This process's framer; `parent`: the pid of the prepare that started this worker."""
    global _framer, _reading
    from .framing import ClassicFramer, JsonFramer

    if parent is not None:
        _worker_start(parent)
    _reading = reading
    _framer = (ClassicFramer if reading.tokenizer.classic else JsonFramer)(reading.tokenizer)


def _worker_start(parent: int) -> None:
    """In a worker. One process per core already, so the tokenizers library's own threads would
    only contend. Ctrl-C and SIGTERM are the parent's to handle: it shuts the pool down, letting the
    batches that run finish. A worker whose parent is gone (killed with SIGKILL, say, or by the
    OOM killer) ends with it, where it would wait forever on a queue no one writes to."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def frame_chunk(chunk: Chunk) -> FramedBatch:
    physical_lines, documents = read_documents(chunk, _reading.format, _reading.text_field)
    status = np.full(len(documents), KEPT, dtype=np.int8)
    problems: dict[int, tuple[int, str]] = {}
    texts: list[str] = []
    lines: list[int] = []  # of each text, in the chunk
    for pos, doc in enumerate(documents):
        text, problem = (doc.text, doc.problem) if doc.problem else _framer.clean(doc.text)
        if problem is not None:
            status[pos] = BAD
            problems[pos] = (doc.line, problem)
            continue
        if _reading.min_length is not None and len(text) <= _reading.min_length:
            status[pos] = SHORT
            continue
        texts.append(text)
        lines.append(doc.line)

    def warn(k: int, note: str) -> None:  # before the text is tokenized: it may need more memory than there is
        log.warning("%s:%d: %s", chunk.file.path, lines_before(chunk, _reading.format) + lines[k] + 1, note)

    framed, bounds, nbytes = _framer.frame(texts, warn)
    words = np.fromiter(map(lm_eval_words, texts), dtype=np.int64, count=len(texts)) if _reading.count_words else None
    return FramedBatch(physical_lines, status, problems, framed, bounds, nbytes, words)


def _ray_running() -> bool:
    """A Ray driver has threads of its own that a fork would copy half-way: spawn then."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


@contextmanager
def batch_framer(reading: Reading, workers: int):
    """A function that maps Chunks to FramedBatches in order.

    `workers` processes, or the calling process itself with 0. At most two batches per
    worker are in flight, so memory stays bounded. The tokenizer is built here first; on
    Linux the workers are forked and start with it (building it costs about as much as
    tokenizing 10 MB of text); elsewhere, or inside a Ray driver, they are spawned and build
    their own.
    """
    _init(reading)
    if workers == 0:

        def run_here(chunks: Iterable[Chunk]) -> Iterator[FramedBatch]:
            for chunk in chunks:
                yield frame_chunk(chunk)

        yield run_here
        return

    if sys.platform == "linux" and not _ray_running():
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_worker_start,
                                   initargs=(os.getpid(),))
    else:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init, initargs=(reading, os.getpid()))

    def run(chunks: Iterable[Chunk]) -> Iterator[FramedBatch]:
        pending: deque = deque()
        for chunk in chunks:
            with shielded():  # the first submit starts the workers and the pool's thread
                pending.append(pool.submit(frame_chunk, chunk))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    try:
        yield run
    finally:
        # wait=True: a shutdown(wait=False) forgets the pool's manager thread, and at exit CPython
        # 3.11's atexit hook races that thread for its wake-up pipe ("Exception ignored … Bad file
        # descriptor" after our one-line error). Only the batches already running are waited for;
        # the queued ones are cancelled.
        with shielded():
            pool.shutdown(wait=True, cancel_futures=True)
