"""`prepare --mode stride`: the stream of Hugging Face's "Perplexity of fixed-length models" guide.

The guide tokenizes its test split as one text, `tokenizer("\\n\\n".join(texts))`: every document,
empty ones included, joined by a blank line, with the special tokens the tokenizer's
post-processor adds to a text (Llama's BOS before it; none for GPT-2). That text is read here, in
the driver, and tokenized as one document (in pieces where cuts.py proves the ids are those of
the whole), so the corpus is held in memory once as text: the guide's own cost, and this mode is
for the corpora it is used on. Each id keeps the UTF-8 bytes it covers, separators included, and
the document its first byte is in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

import numpy as np

from .batches import Reading
from .documents import Chunk, bad_line_error, lines_before, read_documents
from .model_tokenizer import post_processor_ids

#: What the guide puts between two documents.
SEPARATOR = "\n\n"
#: The joined stream goes to the windows in runs of this many ids.
RUN_IDS = 1 << 18


def joined_stream(chunks: Iterable[Chunk], reading: Reading, skip_bad_lines: bool, stats: dict,
                  on_bytes: Callable[[int], None]) -> Iterator[tuple]:
    """(piece 0, ids, document of each id, bytes of each id, None) of the joined text, in runs."""
    from .framing import JsonFramer

    texts = _texts(chunks, reading, skip_bad_lines, stats, on_bytes)
    before, after = post_processor_ids(reading.tokenizer.file.path)
    framer = JsonFramer(replace(reading.tokenizer, bos_id=before, eos_id=after))
    ids, _, nbytes = framer.frame([SEPARATOR.join(texts)])
    stats["stream_tokens"] += int(ids.shape[0])
    # Each document's first byte in the joined text, and each id's.
    doc_start = np.zeros(len(texts), dtype=np.int64)
    sizes = np.fromiter((len(t.encode("utf-8")) for t in texts), dtype=np.int64, count=len(texts))
    np.cumsum(sizes[:-1] + len(SEPARATOR), out=doc_start[1:])
    id_start = np.cumsum(nbytes, dtype=np.int64) - nbytes
    docs = np.maximum(np.searchsorted(doc_start, id_start, side="right") - 1, 0)
    for lo in range(0, ids.shape[0], RUN_IDS):
        yield 0, ids[lo:lo + RUN_IDS], docs[lo:lo + RUN_IDS], nbytes[lo:lo + RUN_IDS], None


def _texts(chunks: Iterable[Chunk], reading: Reading, skip_bad_lines: bool, stats: dict,
           on_bytes: Callable[[int], None]) -> list[str]:
    """Every document's text, in corpus order; a bad one named (FILE:LINE) or, with
    --skip-bad-lines, skipped and counted."""
    from .framing import JsonFramer

    texts: list[str] = []
    for chunk in chunks:
        _, documents = read_documents(chunk, reading.format, reading.text_field)
        for doc in documents:
            text, problem = (doc.text, doc.problem) if doc.problem else JsonFramer.clean(doc.text)
            if problem is not None:
                if not skip_bad_lines:
                    raise bad_line_error(chunk.file, lines_before(chunk, reading.format) + doc.line + 1, problem,
                                         reading.format)
                stats["bad_lines"] += 1
                stats["articles_dropped"] += 1
                continue
            texts.append(text)
        on_bytes(chunk.size)
    stats["articles_kept"] += len(texts)
    return texts
