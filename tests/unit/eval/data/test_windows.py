"""Windows of both modes, built streaming, against direct reference loops."""

import random

import numpy as np
import pytest
from port import seed_windows

from npueval.eval.data.windows import RollingWindowMaker, WindowMaker, Windows

PAD = -7


def rows(blocks):
    """One (piece, ids without padding, score_from, n_valid, doc_id) per window."""
    out = []
    for b in blocks:
        assert b.ids.dtype == np.int32 and b.ids.shape == (len(b), b.ids.shape[1])
        for r in range(len(b)):
            n = int(b.n_valid[r])
            assert (b.ids[r, n:] == PAD).all()
            out.append((b.piece, b.ids[r, :n].tolist(), int(b.score_from[r]), n, int(b.doc_id[r])))
    return out


def stream_in_chunks(maker, piece, stream, rng, first_doc=0):
    """Feed `stream` as articles of random lengths; returns (windows, doc id of each token)."""
    out, docs, pos, doc = [], [], 0, first_doc
    while pos < len(stream):
        n = rng.randint(1, 900)
        chunk = np.asarray(stream[pos:pos + n], dtype=np.int32)
        out.extend(rows(maker.add(piece, chunk, np.full(len(chunk), doc))))
        docs.extend([doc] * len(chunk))
        pos += n
        doc += 1
    return out, docs


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n_ctx, stride", [(512, 768), (8, 12), (8, 8), (8, 3)])
def test_seed_equals_compare_loss_loop(seed, n_ctx, stride):
    rng = random.Random(seed)
    maker = WindowMaker("seed", n_ctx, stride, PAD)
    expected, got = [], []
    for piece in range(5):
        stream = [rng.randrange(1000) for _ in range(rng.choice([0, 1, n_ctx, n_ctx + 1, rng.randint(0, 6000)]))]
        expected += [(piece, w) for w in seed_windows(stream, n_ctx, stride)]
        windows, _docs = stream_in_chunks(maker, piece, stream, rng)
        got += windows
    got += rows(maker.finish())
    assert [(piece, ids) for piece, ids, *_ in got] == expected
    assert all(score_from == 1 and n_valid == n_ctx for _, _, score_from, n_valid, _ in got)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n_ctx, stride", [(512, 256), (8, 4), (8, 1), (8, 7), (2, 1)])
def test_sliding_scores_every_token_but_the_first_exactly_once(seed, n_ctx, stride):
    rng = random.Random(seed)
    for length in [0, 1, 2, n_ctx - 1, n_ctx, n_ctx + 1, rng.randint(2, 5000)]:
        stream = [rng.randrange(1000) for _ in range(length)]
        maker = WindowMaker("sliding", n_ctx, stride, PAD)
        windows, docs = stream_in_chunks(maker, 0, stream, rng)
        windows += rows(maker.finish())
        scored = []
        for k, (_, ids, score_from, n_valid, doc_id) in enumerate(windows):
            start = k * stride
            assert ids == stream[start:start + n_ctx]
            assert score_from == (1 if k == 0 else n_ctx - stride)
            assert score_from >= 1 and n_valid - score_from >= 1
            if k > 0:
                assert score_from >= n_ctx - stride  # context of at least L - s tokens
            assert doc_id == docs[start + score_from]
            scored.extend(range(start + score_from, start + n_valid))
        assert scored == list(range(1, length))


def test_pieces_do_not_share_windows():
    maker = WindowMaker("sliding", 4, 2, PAD)
    a = maker.add(0, np.arange(5, dtype=np.int32), np.zeros(5))
    b = maker.add(1, np.arange(100, 103, dtype=np.int32), np.ones(3))
    rest = maker.finish()
    by_piece = {}
    for piece, ids, *_ in rows(a + b + rest):
        by_piece.setdefault(piece, []).append(ids)
    assert by_piece == {0: [[0, 1, 2, 3], [2, 3, 4]], 1: [[100, 101, 102]]}


# -- rolling: lm-evaluation-harness's windows -------------------------------------------------

def _rolling_stream(lengths, rng, prefix=1):
    """The framed stream of documents of these token counts: each its prefix, then its ids."""
    docs = [rng.integers(3, 500, size=n).tolist() for n in lengths]
    ids = np.concatenate([np.array([prefix, *d], dtype=np.int32) for d in docs])
    doc_of = np.concatenate([np.full(len(d) + 1, k, dtype=np.int64) for k, d in enumerate(docs)])
    return docs, ids, doc_of


@pytest.mark.parametrize("chunk", [7, 64, 10_000])
def test_rolling_rows_are_lm_eval_windows_whatever_the_chunks(chunk):
    from rolling_reference import scored_rows

    L = 16
    rng = np.random.default_rng(0)
    lengths = [0, 1, L - 2, L - 1, L, L + 1, 2 * L - 2, 2 * L - 1, 2 * L, 5 * L + 3, 3, 40]
    docs, ids, doc_of = _rolling_stream(lengths, rng)
    words = np.zeros(ids.shape[0], dtype=np.int64)
    words[np.flatnonzero(np.diff(doc_of, prepend=-1))] = np.arange(len(docs)) + 100
    maker = RollingWindowMaker(L, pad_id=0)
    out = []
    for lo in range(0, ids.shape[0], chunk):
        out += maker.add(0, ids[lo:lo + chunk], doc_of[lo:lo + chunk], np.ones(min(chunk, ids.shape[0] - lo)),
                         words[lo:lo + chunk])
    out += maker.finish()
    got = Windows.concat(out)
    want = []
    for k, d in enumerate(docs):
        rows = scored_rows(d, 1, L - 1) or [([1], 1)]  # lm-eval makes no window of an empty document
        want += [(k, row, score_from) for row, score_from in rows]
    assert len(got) == len(want)
    for r, (doc, row, score_from) in enumerate(want):
        assert got.ids[r, :len(row)].tolist() == row and not got.ids[r, len(row):].any()
        assert (got.n_valid[r], got.score_from[r], got.doc_id[r]) == (len(row), score_from, doc)
    # every token of every document scored once; bytes over the scored ids, words on each first row
    assert got.scored.sum() == sum(lengths)
    assert got.scored_bytes.tolist() == got.scored.tolist()
    first_rows = np.flatnonzero(np.diff(got.doc_id, prepend=-1))
    assert got.scored_words[first_rows].tolist() == (np.arange(len(docs)) + 100).tolist()
    assert got.scored_words.sum() == (np.arange(len(docs)) + 100).sum()


def test_rolling_holds_about_one_row_of_a_long_document():
    L = 32
    rng = np.random.default_rng(1)
    _, ids, doc_of = _rolling_stream([50_000], rng)
    maker = RollingWindowMaker(L)
    made = 0
    for lo in range(0, ids.shape[0], 1000):
        made += sum(len(w) for w in maker.add(0, ids[lo:lo + 1000], doc_of[lo:lo + 1000]))
        assert maker._ids.shape[0] <= 1000 + L
    made += sum(len(w) for w in maker.finish())
    assert made == 1 + -(-(50_001 - L) // (L - 1))
