"""One block on one device: per-window sums over exactly the scored positions."""

import time

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
    before = time.time()
    result = Evaluator(SimulatedBackend(B, L, device_ms=1)).evaluate(7, ids, score_from, n_valid, window_ids)
    # the device's first call began and its last ended within the call, at least device_s apart
    assert before <= result.device_start <= result.device_end - result.device_s + 1e-3 <= time.time() + 1e-3
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


class CountingBackend(SimulatedBackend):
    """The simulated backend, counting the calls of each kind."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = {"nll": 0, "nll_many": 0}

    def nll(self, input_ids):
        self.calls["nll"] += 1
        return super().nll(input_ids)

    def nll_many(self, batches):
        self.calls["nll_many"] += 1
        return super().nll_many(batches)


class Reference:
    """A host model whose NLL differs a little from the simulated one's, so the check has errors to find.
    Its batch (3) is not the device's: the check hands it the device's batches in pieces it takes."""

    batch_size = 3

    def nll(self, input_ids):
        from npueval.actors.simulated import simulated_nll

        assert input_ids.shape[0] <= self.batch_size
        return simulated_nll(input_ids) * (1 + 1e-3 * (input_ids[:, 1:] % 7))

    def close(self):
        pass


@pytest.mark.parametrize("rows", [1, 4, 7, 30])
def test_pipeline_on_and_off_give_the_same_bits(rows):
    L, B = 16, 4
    rng = np.random.default_rng(10 + rows)
    ids = rng.integers(0, 21128, (rows, L))
    score_from = rng.integers(1, L // 2, rows)
    n_valid = np.maximum(score_from + 1, rng.integers(L // 2, L + 1, rows))
    results, backends = {}, {}
    for pipeline in (True, False):
        backends[pipeline] = CountingBackend(B, L, device_ms=1)
        evaluator = Evaluator(backends[pipeline], reference=Reference(), check_batches=3, pipeline=pipeline)
        results[pipeline] = evaluator.evaluate(7, ids, score_from, n_valid, np.arange(rows))
    on, off = results[True], results[False]
    assert on.nll_sum == off.nll_sum
    assert on.window_nll.tobytes() == off.window_nll.tobytes()
    assert on.window_scored.tobytes() == off.window_scored.tobytes()
    assert (on.batches, on.windows, on.scored_tokens, on.device_s) == (off.batches, off.windows, off.scored_tokens,
                                                                       off.device_s)
    assert on.check == off.check and on.check.batches == min(3, on.batches) and on.check.max_rel > 0
    assert backends[True].calls == {"nll": 0, "nll_many": 1}  # the whole block in one call
    assert backends[False].calls == {"nll": on.batches, "nll_many": 0}


def test_the_check_covers_the_first_batches_across_blocks():
    """--check-batches counts batches of the evaluator, not of a block: 3 = a block of 2, then 1 of the next."""
    L, B = 8, 2
    ids = np.arange(4 * L).reshape(4, L) % 50
    ones, full = np.ones(4, np.int64), np.full(4, L)
    for pipeline in (True, False):
        evaluator = Evaluator(SimulatedBackend(B, L), reference=Reference(), check_batches=3, pipeline=pipeline)
        checks = [evaluator.evaluate(b, ids, ones, full, np.arange(4)).check for b in range(3)]
        assert [c.batches if c else 0 for c in checks] == [2, 1, 0]


class ShortBackend(SimulatedBackend):
    """A device whose pipeline call loses its last batch's output."""

    def nll_many(self, batches):
        return super().nll_many(batches)[:-1]


def test_a_pipeline_call_that_returns_too_few_outputs_is_an_error_not_a_sum():
    ids = np.arange(20 * 16, dtype=np.int64).reshape(20, 16) % 97
    evaluator = Evaluator(ShortBackend(batch_size=4, seq_len=16))
    with pytest.raises(ValueError):
        evaluator.evaluate(0, ids, np.ones(20, np.int16), np.full(20, 16, np.int16), np.arange(20))


class AbortingBackend(SimulatedBackend):
    """A backend whose nll_many would end the process on error (as ais_bench's infer_pipeline):
    it records what the call marker holds while it runs."""

    aborts_on_error = True

    def __init__(self, *args, marker=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.marker, self.seen = marker, []

    def nll_many(self, batches):
        self.seen.append(self.marker.path.read_text())
        return super().nll_many(batches)


def test_a_call_that_ends_the_process_on_error_is_noted_while_it_runs(tmp_path):
    import json

    from npueval.actors.node_files import CallMarker

    marker = CallMarker.for_actor("actor-1", tmp_path)
    backend = AbortingBackend(4, 16, marker=marker)
    ids = np.ones((6, 16), dtype=np.int64)
    Evaluator(backend, device="npu:2", marker=marker).evaluate(9, ids, np.ones(6), np.full(6, 16), np.arange(6))
    assert [json.loads(s) for s in backend.seen] == [{"block": 9, "call": "ais_bench infer_pipeline",
                                                      "device": "npu:2"}]
    assert not marker.path.exists()  # the call returned: nothing to tell
    plain = CountingBackend(4, 16)  # a backend that raises its errors: no note
    Evaluator(plain, marker=marker).evaluate(1, ids, np.ones(6), np.full(6, 16), np.arange(6))
    assert not marker.path.exists() and plain.calls["nll_many"] == 1
