"""From finished blocks to results.json, windows.parquet, result.txt and the summary table."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npueval.actors.evaluator import BlockResult, CheckStats
from npueval.actors.worker import DeviceInfo
from npueval.core.errors import RunError, counted

from .blocks import WindowIndex
from .metrics import LossMetrics, is_increasing, reduce_loss, throughput
from .results_file import Check, DeviceRow, NonfiniteWindow, Results, RunCheck, Speed


@dataclass(frozen=True)
class Collected:
    """Every finished block's per-window sums, concatenated in block order.

    Which device scored a window is a small code into `sources` (node id, device name), not two
    strings per window: at wiki_zh's 0.7 M windows the strings alone would hold 50 MB."""

    window_ids: np.ndarray
    nll: np.ndarray
    scored: np.ndarray
    source: np.ndarray  # int32 (n,): index into sources
    sources: tuple[tuple[str, str], ...]

    def node(self, i: int) -> str:
        return self.sources[self.source[i]][0]

    def device(self, i: int) -> str:
        return self.sources[self.source[i]][1]


def collect(blocks: list[BlockResult], expected: np.ndarray) -> Collected:
    """Concatenate in block order, and prove that each expected window was counted exactly once."""
    window_ids = np.concatenate([b.window_ids for b in blocks]) if blocks else np.zeros(0, np.int64)
    same = window_ids.size == expected.size and (
        np.array_equal(window_ids, expected) or np.array_equal(np.sort(window_ids), np.sort(expected)))
    if not same:
        missing = np.setdiff1d(expected, window_ids)
        raise RunError(
            f"the finished blocks hold {window_ids.size} windows, the run needs {expected.size} "
            f"({missing.size} missing, {window_ids.size - np.unique(window_ids).size} counted twice)"
        )
    sources = tuple(sorted({(b.node_id, b.device) for b in blocks}))
    code = {pair: k for k, pair in enumerate(sources)}
    return Collected(
        window_ids=window_ids,
        nll=np.concatenate([b.window_nll for b in blocks]),
        scored=np.concatenate([b.window_scored for b in blocks]),
        source=np.repeat(np.array([code[(b.node_id, b.device)] for b in blocks], dtype=np.int32),
                         [b.windows for b in blocks]),
        sources=sources,
    )


def check_finite(block: BlockResult) -> None:
    """A block with a NaN or Inf window loss ends the run (--on-nonfinite fail), named with its device."""
    bad = ~np.isfinite(block.window_nll)
    if bad.any():
        raise RunError(
            f"block {block.block_id} (windows {block.window_ids.min()}–{block.window_ids.max()}) on {block.device} "
            f"of node {block.node_id[:8]}: {int(bad.sum())} window(s) with a non-finite loss (first: window "
            f"{int(block.window_ids[bad][0])}, {block.window_nll[bad][0]}); check that device, or pass "
            "--on-nonfinite skip to leave such windows out and count them; the finished blocks are saved, "
            "continue with --resume"
        )


def nonfinite(collected: Collected) -> list[NonfiniteWindow]:
    """The windows whose loss is NaN or Inf, each with the device that returned it."""
    return [NonfiniteWindow(int(collected.window_ids[i]), collected.node(i), collected.device(i))
            for i in np.flatnonzero(~np.isfinite(collected.nll))]


def finite_only(collected: Collected) -> Collected:
    keep = np.isfinite(collected.nll)
    if keep.all():
        return collected
    return Collected(collected.window_ids[keep], collected.nll[keep], collected.scored[keep],
                     collected.source[keep], collected.sources)


def loss(collected: Collected, index: WindowIndex, batch_size: int) -> LossMetrics:
    def of_windows(column: np.ndarray | None) -> np.ndarray | None:
        return None if column is None else column[collected.window_ids]

    return reduce_loss(collected.window_ids, collected.nll, collected.scored, index.piece[collected.window_ids],
                       batch_size, of_windows(index.scored_bytes), of_windows(index.scored_words),
                       of_windows(index.with_context))


