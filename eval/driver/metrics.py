"""The numbers of a run, reduced from per-window sums (docs/design.md, "Metrics").

Everything is a sum in float64 (math.fsum, so the order blocks arrive in cannot change a bit),
never a mean of means, with one documented exception: `seed_ppl`, the port's number (its
readme's "Loss 16.5"), exp of the mean over the port's batches of each batch's mean loss; and
for stride data sets `guide_ppl`, the number Hugging Face's perplexity guide prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LossMetrics:
    nll_sum: float  # Σ NLL over every scored token, nats
    scored_tokens: int
    windows: int
    mean_ce: float  # nats per token
    perplexity: float
    seed_ppl: float  # the port's batch-mean perplexity
    seed_batches: int
    scored_bytes: int | None = None  # UTF-8 bytes of text the scored tokens cover, where the data set records them
    scored_words: int | None = None  # lm-eval's words of the documents (rolling data sets)
    guide_ppl: float | None = None  # Hugging Face's perplexity guide's number (stride data sets)

    @property
    def bits_per_byte(self) -> float | None:
        """Σ NLL / (Σ bytes · ln 2): lm-evaluation-harness's unit for rolling perplexity."""
        if not self.scored_bytes:
            return None
        return self.nll_sum / (self.scored_bytes * math.log(2))

    @property
    def byte_perplexity(self) -> float | None:
        """exp(Σ NLL / Σ bytes) = 2 ** bits_per_byte."""
        return math.exp(self.nll_sum / self.scored_bytes) if self.scored_bytes else None

    @property
    def word_perplexity(self) -> float | None:
        """exp(Σ NLL / Σ words): lm-evaluation-harness's word_perplexity, its words per document."""
        return math.exp(self.nll_sum / self.scored_words) if self.scored_words else None


def reduce_loss(window_ids: np.ndarray, nll_sums: np.ndarray, n_scored: np.ndarray, pieces: np.ndarray,
                batch_size: int, scored_bytes: np.ndarray | None = None, scored_words: np.ndarray | None = None,
                with_context: np.ndarray | None = None) -> LossMetrics:
    """Per-window sums (any order) → the run's loss metrics; `scored_bytes` and `scored_words`, per
    window, add the bytes the scored tokens cover (bits per byte) and the words (word
    perplexity); `with_context`, per window, the Hugging Face guide's number (`guide_perplexity`).

    `seed_ppl` batches windows as the port does: per piece, `batch_size` consecutive windows in
    stored (window_id) order; a short last batch counts over its real targets.
    """
    if not (window_ids.shape == nll_sums.shape == n_scored.shape == pieces.shape):
        raise ValueError("window_ids, nll_sums, n_scored and pieces must have one entry per window")
    order = None
    if not is_increasing(window_ids):  # blocks read back in order come in order: no copies then
        if np.unique(window_ids).size != window_ids.size:
            raise ValueError("a window was counted twice")
        order = np.argsort(window_ids, kind="stable")
        nll_sums, n_scored, pieces = nll_sums[order], n_scored[order], pieces[order]
    sums = nll_sums.astype(np.float64, copy=False)
    counts = n_scored.astype(np.int64, copy=False)
    nll_sum = math.fsum(sums)  # exact; from the array, not a list of 0.7 M floats at wiki_zh size
    tokens = int(counts.sum())
    mean_ce = nll_sum / tokens if tokens else float("nan")

    batch_means = []
    for piece in np.unique(pieces):
        in_piece = np.flatnonzero(pieces == piece)
        for start in range(0, in_piece.size, batch_size):
            rows = in_piece[start: start + batch_size]
            batch_tokens = int(counts[rows].sum())
            if batch_tokens:
                batch_means.append(math.fsum(sums[rows].tolist()) / batch_tokens)
    seed_ppl = math.exp(math.fsum(batch_means) / len(batch_means)) if batch_means else float("nan")
    def total(column: np.ndarray | None) -> int | None:
        return None if column is None else int(column.astype(np.int64, copy=False).sum())

    guide = None
    if with_context is not None:
        with_context = with_context if order is None else with_context[order]
        guide = guide_perplexity(sums, counts, with_context)
    return LossMetrics(nll_sum, tokens, int(window_ids.size), mean_ce, math.exp(mean_ce) if tokens else float("nan"),
                       seed_ppl, len(batch_means), total(scored_bytes), total(scored_words), guide)


def guide_perplexity(nll_sums: np.ndarray, n_scored: np.ndarray, with_context: np.ndarray) -> float:
    """The number Hugging Face's "Perplexity of fixed-length models" guide prints, window by
    window as it computes it: the model's mean loss over a window's labels, times
    `num_valid_tokens - batch_size` (its labels less one for the shift), summed, over the sum of
    those weights. Its labels are the window's new tokens; where the window has context the
    shift takes none of them away, so the weight is one less than the tokens scored; the first
    window (no context) scores all its labels but the first, and the weight is exact. A second
    deliberate mean of means, beside seed_ppl: it is that guide's number."""
    weights = n_scored.astype(np.int64) - with_context.astype(np.int64)
    scored = n_scored > 0
    means = np.zeros(nll_sums.shape[0], dtype=np.float64)
    means[scored] = nll_sums[scored] / n_scored[scored]
    total_weight = int(weights[scored].sum())
    return math.exp(math.fsum((means * weights)[scored]) / total_weight) if total_weight > 0 else float("nan")


def is_increasing(ids: np.ndarray) -> bool:
    """Strictly increasing: in window order, each window once."""
    return bool(np.all(ids[1:] > ids[:-1]))


def drop_last_rows(pieces: np.ndarray, batch_size: int) -> np.ndarray:
    """`run --drop-last`: a mask that keeps, per piece, all but the last (count mod batch_size) rows
    (pieces given in stored order), as the port drops each piece's incomplete last batch."""
    keep = np.ones(pieces.shape[0], dtype=bool)
    for piece in np.unique(pieces):
        rows = np.flatnonzero(pieces == piece)
        extra = rows.size % batch_size
        if extra:
            keep[rows[-extra:]] = False
    return keep


@dataclass(frozen=True)
class Throughput:
    eval_s: float
    samples_per_s: float
    tokens_per_s: float
    device_fps: float  # Σ over devices of ais_bench's 1000·B / mean execute ms
    scaling_efficiency: float  # samples/s on N devices ÷ (N · 1000 · B / device_ms)
    host_overhead: float  # (N · eval_s − Σ device_s) / Σ device_s


def throughput(windows: int, scored_tokens: int, eval_s: float, batch_size: int,
               device_mean_ms: list[float], device_seconds: list[float]) -> Throughput:
    """`device_mean_ms` and `device_seconds`: one entry per device (mean execute ms per batch,
    and the device's total pure inference time)."""
    n = len(device_mean_ms)
    fps = [1000 * batch_size / ms for ms in device_mean_ms if ms > 0]
    total_device_s = math.fsum(device_seconds)
    samples = windows / eval_s if eval_s > 0 else float("nan")
    mean_ms = math.fsum(device_mean_ms) / n if n else float("nan")
    ideal = n * 1000 * batch_size / mean_ms if n and mean_ms > 0 else float("nan")
    return Throughput(
        eval_s=eval_s,
        samples_per_s=samples,
        tokens_per_s=scored_tokens / eval_s if eval_s > 0 else float("nan"),
        device_fps=math.fsum(fps),
        scaling_efficiency=samples / ideal if math.isfinite(ideal) and ideal > 0 else float("nan"),
        host_overhead=(n * eval_s - total_device_s) / total_device_s if total_device_s > 0 else float("nan"),
    )
