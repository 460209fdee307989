"""Which files the port reads, and how lines become articles (the port's protocol, steps 1–2)."""

import json

import pytest
from textgen import write_jsonl

from npueval.core.errors import CorpusError
from npueval.eval.data.corpus import Corpus, scan_files, select_files
from npueval.eval.data.documents import bad_line_error, iter_chunks, parse_text, read_lines


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
    assert [p.relative_to(root).as_posix() for p in select_files(root, "all")] == ["AA/wiki_00", "AB/wiki_00",
                                                                                   "AB/wiki_01"]


def lines_of(files, batch_bytes=1 << 20):
    """(file, line number, raw) of every non-blank line, read range by range as the workers do."""
    out, line_in_file = [], {}
    for r in iter_chunks(Corpus(files[0].path.parents[1], "wiki_zh", "text", tuple(files), ""), batch_bytes):
        for raw in read_lines(r.file.path, r.start, r.end):
            line_in_file[r.file.rel] = line_in_file.get(r.file.rel, 0) + 1
            if raw.strip():
                out.append((r.file.rel, line_in_file[r.file.rel], raw))
    return out


def test_blank_lines_are_not_articles_and_line_numbers_are_physical(tmp_path):
    root = make(tmp_path, {"AA/wiki_00": line("a") + "\n   \n" + line("b\nc")})
    files = scan_files(root, select_files(root, "first"))
    assert (files[0].lines, files[0].articles) == (4, 2)
    assert [(parse_text(raw)[0], n) for _, n, raw in lines_of(files)] == [("a", 1), ("b\nc", 4)]


@pytest.mark.parametrize("batch_bytes", [1, 7, 64, 1 << 20])
def test_batches_cut_anywhere_give_the_same_lines(tmp_path, batch_bytes):
    texts = [f"text {i} " + "字" * i for i in range(40)]
    root = make(tmp_path, {"AA/wiki_00": "".join(map(line, texts)) + "\n\n",
                           "AB/wiki_00": line("x") + line("y").rstrip("\n")})
    files = scan_files(root, select_files(root, "first"))
    got = lines_of(files, batch_bytes)
    assert [(f, n, parse_text(raw)[0]) for f, n, raw in got] == (
        [("AA/wiki_00", i + 1, t) for i, t in enumerate(texts)] + [("AB/wiki_00", 1, "x"), ("AB/wiki_00", 2, "y")]
    )


@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"id": "1", "text": "unterminated\n', "malformed JSON line"),
        ('{"id": "1", "title": "no text"}\n', 'no "text" field'),
        ('[1, 2]\n', "a JSON array, not an object"),
        ('null\n', "a JSON null, not an object"),
        ('"text"\n', "a JSON string, not an object"),
        ('{"text": 5}\n', '"text" is a JSON number, not a string'),
        ('{"text": 2.5}\n', '"text" is a JSON number, not a string'),
        ('{"text": {"zh": "x"}}\n', '"text" is a JSON object, not a string'),
        ('{"text": ["x"]}\n', '"text" is a JSON array, not a string'),
        ('{"text": true}\n', '"text" is a JSON boolean (true), not a string'),
        ('{"text": null}\n', '"text" is a JSON null, not a string'),
    ],
)
def test_bad_line_is_named_file_colon_line(tmp_path, bad, message):
    root = make(tmp_path, {"AA/wiki_00": line("a") + "\n" + bad + line("c")})
    files = scan_files(root, select_files(root, "first"))
    (_, _first, raw_a), (_, lineno, raw_bad), _ = lines_of(files)
    text, problem = parse_text(raw_bad)
    assert text is None and problem.startswith(message)
    assert parse_text(raw_a) == ("a", None) and lineno == 3
    error = bad_line_error(files[0], lineno, problem)
    assert isinstance(error, CorpusError)
    assert str(error).startswith(f"{root}/AA/wiki_00:3: {message}")
    assert str(error).endswith("--skip-bad-lines to skip and count it")