def per_device(blocks: list[BlockResult], batch_size: int, devices: list[DeviceInfo] = ()) -> list[DeviceRow]:
    """One row per device: every device of `devices` (the run's actors, idle ones included) and
    every device a block was evaluated on (earlier, resumed blocks included)."""
    grouped: dict[tuple[str, str], list[BlockResult]] = defaultdict(list)
    api = {(d.node, d.device): d.ais_bench_api for d in devices}
    for d in devices:
        grouped.setdefault((d.node, d.device), [])
    for b in blocks:
        grouped[(b.node_id, b.device)].append(b)
    rows = []
    for (node, device), mine in sorted(grouped.items()):
        batches = sum(b.batches for b in mine)
        device_s = math.fsum(b.device_s for b in mine)
        check = CheckStats.merge([b.check for b in mine])
        rows.append(DeviceRow(
            node=node, device=device, windows=sum(b.windows for b in mine), batches=batches, device_s=device_s,
            fps=batch_size * batches / device_s if device_s > 0 else None, ais_bench_api=api.get((node, device)),
            check=None if check is None else Check(check.batches, check.tokens, check.max_abs, check.max_rel),
        ))
    return rows


def run_check(against: Path | None, devices: list[DeviceRow]) -> RunCheck | None:
    """--check-against over every device's checked batches; None where it was not asked for."""
    if against is None:
        return None
    checks = [d.check for d in devices if d.check is not None and d.check.batches]
    return RunCheck(str(against), sum(c.batches for c in checks), sum(c.tokens for c in checks),
                    max((c.max_abs_err for c in checks), default=None),
                    max((c.max_rel_err for c in checks), default=None))


def speed(fresh: list[BlockResult], eval_s: float, batch_size: int) -> Speed:
    """Rates over this command's blocks (a resumed run's earlier blocks have no eval_s here)."""
    devices = per_device(fresh, batch_size)
    t = throughput(
        windows=sum(b.windows for b in fresh),
        scored_tokens=sum(b.scored_tokens for b in fresh),
        eval_s=eval_s,
        batch_size=batch_size,
        device_mean_ms=[1000 * d.device_s / d.batches for d in devices if d.batches],
        device_seconds=[d.device_s for d in devices if d.batches],
    )
    return Speed(eval_s=eval_s, samples_per_s=finite(t.samples_per_s), tokens_per_s=finite(t.tokens_per_s),
                 device_fps_sum=finite(t.device_fps), host_overhead=finite(t.host_overhead))


def windows_table(collected: Collected, index: WindowIndex):
    import pyarrow as pa

    ids, nll, scored, source = collected.window_ids, collected.nll, collected.scored, collected.source
    if not is_increasing(ids):  # blocks in order are windows in order: no copies then
        order = np.argsort(ids, kind="stable")
        ids, nll, scored, source = ids[order], nll[order], scored[order], source[order]
    # Every window from 0 on (no --limit, --drop-last or skipped window): the index as it is.
    rows = slice(0, ids.size) if ids.size and ids[-1] == ids.size - 1 and ids[0] == 0 else ids
    source = pa.array(source)

    def names(k: int) -> pa.DictionaryArray:  # dictionary-encoded: a code per window, each name once
        return pa.DictionaryArray.from_arrays(source, pa.array([pair[k] for pair in collected.sources], pa.string()))

    columns = {
        "window_id": ids,
        "piece": index.piece[rows],
        "doc_id": index.doc_id[rows],
        "nll_sum": nll,
        "n_scored": scored,
        "node": names(0),
        "device": names(1),
    }
    if index.scored_bytes is not None:
        columns["scored_bytes"] = index.scored_bytes[rows]
    if index.scored_words is not None:
        columns["scored_words"] = index.scored_words[rows]
    return pa.table(columns)


