"""Windows of both modes, built streaming, against direct reference loops."""

import random

import numpy as np
import pytest

from port import seed_windows
from npueval.eval.windows import WindowMaker


def stream_in_chunks(maker, piece, stream, rng, first_doc=0):
    """Feed `stream` as articles of random lengths; returns (windows, doc id of each token)."""
    out, docs, pos, doc = [], [], 0, first_doc
    while pos < len(stream):
        n = rng.randint(1, 900)
        chunk = np.asarray(stream[pos:pos + n], dtype=np.int32)
        out.extend(maker.add(piece, chunk, doc))
        docs.extend([doc] * len(chunk))
        pos += n
        doc += 1
    return out, docs


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n_ctx, stride", [(512, 768), (8, 12), (8, 8), (8, 3)])
def test_seed_equals_compare_loss_loop(seed, n_ctx, stride):
    rng = random.Random(seed)
    maker = WindowMaker("seed", n_ctx, stride)
    expected, got = [], []
    for piece in range(5):
        stream = [rng.randrange(1000) for _ in range(rng.choice([0, 1, n_ctx, n_ctx + 1, rng.randint(0, 6000)]))]
        expected += [(piece, w) for w in seed_windows(stream, n_ctx, stride)]
        windows, docs = stream_in_chunks(maker, piece, stream, rng)
        got += windows
    got += maker.finish()
    assert [(w.piece, w.ids.tolist()) for w in got] == expected
    assert all(w.score_from == 1 and w.n_valid == n_ctx for w in got)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n_ctx, stride", [(512, 256), (8, 4), (8, 1), (8, 7), (2, 1)])
def test_sliding_scores_every_token_but_the_first_exactly_once(seed, n_ctx, stride):
    rng = random.Random(seed)
    for length in [0, 1, 2, n_ctx - 1, n_ctx, n_ctx + 1, rng.randint(2, 5000)]:
        stream = [rng.randrange(1000) for _ in range(length)]
        maker = WindowMaker("sliding", n_ctx, stride)
        windows, docs = stream_in_chunks(maker, 0, stream, rng)
        windows += maker.finish()
        scored = []
        for k, w in enumerate(windows):
            start = k * stride
            assert w.ids.tolist() == stream[start:start + n_ctx]
            assert w.score_from == (1 if k == 0 else n_ctx - stride)
            assert w.score_from >= 1 and w.scored >= 1
            positions = range(start + w.score_from, start + w.n_valid)
            if k > 0:
                assert w.score_from >= n_ctx - stride  # context of at least L - s tokens
            assert w.doc_id == docs[start + w.score_from]
            scored.extend(positions)
        assert scored == list(range(1, length))


def test_pieces_do_not_share_windows():
    maker = WindowMaker("sliding", 4, 2)
    a = maker.add(0, np.arange(5, dtype=np.int32), 0)
    b = maker.add(1, np.arange(100, 103, dtype=np.int32), 1)
    rest = maker.finish()
    by_piece = {}
    for w in a + b + rest:
        by_piece.setdefault(w.piece, []).append(w.ids.tolist())
    assert by_piece == {0: [[0, 1, 2, 3], [2, 3, 4]], 1: [[100, 101, 102]]}
