"""One block on one device: per-window sums over exactly the scored positions."""

import numpy as np
import pytest

from npueval.actors.evaluator import Evaluator, scored_mask
from npueval.actors.simulated import SimulatedBackend


def reference_window_sum(ids, score_from, n_valid):
    """Σ over positions score_from ≤ t < n_valid of the documented NLL of token t."""
    total = 0.0
    for t in range(score_from, n_valid):
        j = t - 1
        total += float(np.float32(1 + ((int(ids[j]) * 7919 + int(ids[j + 1]) * 104729 + j) % 9973) / 9973))
    return total


@pytest.mark.parametrize("rows", [1, 4, 7])
def test_block_sums_match_a_direct_loop(rows):
    L, B = 16, 4
    rng = np.random.default_rng(rows)
    ids = rng.integers(0, 21128, (rows, L))
    score_from = rng.integers(1, L // 2, rows)
    n_valid = np.maximum(score_from + 1, rng.integers(L // 2, L + 1, rows))
    window_ids = np.arange(100, 100 + rows)
    result = Evaluator(SimulatedBackend(B, L, device_ms=1)).evaluate(7, ids, score_from, n_valid, window_ids)
    expected = [reference_window_sum(ids[r], score_from[r], n_valid[r]) for r in range(rows)]
    np.testing.assert_allclose(result.window_nll, expected, rtol=1e-12)
    assert result.window_scored.tolist() == (n_valid - score_from).tolist()
    assert result.scored_tokens == int((n_valid - score_from).sum()) and result.windows == rows
    assert result.nll_sum == pytest.approx(sum(expected), rel=1e-12)
    assert result.batches == -(-rows // B) and result.block_id == 7
    assert result.device_s == pytest.approx(result.batches * 0.001)
    assert result.window_ids.tolist() == window_ids.tolist()


def test_scored_mask_for_seed_and_sliding_windows():
    mask = scored_mask(np.array([1, 3]), np.array([5, 4]), 5)
    assert mask.astype(int).tolist() == [[1, 1, 1, 1], [0, 0, 1, 0]]