def test_invalid_utf8_is_a_bad_line(tmp_path):
    (tmp_path / "AA").mkdir()
    (tmp_path / "AA" / "wiki_00").write_bytes(line("a").encode() + b'{"text": "\xff\xfe"}\n')
    files = scan_files(tmp_path, select_files(tmp_path, "first"))
    text, problem = parse_text(lines_of(files)[1][2])
    assert text is None and problem.startswith("malformed JSON")


@pytest.mark.parametrize("layout", [{}, {"AA/.keep": ""}, {"AA/wiki_00": "\n\n  \n"}])
def test_empty_corpus(tmp_path, layout):
    root = make(tmp_path / "c", layout) if layout else (tmp_path / "c")
    root.mkdir(exist_ok=True)
    with pytest.raises(CorpusError, match="empty corpus"):
        scan_files(root, select_files(root, "first"))


def test_missing_corpus_folder(tmp_path):
    with pytest.raises(CorpusError, match="CORPUS .*nowhere: no such folder"):
        select_files(tmp_path / "nowhere", "first")


def test_hashes_match_the_bytes(tmp_path):
    import hashlib

    path = write_jsonl(tmp_path / "AA" / "wiki_00", ["x" * 10, "y"])
    (f,) = scan_files(tmp_path, [path])
    assert f.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert f.size == path.stat().st_size


# Lines where orjson and json could part ways: each must give what `json.loads(line)["text"]`
# gives (the port's parser), text or error message alike.
PARSER_EDGES = [
    b'{"text": "a", "text": "b"}',  # duplicate keys: the last one
    b'{"text": "\\ud800 lone"}',  # a lone surrogate escape: json accepts it, orjson does not
    b'{"text": "\\ud83d\\ude00 pair"}',
    b'{"text": NaN}', b'{"text": "x", "n": Infinity}',
    b'\xef\xbb\xbf{"text": "bom"}',  # a UTF-8 byte order mark
    b'{"text": "crlf"}\r', b' \t{"text": "spaced"} ',
    b'{"text": "\xff"}',  # invalid UTF-8
    b'{"text": 123456789012345678901234567890}',  # too big for orjson's integers
    b'{"text": 1.5}', b'{"text": null}', b'{"title": "no text"}', b'["text"]', b'"text"',
    b'{"text": "a\x01b"}',  # a raw control character
    b'{"text": "\\u0000 nul"}', b'{"text": "\\n new \\t lines"}',
    b'{"text": "' + "中文 ∑ é 😀".encode() + b'"}',
    b'{"text": "x"} trailing', b'{"text": "x"', b"",
    b'{"id": "1", "url": "u", "title": "t", "text": "' + b"[" * 2000 + b'"}',
]


@pytest.mark.parametrize("raw", PARSER_EDGES)
def test_parse_text_is_json_loads(raw):
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        assert parse_text(raw) == (None, f"malformed JSON line ({exc})")
        return
    text, problem = parse_text(raw)
    if isinstance(obj, dict) and isinstance(obj.get("text"), str):
        assert (text, problem) == (obj["text"], None)
    else:
        assert text is None and problem


@pytest.mark.parametrize("data", [
    b"", b"\n", b"a", b"a\n", b"a\nb", b"a\n\n \t\r\n\x0b\x0cb\n", b"\r\n\r\n", b"x" * 50 + b"\n\n" + b"y" * 7,
])
@pytest.mark.parametrize("block_bytes", [1, 3, 1 << 20])
def test_scan_counts_lines_as_reading_them_one_by_one(tmp_path, data, block_bytes):
    import hashlib

    from npueval.eval.data.corpus import _scan

    path = tmp_path / "wiki_00"
    path.write_bytes(data)
    with open(path, "rb") as f:
        raws = list(f)
    expected = (hashlib.sha256(data).hexdigest(), len(data), len(raws), sum(1 for r in raws if r.strip()))
    assert _scan(path, block_bytes) == expected


def test_json_nested_too_deep_for_python_is_a_bad_line_not_a_crash():
    raw = b'{"text": "x", "deep": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert parse_text(raw) == (None, "JSON nested too deeply for Python's json")
