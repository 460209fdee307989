"""`npueval prepare` end to end against a direct re-implementation of the port."""

import json
import random

import pyarrow.parquet as pq
import pytest
from port import port_windows
from textgen import WikiTextGen, hard_text, write_wiki_corpus
from vocabs import small_vocab_tokens

from npueval.core.errors import CorpusError, DatasetError, UserError
from npueval.eval.data.dataset import schema
from npueval.eval.data.prepare import PrepareConfig, prepare


def read_rows(out):
    tables = [pq.read_table(out / s["name"]) for s in json.loads((out / "manifest.json").read_text())["shards"]]
    rows = []
    for t in tables:
        d = t.to_pydict()
        rows += [dict(zip(d, vals)) for vals in zip(*d.values())]
    return rows


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Three folders of two files each; wiki-like articles, some short, some full of odd text."""
    root = tmp_path_factory.mktemp("wiki_zh")
    gen = WikiTextGen(small_vocab_tokens(), seed=3)
    rng = random.Random(3)
    words = [t for t in small_vocab_tokens() if not t.startswith("[")]

    def text():
        r = rng.random()
        if r < 0.15:
            return "短" * rng.randint(1, 140)  # around --min-length
        if r < 0.3:
            return hard_text(rng, words, max_parts=400)
        return gen.article()

    write_wiki_corpus(root, [[[text() for _ in range(rng.randint(20, 60))] for _ in range(2)] for _ in range(3)])
    return root


def config(corpus, vocab_path, out, **kw):
    kw.setdefault("workers", 0)  # worker processes are exercised where a test asks for them
    return PrepareConfig(corpus_dir=corpus, vocab=vocab_path, out=out, **kw)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("files", ["first", "all"])
@pytest.mark.parametrize("workers", [0, 2])
def test_seed_mode_equals_the_port(corpus, vocab_path, tmp_path, shuffle, files, workers, monkeypatch):
    import npueval.eval.data.prepare as prepare_module

    monkeypatch.setattr(prepare_module, "BATCH_BYTES", 20_000)  # many batches, in and out of order
    kw = dict(n_ctx=64, stride=96, num_pieces=7)
    out = tmp_path / "data"
    result = prepare(config(corpus, vocab_path, out, shuffle=shuffle, files=files, rows_per_shard=50,
                            workers=workers, **kw))
    expected = port_windows(str(corpus), str(vocab_path), shuffle=shuffle, files=files, **kw)
    rows = read_rows(out)
    assert len(expected) > 100
    assert [(r["piece"], r["input_ids"]) for r in rows] == expected
    assert [r["window_id"] for r in rows] == list(range(len(rows)))
    assert all(r["score_from"] == 1 and r["n_valid"] == 64 for r in rows)
    m = result.manifest.to_json()  # the file's keys, as users read them
    assert m["windows"] == len(expected) and m["scored_tokens"] == len(expected) * 63
    assert m["tokens"] == len(expected) * 64


def test_port_defaults_on_the_fixture(corpus, vocab_path, tmp_path):
    out = tmp_path / "data"
    prepare(config(corpus, vocab_path, out))
    expected = port_windows(str(corpus), str(vocab_path))
    assert [(r["piece"], r["input_ids"]) for r in read_rows(out)] == expected


def test_sliding_mode_scores_every_stream_token_but_the_first(corpus, vocab_path, tmp_path):
    out = tmp_path / "data"
    m = prepare(config(corpus, vocab_path, out, mode="sliding", n_ctx=64, stride=16, num_pieces=5)).manifest.to_json()
    rows = read_rows(out)
    pieces_with_tokens = len({r["piece"] for r in rows})
    assert m["scored_tokens"] == m["stream_tokens"] - pieces_with_tokens
    assert sum(r["n_valid"] - r["score_from"] for r in rows) == m["scored_tokens"]
    short = [r for r in rows if r["n_valid"] < 64]
    assert short and all(r["input_ids"][r["n_valid"]:] == [0] * (64 - r["n_valid"]) for r in short)


def test_schema_and_manifest(corpus, vocab_path, tmp_path):
    out = tmp_path / "data"
    m = prepare(config(corpus, vocab_path, out, n_ctx=64, stride=96, rows_per_shard=40)).manifest.to_json()
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == m
    for key in ("format_version", "mode", "n_ctx", "stride", "num_pieces", "min_length", "shuffle", "files",
                "vocab_sha256", "articles_total", "articles_kept", "articles_dropped", "windows", "tokens",
                "scored_tokens", "shards"):
        assert key in m, key
    non_blank = sum(1 for f in ("AA", "AB", "AC") for ln in (corpus / f / "wiki_00").open() if ln.strip())
    assert m["articles_kept"] + m["articles_dropped"] == m["articles_total"] == non_blank
    assert 0 < m["articles_dropped"] < m["articles_total"]
    assert [f["path"] for f in m["files"]] == ["AA/wiki_00", "AB/wiki_00", "AC/wiki_00"]
    first = 0
    for shard in m["shards"]:
        table = pq.read_table(out / shard["name"])
        assert table.schema == schema(64)
        assert table.num_rows == shard["rows"] <= 40
        ids = table.column("window_id").to_numpy()
        assert (shard["first_window_id"], shard["last_window_id"]) == (first, first + shard["rows"] - 1)
        assert ids.tolist() == list(range(first, first + shard["rows"]))
        first += shard["rows"]
    assert first == m["windows"]
    assert {p.name for p in out.iterdir()} == {"manifest.json"} | {s["name"] for s in m["shards"]}


def test_doc_id_is_the_article_of_the_first_scored_token(tmp_path, vocab_path):
    texts = ["\u4e00" * 200, "\u4e01" * 10, "\u4e02" * 300]  # the middle one is dropped
    write_wiki_corpus(tmp_path / "c", [[texts]])
    prepare(config(tmp_path / "c", vocab_path, tmp_path / "o", mode="sliding", n_ctx=100, stride=50, num_pieces=1))
    rows = read_rows(tmp_path / "o")
    first_tokens = {0: "\u4e00", 2: "\u4e02"}
    from npueval.core.vocab import load_vocab

    vocab = load_vocab(vocab_path).token_to_id
    for r in rows:
        t = r["input_ids"][r["score_from"]]
        if t in (vocab["[MASK]"], vocab["[CLS]"]):
            continue
        assert t == vocab[first_tokens[r["doc_id"]]]
    assert {r["doc_id"] for r in rows} == {0, 2}


def test_same_inputs_again_is_a_no_op(corpus, vocab_path, tmp_path):
    out = tmp_path / "data"
    first = prepare(config(corpus, vocab_path, out, n_ctx=64, stride=96))
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = prepare(config(corpus, vocab_path, out, n_ctx=64, stride=96))
    assert again.reused and not first.reused
    assert again.manifest == first.manifest
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamp


def test_other_data_set_in_out_needs_force(corpus, vocab_path, tmp_path):
    out = tmp_path / "data"
    prepare(config(corpus, vocab_path, out, n_ctx=64, stride=96))
    with pytest.raises(DatasetError, match=r"--out .*data: holds another data set.*--force"):
        prepare(config(corpus, vocab_path, out, n_ctx=32, stride=96))
    m = prepare(config(corpus, vocab_path, out, n_ctx=32, stride=96, force=True)).manifest.to_json()
    assert m["n_ctx"] == 32 and json.loads((out / "manifest.json").read_text())["n_ctx"] == 32


def test_out_holding_other_files_needs_force(corpus, vocab_path, tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not an npueval data set"):
        prepare(config(corpus, vocab_path, out))
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("workers", [0, 2])
def test_a_failing_prepare_leaves_nothing_that_looks_complete(tmp_path, vocab_path, workers):
    texts = ["\u4e00" * 300] * 30
    write_wiki_corpus(tmp_path / "c", [[texts]])
    bad = tmp_path / "c" / "AA" / "wiki_00"
    bad.write_text(bad.read_text() + "{not json\n")
    with pytest.raises(CorpusError, match=r"wiki_00:31: malformed JSON"):
        prepare(config(tmp_path / "c", vocab_path, tmp_path / "out", n_ctx=32, rows_per_shard=2, workers=workers))
    assert list(tmp_path.iterdir()) == [tmp_path / "c"]


def test_skip_bad_lines_counts_them_and_keeps_positions(tmp_path, vocab_path):
    write_wiki_corpus(tmp_path / "c", [[["\u4e00" * 300] * 4]])
    path = tmp_path / "c" / "AA" / "wiki_00"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "{bad\n" + '{"title": "no text"}\n' + "".join(lines[1:]))
    m = prepare(config(tmp_path / "c", vocab_path, tmp_path / "o", skip_bad_lines=True, num_pieces=2,
                       n_ctx=32)).manifest.to_json()
    assert (m["articles_total"], m["bad_lines"], m["articles_kept"], m["articles_dropped"]) == (6, 2, 4, 2)
    pieces = {r["piece"] for r in read_rows(tmp_path / "o")}
    assert pieces == {0, 1}  # 6 positions → 3 per piece; each piece keeps two good articles


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(mode="window"), "--mode 'window'"),
        (dict(mode="sliding", stride=512), "--stride 512: in sliding mode it must be less than --n-ctx"),
        (dict(n_ctx=1), "--n-ctx 1"),
        (dict(stride=0), "--stride 0"),
        (dict(num_pieces=0), "--num-pieces 0"),
        (dict(rows_per_shard=0), "--rows-per-shard 0"),
        (dict(workers=-1), "--workers -1"),
        (dict(mode="sliding", shuffle=True), "--shuffle .* --mode seed"),
    ],
)
def test_bad_flags(tmp_path, vocab_path, kw, message):
    with pytest.raises(UserError, match=message):
        config(tmp_path, vocab_path, tmp_path / "o", **kw).for_tokenizer(classic=True)


def test_defaults_are_the_ports_for_vocab_txt_and_one_sliding_stream_for_tokenizer_json():
    def defaults(classic, **kw):
        c = PrepareConfig("c", "v", "o", **kw).for_tokenizer(classic)
        return c.mode, c.stride, c.num_pieces, c.min_length

    assert defaults(True) == ("seed", 768, 100, 128)
    assert defaults(True, mode="sliding", n_ctx=512) == ("sliding", 256, 100, 128)
    assert defaults(False, n_ctx=1024) == ("sliding", 512, 1, 0)
    assert defaults(False, stride=100, num_pieces=3, min_length=5) == ("sliding", 100, 3, 5)
    with pytest.raises(UserError, match="--mode seed: the port's protocol, for GPT2-Chinese's vocab.txt"):
        defaults(False, mode="seed")


def test_spawned_workers_give_the_same_shards(corpus, vocab_path, tmp_path, monkeypatch):
    """Inside a Ray driver (or off Linux) the workers are spawned and build their own tokenizer."""
    import npueval.eval.data.batches as batches

    monkeypatch.setattr(batches, "_ray_running", lambda: True)
    spawned = prepare(config(corpus, vocab_path, tmp_path / "spawned", workers=2, n_ctx=64, stride=96)).manifest
    here = prepare(config(corpus, vocab_path, tmp_path / "here", workers=0, n_ctx=64, stride=96)).manifest
    assert [s.sha256 for s in spawned.shards] == [s.sha256 for s in here.shards]


def test_a_file_that_shrinks_after_the_scan_is_named_and_nothing_is_written(corpus, vocab_path, tmp_path, monkeypatch):
    import shutil

    import npueval.eval.data.corpus as corpus_module

    root = tmp_path / "wiki"
    shutil.copytree(corpus, root)
    scan = corpus_module.scan_files

    def scan_then_truncate(corpus_dir, paths, *args):
        files = scan(corpus_dir, paths, *args)
        victim = files[-1].path
        data = victim.read_bytes()
        victim.write_bytes(data[: data.index(b"\n", len(data) // 2) + 1])  # its last lines gone while prepare runs
        return files

    monkeypatch.setattr(corpus_module, "scan_files", scan_then_truncate)
    out = tmp_path / "out"
    with pytest.raises(CorpusError, match=r"changed while prepare read it"):
        prepare(config(root, vocab_path, out, workers=0))
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))


def test_min_length_counts_characters_before_cleaning(vocab_path, tmp_path):
    """The port's rule: len(text) > min_length on the text as read (newlines as " [SEP] "), before
    the tokenizer removes zero-width spaces and the like."""
    from textgen import write_wiki_corpus

    kept = "\u200b" * 200 + "中文"  # 202 characters, 2 once cleaned
    dropped = "中" * 100 + "\u200e" * 28  # 128 characters: not more than 128
    write_wiki_corpus(tmp_path / "wiki", [[[kept, dropped, "文" * 600]]])
    m = prepare(config(tmp_path / "wiki", vocab_path, tmp_path / "out", mode="sliding", n_ctx=8, stride=4)).manifest
    assert (m.articles_kept, m.articles_dropped) == (2, 1)
    assert m.stream_tokens == (1 + 2 + 1) + (1 + 600 + 1)  # [MASK] ids [CLS] of each kept article


def test_characters_cleaning_removes_at_window_article_and_sep_boundaries_equal_the_port(vocab_path, tmp_path):
    """Articles dense with zero-width spaces, direction marks and the like (at their starts and
    ends, beside every newline, i.e. [SEP]), windows of 8 every 5 tokens: each window boundary
    falls beside such characters somewhere, and the windows are the port's."""
    from textgen import REMOVED_IN_WIKI, write_wiki_corpus

    rng = random.Random(17)
    chars = [c for c, _ in REMOVED_IN_WIKI]
    words = [t for t in small_vocab_tokens() if not t.startswith("[")]

    def article():
        lines = ["".join(rng.choice(chars) + rng.choice(words) for _ in range(rng.randint(40, 90)))
                 for _ in range(rng.randint(1, 4))]
        return rng.choice(chars) + (rng.choice(chars) + "\n" + rng.choice(chars)).join(lines) + rng.choice(chars)

    write_wiki_corpus(tmp_path / "wiki", [[[article() for _ in range(30)]], [[article() for _ in range(30)]]])
    out = tmp_path / "data"
    prepare(config(tmp_path / "wiki", vocab_path, out, n_ctx=8, stride=5, num_pieces=3, min_length=20))
    expected = port_windows(str(tmp_path / "wiki"), str(vocab_path), n_ctx=8, stride=5, num_pieces=3, min_length=20)
    assert len(expected) > 500
    assert [(r["piece"], r["input_ids"]) for r in read_rows(out)] == expected
