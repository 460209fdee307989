"""Which files the port reads, and how lines become articles (port-protocol.md steps 1–2)."""

import json

import pytest

from textgen import write_jsonl
from npueval.eval.corpus import iter_articles, scan_files, select_files
from npueval.eval.errors import CorpusError


def make(tmp_path, layout):
    for rel, content in layout.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    return tmp_path


def line(text, **extra):
    return json.dumps({"id": "1", "url": "u", "title": "t", "text": text, **extra}, ensure_ascii=False) + "\n"


def test_first_file_of_each_sorted_subfolder(tmp_path):
    root = make(tmp_path, {"AB/wiki_01": line("x"), "AB/wiki_00": line("y"), "AA/wiki_00": line("z"),
                           "AA/.DS_Store": "junk", "AC/.hidden": "junk", "README": "top-level file"})
    assert [p.relative_to(root).as_posix() for p in select_files(root, "first")] == ["AA/wiki_00", "AB/wiki_00"]
    assert [p.relative_to(root).as_posix() for p in select_files(root, "all")] == ["AA/wiki_00", "AB/wiki_00", "AB/wiki_01"]


def test_blank_lines_are_not_articles_and_line_numbers_are_physical(tmp_path):
    root = make(tmp_path, {"AA/wiki_00": line("a") + "\n   \n" + line("b\nc")})
    files = scan_files(root, select_files(root, "first"))
    assert (files[0].lines, files[0].articles) == (4, 2)
    arts = list(iter_articles(files, skip_bad_lines=False))
    assert [(a.index, a.text, a.line) for a in arts] == [(0, "a", 1), (1, "b\nc", 4)]


@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"id": "1", "text": "unterminated\n', "malformed JSON line"),
        ('{"id": "1", "title": "no text"}\n', 'no "text" field'),
        ('[1, 2]\n', "a JSON list, not an object"),
        ('{"text": 5}\n', '"text" is a JSON int'),
    ],
)
def test_bad_line_is_named_file_colon_line(tmp_path, bad, message):
    root = make(tmp_path, {"AA/wiki_00": line("a") + "\n" + bad + line("c")})
    files = scan_files(root, select_files(root, "first"))
    with pytest.raises(CorpusError, match=rf"AA/wiki_00:3: {message}.*--skip-bad-lines"):
        list(iter_articles(files, skip_bad_lines=False))


def test_skipped_bad_line_keeps_its_position(tmp_path):
    root = make(tmp_path, {"AA/wiki_00": line("a") + "{broken\n" + line("c")})
    files = scan_files(root, select_files(root, "first"))
    arts = list(iter_articles(files, skip_bad_lines=True))
    assert [(a.index, a.text) for a in arts] == [(0, "a"), (1, None), (2, "c")]


def test_invalid_utf8_is_a_bad_line(tmp_path):
    (tmp_path / "AA").mkdir()
    (tmp_path / "AA" / "wiki_00").write_bytes(line("a").encode() + b'{"text": "\xff\xfe"}\n')
    files = scan_files(tmp_path, select_files(tmp_path, "first"))
    with pytest.raises(CorpusError, match="wiki_00:2: malformed JSON"):
        list(iter_articles(files, skip_bad_lines=False))


@pytest.mark.parametrize("layout", [{}, {"AA/.keep": ""}, {"AA/wiki_00": "\n\n  \n"}])
def test_empty_corpus(tmp_path, layout):
    root = make(tmp_path / "c", layout) if layout else (tmp_path / "c")
    root.mkdir(exist_ok=True)
    with pytest.raises(CorpusError, match="empty corpus"):
        scan_files(root, select_files(root, "first"))


def test_missing_corpus_folder(tmp_path):
    with pytest.raises(CorpusError, match="CORPUS_DIR .*nowhere: no such folder"):
        select_files(tmp_path / "nowhere", "first")


def test_hashes_match_the_bytes(tmp_path):
    import hashlib

    path = write_jsonl(tmp_path / "AA" / "wiki_00", ["x" * 10, "y"])
    (f,) = scan_files(tmp_path, [path])
    assert f.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert f.size == path.stat().st_size
