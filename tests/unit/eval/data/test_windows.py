"""Windows of both modes, built streaming, against direct reference loops."""

import random

import numpy as np
import pytest
from port import seed_windows

from npueval.eval.data.windows import WindowMaker

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
