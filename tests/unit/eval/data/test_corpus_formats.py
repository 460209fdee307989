"""Corpora beyond wiki_zh: which format `auto` picks, which files take part, and the documents
each format holds, however the driver cuts the files into chunks."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from npueval.core.errors import CorpusError
from npueval.eval.data.corpus import _scan, detect_format, open_corpus
from npueval.eval.data.documents import iter_chunks, read_documents


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def documents(corpus, batch_bytes=1 << 20):
    """(file, first line from 1, text or problem) of every document, read chunk by chunk as the workers do."""
    out, before = [], {}
    for chunk in iter_chunks(corpus, batch_bytes):
        lines, docs = read_documents(chunk, corpus.format, corpus.text_field)
        for d in docs:
            out.append((chunk.file.rel, before.get(chunk.file.rel, 0) + d.line + 1, d.text or d.problem))
        before[chunk.file.rel] = before.get(chunk.file.rel, 0) + lines
    return out


@pytest.mark.parametrize("layout, expected", [
    ({"a.jsonl": "{}\n"}, "jsonl"),
    ({"x/a.json": "{}\n", "y/b.JSONL": "{}\n", "README": "read me"}, "jsonl"),
    ({"a.txt": "t\n"}, "text"),
    ({"AA/wiki_00": "{}\n", "AB/wiki_00": "{}\n"}, "wiki_zh"),
])
def test_auto_picks_by_suffix_or_the_wiki_zh_layout(tmp_path, layout, expected):
    for rel, data in layout.items():
        write(tmp_path / "c" / rel, data)
    assert detect_format(tmp_path / "c")[0] == expected


def test_auto_on_one_file_and_its_refusals(tmp_path):
    assert detect_format(write(tmp_path / "one.parquet", b"x")) == ("parquet", "the suffix .parquet")
    with pytest.raises(CorpusError, match=r"cannot tell its format from the suffix \.csv; pass --format"):
        detect_format(write(tmp_path / "one.csv", "a,b"))
    write(tmp_path / "mixed" / "a.jsonl", "{}\n")
    write(tmp_path / "mixed" / "b.txt", "t\n")
    with pytest.raises(CorpusError, match=r"mixed: holds 1 jsonl file\(s\) and 1 text file\(s\); pass --format"):
        detect_format(tmp_path / "mixed")
    write(tmp_path / "flat" / "notes", "x")
    with pytest.raises(CorpusError, match="no .jsonl, .json, .txt or .parquet file, and not the wiki_zh layout"):
        detect_format(tmp_path / "flat")


def test_files_at_any_depth_in_sorted_order_hidden_ones_left_out(tmp_path):
    for rel in ["b/2.jsonl", "a/10.jsonl", "a/9.jsonl", "c.jsonl", ".git/x.jsonl", "a/.hidden.jsonl", "notes.md"]:
        write(tmp_path / rel, json.dumps({"text": rel}) + "\n")
    corpus = open_corpus(tmp_path)
    assert corpus.format == "jsonl"
    assert [f.rel for f in corpus.files] == ["a/10.jsonl", "a/9.jsonl", "b/2.jsonl", "c.jsonl"]
    with pytest.raises(CorpusError, match="--files first: chooses files of the wiki_zh layout"):
        open_corpus(tmp_path, files="first")


def test_jsonl_reads_the_text_field_it_is_told(tmp_path):
    write(tmp_path / "c.jsonl", '{"body": "one", "text": "no"}\n\n{"body": "two"}\n{"text": "three"}\n')
    corpus = open_corpus(tmp_path / "c.jsonl", "jsonl", text_field="body")
    assert [f.rel for f in corpus.files] == ["c.jsonl"] and corpus.articles == 3
    assert documents(corpus) == [("c.jsonl", 1, "one"), ("c.jsonl", 3, "two"),
                                 ("c.jsonl", 4, 'no "body" field (--text-field names the one to read)')]


PARAGRAPHS = b"one\ntwo\n\nthree\n \t\n\n\nfour\r\nfive\r\n\r\nsix"


@pytest.mark.parametrize("batch_bytes", [1, 2, 5, 9, 1 << 20])
def test_text_paragraphs_whatever_the_cuts(tmp_path, batch_bytes):
    corpus = open_corpus(write(tmp_path / "c.txt", PARAGRAPHS))
    assert (corpus.format, corpus.files[0].lines, corpus.articles) == ("text", 11, 4)
    assert documents(corpus, batch_bytes) == [("c.txt", 1, "one\ntwo"), ("c.txt", 4, "three"),
                                              ("c.txt", 8, "four\r\nfive\r"), ("c.txt", 11, "six")]


@pytest.mark.parametrize("data", [b"", b"\n", b"a", b"a\n\nb", b"\n\na\nb\n\n\nc\n", b" \n \na\n \n", b"a\n\x0c\nb"])
@pytest.mark.parametrize("block_bytes", [1, 2, 1 << 20])
def test_text_scan_counts_the_paragraphs_the_reader_finds(tmp_path, data, block_bytes):
    path = write(tmp_path / "c.txt", data)
    found = 0 if not data.strip() else len(documents(open_corpus(path)))
    assert _scan(path, block_bytes, paragraphs=True)[2:] == (len(data.split(b"\n")) - data.endswith(b"\n")
                                                             if data else 0, found)


def test_text_that_is_not_utf8_is_a_bad_paragraph(tmp_path):
    corpus = open_corpus(write(tmp_path / "c.txt", b"fine\n\nbad \xff here\nmore\n\nfine again\n"))
    assert [d[2] for d in documents(corpus)] == [
        "fine", "not UTF-8 text (invalid start byte at byte 4 of the paragraph)", "fine again"]


def parquet(path, texts, column="text", row_group_size=None, **columns):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({column: pa.array(texts, pa.string()), **columns}), path, row_group_size=row_group_size)
    return path


@pytest.mark.parametrize("batch_bytes", [1, 30, 1 << 20])
def test_parquet_rows_in_order_across_row_groups_and_files(tmp_path, batch_bytes):
    texts = [f"row {i} " + "字" * i for i in range(25)]
    parquet(tmp_path / "c" / "part-0.parquet", texts[:20], row_group_size=7, id=list(range(20)))
    parquet(tmp_path / "c" / "part-1.parquet", [*texts[20:], None])
    corpus = open_corpus(tmp_path / "c")
    assert (corpus.format, [f.lines for f in corpus.files], corpus.articles) == ("parquet", [20, 6], 26)
    got = documents(corpus, batch_bytes)
    assert [t for _, _, t in got] == [*texts, "text is null"]
    assert got[-1][:2] == ("part-1.parquet", 6)
    assert sum(chunk.size for chunk in iter_chunks(corpus, batch_bytes)) == corpus.size


def test_parquet_column_missing_or_not_text_is_named(tmp_path):
    path = parquet(tmp_path / "c.parquet", ["a"], column="content", n=[1])
    with pytest.raises(CorpusError, match=r"c.parquet: no column 'text' \(its columns: content, n\); pass --text"):
        open_corpus(path)
    with pytest.raises(CorpusError, match="column 'n' holds int64, not strings"):
        open_corpus(path, text_field="n")
    with pytest.raises(CorpusError, match="not a readable Parquet file"):
        open_corpus(write(tmp_path / "junk.parquet", b"not parquet"))
