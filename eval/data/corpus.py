"""A wiki_zh_2019 corpus on disk: which files the port reads, and its articles, streamed.

The layout is CORPUS/AA/wiki_00, CORPUS/AA/wiki_01, …, CORPUS/AB/…, each file one JSON
object per line, `{"id", "url", "title", "text"}`. The port's protocol, steps 1–2 (docs/design.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from npueval.core.errors import CorpusError, not_a_folder

FILES_CHOICES = ("first", "all")


@dataclass(frozen=True)
class CorpusFile:
    """One file that takes part, with what the manifest records about it."""

    path: Path
    rel: str  # relative to the corpus root, "/"-separated
    sha256: str
    lines: int  # physical lines, blank ones included
    articles: int  # non-blank lines: each is one position in the port's article list
    size: int


@dataclass(frozen=True)
class LineRange:
    """Bytes [start, end) of one file: whole lines, read by whichever process tokenizes them."""

    file: CorpusFile
    start: int
    end: int


def select_files(root: Path, files: str) -> list[Path]:
    """Subfolders in sorted order; in each, the first file by name (`first`) or all (`all`).

    The port takes the first entry `os.listdir` returns in each subfolder; we make that
    deterministic by sorting. Hidden entries (".DS_Store", ".git") are not corpus files.
    """
    if not root.is_dir():
        raise CorpusError(f"CORPUS_DIR {root}: {not_a_folder(root)}; pass the wiki_zh folder (with AA/, AB/, …)")
    chosen: list[Path] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        names = sorted(p for p in sub.iterdir() if p.is_file() and not p.name.startswith("."))
        chosen.extend(names[:1] if files == "first" else names)
    if not chosen:
        raise CorpusError(
            f"CORPUS_DIR {root}: empty corpus, no files in its subfolders; "
            "expected the wiki_zh layout AA/wiki_00, AB/wiki_00, …"
        )
    return chosen


def scan_files(root: Path, paths: list[Path]) -> list[CorpusFile]:
    """Hash each file and count its lines in one read."""
    scanned = []
    for path in paths:
        sha256, size, lines, articles = _scan(path)
        scanned.append(
            CorpusFile(path=path, rel=path.relative_to(root).as_posix(), sha256=sha256, lines=lines,
                       articles=articles, size=size)
        )
    if sum(f.articles for f in scanned) == 0:
        raise CorpusError(
            f"CORPUS_DIR {root}: empty corpus, its {len(scanned)} selected file(s) hold no "
            "articles; expected one JSON object per line"
        )
    return scanned


def _scan(path: Path, block_bytes: int = 1 << 23) -> tuple[str, int, int, int]:
    """(sha256, bytes, physical lines, non-blank lines) of one file, read in large blocks:
    the lines are split and tested in C, not one by one in Python. Of a line that spans blocks
    only whether it is blank so far is kept, so a huge line costs no more than a short one."""
    digest = hashlib.sha256()
    size = lines = articles = 0
    open_line, open_blank = False, True  # a line begun in an earlier block: any bytes, all whitespace
    with open(path, "rb") as f:
        while block := f.read(block_bytes):
            digest.update(block)
            size += len(block)
            parts = block.split(b"\n")
            if len(parts) > 1:  # parts[0] ends the open line; each "\n" ends one line
                lines += len(parts) - 1
                articles += (not open_blank) or bool(parts[0].strip())
                articles += sum(map(bool, map(bytes.strip, parts[1:-1])))
                open_line, open_blank = False, True
            if parts[-1]:
                open_line, open_blank = True, open_blank and not parts[-1].strip()
    if open_line:  # a last line without "\n"
        lines += 1
        articles += not open_blank
    return digest.hexdigest(), size, lines, articles


def iter_line_ranges(files: list[CorpusFile], batch_bytes: int) -> Iterator[LineRange]:
    """Every file cut, in order, into ranges of about `batch_bytes` that end at a line's end.

    Only the bytes near each cut are read here: the tokenizing workers read the ranges
    themselves, so the text does not pass through the driver and a pipe.
    """
    for cf in files:
        with open(cf.path, "rb") as f:
            start = 0
            while start < cf.size:
                end = _line_end(f, start + batch_bytes, cf.size)
                yield LineRange(cf, start, end)
                start = end


def _line_end(f, pos: int, size: int) -> int:
    """The offset just past the first "\n" at or after `pos`, or the file's end."""
    if pos >= size:
        return size
    f.seek(pos)
    while chunk := f.read(1 << 16):
        found = chunk.find(b"\n")
        if found >= 0:
            return min(pos + found + 1, size)
        pos += len(chunk)
    return size


def read_lines(path: Path | str, start: int, end: int) -> list[bytes]:
    """The physical lines of bytes [start, end) of a file, without their "\n"; blank ones too."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    lines = data.split(b"\n")
    if lines[-1] == b"":  # the range ends with a "\n" (or is empty): no line after it
        lines.pop()
    return lines


def parse_text(raw: bytes) -> tuple[str | None, str | None]:
    """The port's `json.loads(line)["text"]`: (text, None), or (None, what is wrong).

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
        if type(obj) is dict and type(obj.get("text")) is str:
            return obj["text"], None
    return _parse_text_json(raw)


def _parse_text_json(raw: bytes) -> tuple[str | None, str | None]:
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"malformed JSON line ({exc})"
    except RecursionError:  # the port would crash here; npueval calls it a bad line
        return None, "JSON nested too deeply for Python's json"
    if not isinstance(obj, dict):
        return None, f"a JSON {type(obj).__name__}, not an object"
    if "text" not in obj:
        return None, 'no "text" field'
    if not isinstance(obj["text"], str):
        return None, f'"text" is a JSON {type(obj["text"]).__name__}, not a string'
    return obj["text"], None


def bad_line_error(file: CorpusFile, lineno: int, problem: str) -> CorpusError:
    return CorpusError(
        f"{file.path}:{lineno}: {problem}; fix the line or pass --skip-bad-lines to skip and count it"
    )
