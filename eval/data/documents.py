"""The documents of a corpus, in chunks that the tokenizing workers read themselves.

The driver of `prepare` cuts each file into chunks of about a megabyte that end where a document
ends (a line's end; in text files a blank line), reading only the bytes near each cut, so the text
does not pass through the driver and a pipe. Parquet is the exception: the driver reads the text
column in batches of rows (decompressing is cheap beside tokenizing) and hands each batch over.

A worker turns its chunk into documents: a JSON line's text field (the port's parser, exactly),
a paragraph of a text file, a row of the text column; or, for each one that cannot be read, what
is wrong with it and where.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from npueval.core.contracts import json_type
from npueval.core.errors import CorpusError

from .corpus import PARQUET, TEXT, Corpus, CorpusFile


@dataclass(frozen=True)
class Chunk:
    """Whole documents of one file: bytes [start, end), or for Parquet rows [start, end) with their text."""

    file: CorpusFile
    start: int
    end: int
    size: int  # the file's bytes it stands for, for progress
    texts: list[str | None] | None = None  # Parquet: the rows' text, read by the driver


@dataclass(frozen=True)
class Document:
    line: int  # its first physical line (Parquet: row) in the chunk, from 0
    text: str | None
    problem: str | None  # why there is no text: a bad line


def iter_chunks(corpus: Corpus, batch_bytes: int) -> Iterator[Chunk]:
    """Every file cut, in order, into chunks of about `batch_bytes`."""
    for cf in corpus.files:
        if corpus.format == PARQUET:
            yield from _parquet_chunks(cf, corpus.text_field, batch_bytes)
            continue
        find_end = _paragraph_end if corpus.format == TEXT else _line_end
        with open(cf.path, "rb") as f:
            start = 0
            while start < cf.size:
                end = find_end(f, start + batch_bytes, cf.size)
                yield Chunk(cf, start, end, end - start)
                start = end


def read_documents(chunk: Chunk, fmt: str, text_field: str) -> tuple[int, list[Document]]:
    """(physical lines or rows in the chunk, its documents in order)."""
    if fmt == PARQUET:
        texts = chunk.texts
        return len(texts), [Document(i, t, None if t is not None else f"{text_field} is null")
                            for i, t in enumerate(texts)]
    lines = read_lines(chunk.file.path, chunk.start, chunk.end)
    if fmt == TEXT:
        return len(lines), list(_paragraphs(lines))
    docs = []
    for i, raw in enumerate(lines):
        if raw.strip():
            text, problem = parse_text(raw, text_field)
            docs.append(Document(i, text, problem))
    return len(lines), docs


def _paragraphs(lines: list[bytes]) -> Iterator[Document]:
    """Runs of non-blank lines, joined by "\\n"; one that is not UTF-8 is a bad document."""
    first = None
    for i, raw in enumerate([*lines, b""]):
        if raw.strip():
            first = i if first is None else first
        elif first is not None:
            data = b"\n".join(lines[first:i])
            try:
                yield Document(first, data.decode("utf-8"), None)
            except UnicodeDecodeError as exc:
                yield Document(first, None, f"not UTF-8 text ({exc.reason} at byte {exc.start} of the paragraph)")
            first = None


def _line_end(f, pos: int, size: int) -> int:
    """The offset just past the first "\\n" at or after `pos`, or the file's end."""
    if pos >= size:
        return size
    f.seek(pos)
    while chunk := f.read(1 << 16):
        found = chunk.find(b"\n")
        if found >= 0:
            return min(pos + found + 1, size)
        pos += len(chunk)
    return size


def _paragraph_end(f, pos: int, size: int) -> int:
    """The offset just past the first blank line after the line that holds `pos`, or the file's end."""
    if pos >= size:
        return size
    f.seek(pos)
    f.readline()  # the rest of the line that holds pos
    while line := f.readline():
        if not line.strip():
            return min(f.tell(), size)
    return size


def _parquet_chunks(cf: CorpusFile, column: str, batch_bytes: int) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    f = pq.ParquetFile(cf.path)
    meta = f.metadata
    text_bytes = sum(meta.row_group(g).column(i).total_uncompressed_size for g in range(meta.num_row_groups)
                     for i in range(meta.num_columns) if meta.row_group(g).column(i).path_in_schema == column)
    rows_per_batch = max(1, batch_bytes * max(meta.num_rows, 1) // max(text_bytes, 1))
    row = 0
    for batch in f.iter_batches(batch_size=rows_per_batch, columns=[column], use_threads=False):
        end = row + batch.num_rows
        done_before, done_after = cf.size * row // max(cf.lines, 1), cf.size * end // max(cf.lines, 1)
        yield Chunk(cf, row, end, done_after - done_before, batch.column(0).to_pylist())
        row = end


def lines_before(chunk: Chunk, fmt: str) -> int:
    """The file's physical lines (Parquet: rows) before CHUNK, read from the file: only for a
    message, since the driver counts them as the chunks come back."""
    if fmt == PARQUET:
        return chunk.start
    count = 0
    with open(chunk.file.path, "rb") as f:
        left = chunk.start
        while left > 0 and (block := f.read(min(left, 1 << 20))):
            count += block.count(b"\n")
            left -= len(block)
    return count


def read_lines(path: Path | str, start: int, end: int) -> list[bytes]:
    """The physical lines of bytes [start, end) of a file, without their "\\n"; blank ones too."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    lines = data.split(b"\n")
    if lines[-1] == b"":  # the range ends with a "\n" (or is empty): no line after it
        lines.pop()
    return lines


def parse_text(raw: bytes, field: str = "text") -> tuple[str | None, str | None]:
    """The port's `json.loads(line)["text"]` (FIELD): (text, None), or (None, what is wrong).

    orjson parses a well-formed line about 2.5 times as fast. Where it accepts a line it gives
    the same text as `json` (both keep the last of duplicate keys); what it refuses and `json`
    accepts (lone surrogate escapes, NaN, a UTF-8 BOM) and every bad line go through `json`,
    so the text and the error message are the port's. One difference: other fields nested
    about 1,000 to 1,023 levels deep, where `json` raises RecursionError (the port would crash)
    and orjson reads the text; deeper, both refuse and the line is a bad line.
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    else:
        if type(obj) is dict and type(obj.get(field)) is str:
            return obj[field], None
    return _parse_text_json(raw, field)


def _parse_text_json(raw: bytes, field: str) -> tuple[str | None, str | None]:
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"malformed JSON line ({exc})"
    except RecursionError:  # the port would crash here; npueval calls it a bad line
        return None, "JSON nested too deeply for Python's json"
    if not isinstance(obj, dict):
        return None, f"a JSON {json_type(obj)}, not an object"
    if field not in obj:
        return None, f"no {json.dumps(field)} field (--text-field names the one to read)"
    if not isinstance(obj[field], str):
        return None, f"{json.dumps(field)} is a JSON {json_type(obj[field])}, not a string"
    return obj[field], None


def bad_line_error(file: CorpusFile, lineno: int, problem: str, fmt: str = "") -> CorpusError:
    """FILE:LINE (Parquet: FILE:ROW, from 1) and what is wrong with the document there."""
    what = {PARQUET: "row", TEXT: "paragraph"}.get(fmt, "line")
    return CorpusError(
        f"{file.path}:{lineno}: {problem}; fix the {what} or pass --skip-bad-lines to skip and count it"
    )