def result_txt(results: Results) -> str:
    """The port's number where the port prints it, for drop-in comparison."""
    return (f"seed_ppl {fmt(results.seed_ppl)}\nppl {fmt(results.ppl)}\nmean_ce {fmt(results.mean_ce)}\n"
            f"tokens {results.tokens}\nwindows {results.windows}\n"
            + (f"bits_per_byte {fmt(results.bits_per_byte)}\nbyte_perplexity {fmt(results.byte_perplexity)}\n"
               f"bytes {results.bytes}\n" if results.bytes else "")
            + (f"word_perplexity {fmt(results.word_perplexity)}\nwords {results.words}\n" if results.words else "")
            + (f"guide_ppl {fmt(results.guide_ppl)}\n" if results.guide_ppl is not None else ""))


def summary_table(results: Results) -> str:
    r, speed = results, results.speed
    devices = counted(r.devices_used, "device")
    if r.devices_started and r.devices_started > r.devices_used:
        devices = (f"{r.devices_used} of {r.devices_started} devices (the others were up after the last block had "
                   "gone out)")
    lines = [
        f"npueval run: {counted(r.windows, 'window')}, {counted(r.tokens, 'scored token')}, backend {r.backend}, "
        f"{devices}",
        "",
        f"  mean cross-entropy   {fmt(r.mean_ce)} nats/token",
        f"  perplexity           {fmt(r.ppl)}",
        f"  seed_ppl (the port)  {fmt(r.seed_ppl)}",
        *([f"  bits per byte        {fmt(r.bits_per_byte)} (byte perplexity {fmt(r.byte_perplexity)}, "
           f"over {r.bytes} bytes of text)"] if r.bytes else []),
        *([f"  word perplexity      {fmt(r.word_perplexity)} (lm-eval's, over {counted(r.words, 'word')})"]
          if r.words else []),
        *([f"  guide_ppl            {fmt(r.guide_ppl)} (Hugging Face's perplexity guide)"]
          if r.guide_ppl is not None else []),
        f"  throughput           {fmt(speed.samples_per_s, 1)} samples/s, {fmt(speed.tokens_per_s, 0)} "
        f"tokens/s over {speed.eval_s:.1f} s",
        f"  device FPS (sum)     {fmt(speed.device_fps_sum, 1)}",
        f"  host overhead        {fmt(None if speed.host_overhead is None else 100 * speed.host_overhead, 1)}% "
        "of device time",
    ]
    if r.windows_dropped:
        lines.append(f"  dropped (--drop-last) {counted(r.windows_dropped, 'window')}")
    if r.retries:
        lines.append(f"  retries              {r.retries}")
    if r.timeouts:
        lines.append(f"  timeouts             {len(r.timeouts)} (--block-timeout): "
                     + ", ".join(sorted({t.device for t in r.timeouts})))
    if r.windows_nonfinite:
        lines.append(f"  non-finite, skipped  {counted(r.windows_nonfinite, 'window')} (--on-nonfinite skip)")
    if r.fallback:
        lines.append(f"  fallback             {r.fallback.from_} → {r.fallback.to}: {r.fallback.reason}")
    if r.check is not None:
        lines.append(f"  check                {_check_line(r.check)}")
    checked = r.check is not None or any(d.check for d in r.per_device)  # (a file of before RunCheck)
    header = "  node          device    windows  batches  device s      FPS"
    lines += ["", header + ("  check max rel err" if checked else "")]
    for d in r.per_device:
        check = "not checked" if d.check is None else f"{d.check.max_rel_err:.2e}"
        lines.append((f"  {d.node[:12]:<12}  {d.device:<8} {d.windows:>8} {d.batches:>8} "
                      f"{d.device_s:>9.2f} {fmt(d.fps, 1):>8}" + (f"  {check}" if checked else "")).rstrip())
    return "\n".join(lines)


def _check_line(check: RunCheck) -> str:
    if not check.batches:
        return (f"NOT DONE: no batch was compared with {check.against} (--check-against), so nothing is "
                "known of the devices' numbers against it")
    return (f"{counted(check.batches, 'batch', 'batches')} ({counted(check.tokens, 'token')}) against "
            f"{check.against}: largest error {check.max_abs_err:.3g} nats, {check.max_rel_err:.2e} relative")


def finite(x: float | None) -> float | None:
    """JSON has no NaN: a rate over nothing is null."""
    return x if x is not None and math.isfinite(x) else None


def fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"
