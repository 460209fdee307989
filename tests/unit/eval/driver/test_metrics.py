"""Reduction of per-window sums against direct references (token-level numpy, the port's loop)."""

import math

import numpy as np
import pytest

from npueval.eval.driver.metrics import drop_last_rows, reduce_loss, throughput


def windows(seed=0, n=23, L=9, pieces=(0, 0, 0, 1, 1, 2)):
    rng = np.random.default_rng(seed)
    per_token = [rng.gamma(2.0, 1.5, size=rng.integers(1, L)) for _ in range(n)]
    piece = np.sort(rng.choice(pieces, size=n))
    return per_token, piece


def test_mean_ce_is_sum_over_tokens_and_order_does_not_matter():
    per_token, piece = windows()
    ids = np.arange(len(per_token))
    sums = np.array([t.sum() for t in per_token])
    counts = np.array([t.size for t in per_token])
    m = reduce_loss(ids, sums, counts, piece, batch_size=4)
    every = np.concatenate(per_token)
    assert m.scored_tokens == every.size and m.windows == len(per_token)
    assert m.mean_ce == pytest.approx(every.mean(), rel=1e-12)
    assert m.perplexity == pytest.approx(math.exp(every.mean()), rel=1e-12)
    shuffled = np.random.default_rng(1).permutation(len(ids))
    again = reduce_loss(ids[shuffled], sums[shuffled], counts[shuffled], piece[shuffled], batch_size=4)
    assert again == m  # bit for bit: fsum in window order


def test_bits_per_byte_is_lm_evaluation_harness_formula_over_the_token_bytes():
    """bits per byte = −Σ log p / (Σ bytes · ln 2); byte perplexity = exp(−Σ log p / Σ bytes)."""
    per_token, piece = windows(seed=4)
    rng = np.random.default_rng(4)
    token_bytes = [rng.integers(0, 5, size=t.size) for t in per_token]  # 0: BOS, EOS
    ids = np.arange(len(per_token))
    m = reduce_loss(ids, np.array([t.sum() for t in per_token]), np.array([t.size for t in per_token]), piece, 4,
                    np.array([b.sum() for b in token_bytes]))
    nats, n_bytes = np.concatenate(per_token).sum(), np.concatenate(token_bytes).sum()
    assert m.scored_bytes == n_bytes
    assert m.bits_per_byte == pytest.approx(nats / n_bytes / math.log(2), rel=1e-12)
    assert m.byte_perplexity == pytest.approx(2 ** m.bits_per_byte, rel=1e-12)
    without = reduce_loss(ids, np.array([t.sum() for t in per_token]), np.array([t.size for t in per_token]), piece, 4)
    assert (without.scored_bytes, without.bits_per_byte, without.byte_perplexity) == (None, None, None)


def test_seed_ppl_is_the_ports_mean_of_batch_means():
    per_token, piece = windows(seed=2)
    B = 3
    # The port: per piece, batches of B consecutive windows; each batch's mean loss; exp of the mean.
    batch_means = []
    for p in np.unique(piece):
        rows = [per_token[i] for i in np.flatnonzero(piece == p)]
        for start in range(0, len(rows), B):
            batch_means.append(np.concatenate(rows[start:start + B]).mean())
    expected = math.exp(np.mean(batch_means))
    ids = np.arange(len(per_token))
    m = reduce_loss(ids, np.array([t.sum() for t in per_token]), np.array([t.size for t in per_token]), piece, B)
    assert m.seed_ppl == pytest.approx(expected, rel=1e-12) and m.seed_batches == len(batch_means)


def test_with_equal_batches_seed_ppl_equals_perplexity():
    rng = np.random.default_rng(3)
    per_token = [rng.gamma(2.0, 1.5, size=7) for _ in range(12)]
    piece = np.repeat([0, 1], 6)
    m = reduce_loss(np.arange(12), np.array([t.sum() for t in per_token]), np.full(12, 7), piece, batch_size=3)
    assert m.seed_ppl == pytest.approx(m.perplexity, rel=1e-12)


def test_a_window_counted_twice_is_refused():
    with pytest.raises(ValueError, match="counted twice"):
        reduce_loss(np.array([0, 1, 1]), np.ones(3), np.ones(3, int), np.zeros(3, int), 4)


def test_drop_last_drops_each_pieces_incomplete_batch():
    pieces = np.array([0] * 5 + [1] * 4 + [2] * 2)
    keep = drop_last_rows(pieces, 4)
    assert keep.tolist() == [True] * 4 + [False] + [True] * 4 + [False, False]


def test_throughput_formulas():
    t = throughput(windows=800, scored_tokens=800 * 511, eval_s=10.0, batch_size=8,
                   device_mean_ms=[40.0, 50.0], device_seconds=[4.0, 5.0])
    assert t.samples_per_s == 80.0 and t.tokens_per_s == 80.0 * 511
    assert t.device_fps == pytest.approx(1000 * 8 / 40 + 1000 * 8 / 50)
    assert t.scaling_efficiency == pytest.approx(80.0 / (2 * 1000 * 8 / 45.0))
    assert t.host_overhead == pytest.approx((2 * 10.0 - 9.0) / 9.0)


def test_word_and_guide_perplexity_from_per_window_sums_in_any_order():
    """word_perplexity: lm-eval's exp(Σ NLL / Σ words). guide_ppl: the Hugging Face guide's loop,
    written out: each window's mean loss over its labels, times its labels less one."""
    per_token, piece = windows(seed=4)
    n = len(per_token)
    ids = np.arange(n)
    sums = np.array([t.sum() for t in per_token])
    counts = np.array([t.size for t in per_token])
    words = np.arange(n) % 3
    with_context = np.arange(n) > 0  # the stream's first window has none
    m = reduce_loss(ids, sums, counts, piece, 4, scored_words=words, with_context=with_context)
    every = np.concatenate(per_token)
    assert m.scored_words == words.sum()
    assert m.word_perplexity == pytest.approx(math.exp(every.sum() / words.sum()), rel=1e-12)
    nll_sum = n_tokens = 0.0
    for k, t in enumerate(per_token):
        num_valid_tokens = t.size + 1 if k == 0 else t.size  # its labels: the first window's first is not predicted
        nll_sum += t.mean() * (num_valid_tokens - 1)
        n_tokens += num_valid_tokens - 1
    assert m.guide_ppl == pytest.approx(math.exp(nll_sum / n_tokens), rel=1e-12)
    assert m.guide_ppl != pytest.approx(m.perplexity, rel=1e-6)  # it is not the exact number
    shuffled = np.random.default_rng(2).permutation(n)
    again = reduce_loss(ids[shuffled], sums[shuffled], counts[shuffled], piece[shuffled], 4,
                        scored_words=words[shuffled], with_context=with_context[shuffled])
    assert again == m
    plain = reduce_loss(ids, sums, counts, piece, 4)
    assert (plain.word_perplexity, plain.guide_ppl, plain.scored_words) == (None, None, None)
