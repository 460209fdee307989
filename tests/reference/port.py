"""A direct re-implementation of the ModelZoo GPT2 port's data path, for tests and benchmarks.

get_data_json.py + pre_data.py + compare_loss.py's windows, as docs/design.md, "The port's protocol", states them,
written the straightforward way the port does it: the whole corpus in one list in memory,
one article at a time through the pure-Python classic tokenizer. Independent of
npueval.eval on purpose (it shares no code with it).
"""

from __future__ import annotations

import json
import os
import random

from classic_bert import ClassicBertTokenizer


def read_texts(corpus_dir: str, files: str = "first") -> list[str]:
    """Step 1–2: the first (or every) file of each subfolder, sorted; one text per non-blank line."""
    texts = []
    for sub in sorted(os.listdir(corpus_dir)):
        folder = os.path.join(corpus_dir, sub)
        if sub.startswith(".") or not os.path.isdir(folder):
            continue
        names = sorted(n for n in os.listdir(folder) if not n.startswith(".") and os.path.isfile(os.path.join(folder,
                                                                                                              n)))
        for name in names[:1] if files == "first" else names:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        texts.append(json.loads(line)["text"])
    return texts


def pieces(texts: list[str], num_pieces: int = 100, min_length: int = 128) -> list[list[str]]:
    """Steps 3–5: [SEP] for newlines, pieces cut by position, then short texts dropped."""
    lines = [t.replace("\n", " [SEP] ") for t in texts]
    n = len(lines)
    out = []
    for i in range(num_pieces):
        piece = lines[n // num_pieces * i: n // num_pieces * (i + 1)]
        if i == num_pieces - 1:
            piece.extend(lines[n // num_pieces * num_pieces:])
        out.append([text for text in piece if len(text) > min_length])
    return out


def piece_streams(texts: list[str], tokenizer: ClassicBertTokenizer, num_pieces: int = 100,
                  min_length: int = 128) -> list[list[int]]:
    """Steps 3–7: each piece's stream of [MASK] ids [CLS] per kept article."""
    mask, cls = tokenizer.vocab["[MASK]"], tokenizer.vocab["[CLS]"]
    streams = []
    for piece in pieces(texts, num_pieces, min_length):
        stream: list[int] = []
        for text in piece:
            stream.append(mask)
            stream.extend(tokenizer.encode(text))
            stream.append(cls)
        streams.append(stream)
    return streams


def seed_windows(stream: list[int], n_ctx: int = 512, stride: int = 768) -> list[list[int]]:
    """Step 8, compare_loss.py's loop."""
    windows = []
    start = 0
    while start < len(stream) - n_ctx:
        windows.append(stream[start:start + n_ctx])
        start += stride
    return windows


def port_windows(corpus_dir: str, vocab_path: str, *, shuffle: bool = False, n_ctx: int = 512,
                 stride: int = 768, num_pieces: int = 100, min_length: int = 128,
                 files: str = "first") -> list[tuple[int, list[int]]]:
    """(piece, window ids) in the order the port evaluates them (step 9's shuffle if asked)."""
    tokenizer = ClassicBertTokenizer(vocab_path)
    streams = piece_streams(read_texts(corpus_dir, files), tokenizer, num_pieces, min_length)
    if shuffle:
        random.seed(0)
    out = []
    for i, stream in enumerate(streams):
        windows = seed_windows(stream, n_ctx, stride)
        if shuffle:
            random.shuffle(windows)
        out.extend((i, w) for w in windows)
    return out
