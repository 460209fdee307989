"""`npueval report OUT [OTHER] [--plot FILE]`: a results folder as a person reads it.

One run: where it came from, the summary table, and how the per-window loss is spread (from
windows.parquet). Two runs: their numbers side by side, whether they evaluated the same model
and data, and, over the windows both evaluated, how far their per-window losses are apart
(e.g. the OM on the chip against the ONNX on CPU). Each run's phases and how busy its devices
were (eval/timeline.py). The plot shows per-device throughput, the distribution of per-window
loss with the headline numbers in the title, and each run's per-device timeline.
"""

from __future__ import annotations

import functools
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from npueval.core.contracts import NewerFormat
from npueval.core.errors import UserError, counted, not_a_folder
from npueval.eval.driver.results import fmt, summary_table
from npueval.eval.driver.results_file import RESULTS, Results

from .timeline import Timeline, describe_time, draw, load_timeline


@dataclass(frozen=True)
class RunReport:
    folder: Path
    results: Results = field(repr=False)
    window_ids: np.ndarray = field(repr=False)
    nll_sum: np.ndarray = field(repr=False)
    n_scored: np.ndarray = field(repr=False)
    doc_ids: np.ndarray = field(repr=False)
    timeline: Timeline | None = field(default=None, repr=False)

    @property
    def window_loss(self) -> np.ndarray:
        """Each window's mean NLL per scored token (nats); windows with nothing scored left out."""
        scored = self.n_scored > 0
        return self.nll_sum[scored] / self.n_scored[scored]

    @property
    def label(self) -> str:
        return self.folder.name or str(self.folder)


def load_run(folder: str | Path, name: str = "OUT") -> RunReport:
    """The results folder `folder`; `name` (OUT or OTHER, the argument it came from) in errors."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    results_path, windows_path = folder / RESULTS, folder / "windows.parquet"
    resume = f"`npueval run --resume --out {shlex.quote(str(folder))}`"  # a command to paste: the path quoted
    if not folder.is_dir():
        raise UserError(f"{name} {folder}: {not_a_folder(folder)}; give a results folder of `npueval run`")
    if not results_path.is_file():
        hint = (f"it holds finished blocks: finish the run with {resume} (and its other flags)"
                if (folder / "blocks").is_dir() else "give a results folder of `npueval run`")
        raise UserError(f"{name} {folder}: no results.json; {hint}")
    try:
        results = Results.read(results_path)
        table = pq.read_table(windows_path, columns=["window_id", "doc_id", "nll_sum", "n_scored"])
    except NewerFormat as exc:
        raise UserError(f"{results_path}: {exc}") from None
    except FileNotFoundError:
        raise UserError(f"{windows_path}: missing; rerun with {resume} to write it again") from None
    except (ValueError, OSError) as exc:  # bad JSON or UTF-8, a field of the wrong type, pyarrow.ArrowInvalid
        raise UserError(f"{name} {folder}: results.json or windows.parquet is unreadable ({exc}); rerun with "
                        "--resume") from None
    return RunReport(
        folder=folder,
        results=results,
        window_ids=table.column("window_id").to_numpy(),
        nll_sum=table.column("nll_sum").to_numpy().astype(np.float64),
        n_scored=table.column("n_scored").to_numpy().astype(np.int64),
        doc_ids=table.column("doc_id").to_numpy(),
        timeline=load_timeline(folder, results.phases),
    )


# ------------------------------------------------------------------------------------------
def describe(run: RunReport) -> str:
    r = run.results
    loss = run.window_loss
    lines = [
        f"{run.folder}",
        f"  model    {r.model}",
        f"  data     {r.data}",
        f"  run      {r.started_at} → {r.ended_at}, wall {fmt(r.wall_s, 1)} s",
        "",
        summary_table(r),
    ]
    if loss.size:
        q = np.percentile(loss, [0, 10, 50, 90, 100])
        worst = np.argsort(-(run.nll_sum / np.maximum(run.n_scored, 1)))[:3]
        lines += [
            "",
            f"  per-window loss (nats/token) over {counted(loss.size, 'window')}: min {q[0]:.3f}  p10 {q[1]:.3f}  "
            f"median {q[2]:.3f}  p90 {q[3]:.3f}  max {q[4]:.3f}",
            "  hardest windows: " + ", ".join(
                f"window {run.window_ids[i]} (article {run.doc_ids[i]}) {run.nll_sum[i] / max(run.n_scored[i], 1):.3f}"
                for i in worst
            ),
        ]
    time_lines = describe_time(r.phases, run.timeline, r.startup)
    return "\n".join(lines + (["", *time_lines] if time_lines else []))


#: (results.json key, label, digits) of the side-by-side table.
_COMPARED = (
    ("mean_ce", "mean cross-entropy", 4),
    ("ppl", "perplexity", 4),
    ("seed_ppl", "seed_ppl (the port)", 4),
    ("bits_per_byte", "bits per byte", 4),
    ("byte_perplexity", "byte perplexity", 4),
    ("word_perplexity", "word perplexity", 4),
    ("guide_ppl", "guide_ppl (HF guide)", 4),
    ("windows", "windows", 0),
    ("tokens", "scored tokens", 0),
    ("samples_per_s", "samples/s", 1),
    ("tokens_per_s", "tokens/s", 0),
    ("device_fps_sum", "device FPS (sum)", 1),
    ("wall_s", "wall s", 1),
    ("retries", "retries", 0),
)
#: Rows of the table left out where neither run has the number (its data set's mode gives it).
_BY_MODE = {"byte_perplexity", "word_perplexity", "guide_ppl"}


def compare(a: RunReport, b: RunReport) -> str:
    """A and B side by side, and their per-window losses over the windows both evaluated."""
    ra, rb = a.results.to_json(), b.results.to_json()  # the table is by results.json's keys
    width = max(len(a.label), len(b.label), 12)
    lines = [f"  {'':<22} {'A':>{width}} {'B':>{width}}   B − A      B / A",
             f"  {'':<22} {a.label:>{width}} {b.label:>{width}}"]
    lines.append(f"  {'backend':<22} {ra['backend']:>{width}} {rb['backend']:>{width}}")
    for key, label, digits in _COMPARED:
        x, y = ra.get(key), rb.get(key)
        if x is None and y is None and key in _BY_MODE:
            continue
        diff = ratio = ""
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            diff = f"{y - x:+.{digits}f}"
            ratio = f"{y / x:.4f}" if x else ""
        lines.append(f"  {label:<22} {fmt(x, digits):>{width}} {fmt(y, digits):>{width}}   {diff:<10} {ratio}")
    lines += [
        "",
        f"  same model: {_same(ra, rb, 'model_manifest_sha256')}    "
        f"same data set: {_same(ra, rb, 'data_manifest_sha256')}",
    ]
    common, ia, ib = np.intersect1d(a.window_ids, b.window_ids, return_indices=True)
    if common.size == 0:
        lines.append("  no window in common: the per-window losses cannot be compared")
        return "\n".join(lines)
    scored = (a.n_scored[ia] == b.n_scored[ib]) & (a.n_scored[ia] > 0)
    la = a.nll_sum[ia][scored] / a.n_scored[ia][scored]
    lb = b.nll_sum[ib][scored] / b.n_scored[ib][scored]
    tokens = a.n_scored[ia][scored].sum()
    ce_a, ce_b = a.nll_sum[ia][scored].sum() / tokens, b.nll_sum[ib][scored].sum() / tokens
    gap = np.abs(lb - la)
    lines += [
        f"  over the {counted(int(scored.sum()), 'window')} both scored alike: mean cross-entropy A {ce_a:.6f}, "
        f"B {ce_b:.6f} (B − A {ce_b - ce_a:+.2e}); per-window |B − A| max {gap.max():.2e}, "
        f"mean {gap.mean():.2e} nats/token",
    ]
    if scored.sum() < max(a.window_ids.size, b.window_ids.size):
        lines.append(f"  A has {counted(a.window_ids.size, 'window')}, B {b.window_ids.size}: "
                     "the headline numbers above cover different windows")
    return "\n".join(lines)


def _same(ra: dict, rb: dict, key: str) -> str:
    x, y = ra.get(key), rb.get(key)
    if x is None or y is None:
        return "unknown (a bare model file)" if key == "model_manifest_sha256" else "unknown"
    return "yes" if x == y else "no"


# ------------------------------------------------------------------------------------------
def headline(r: Results) -> str:
    return (f"mean CE {fmt(r.mean_ce, 4)} nats · ppl {fmt(r.ppl, 3)} · seed_ppl {fmt(r.seed_ppl, 3)} · "
            + (f"{fmt(r.bits_per_byte, 4)} bits/byte · " if r.bits_per_byte is not None else "")
            + (f"word ppl {fmt(r.word_perplexity, 3)} · " if r.word_perplexity is not None else "")
            + (f"guide_ppl {fmt(r.guide_ppl, 3)} · " if r.guide_ppl is not None else "")
            + f"{counted(r.windows, 'window')} · {fmt(r.speed.tokens_per_s, 0)} tokens/s · {r.backend}")


#: The picture formats --plot writes, chosen by the file's suffix.
PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def check_plot_path(path: str | Path) -> Path:
    """--plot FILE, refused (before anything is read or drawn) where it cannot be written."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"--plot {path}: the folder {path.parent} does not exist")
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise UserError(f"--plot {path}: the suffix says the format; end the name in {', '.join(PLOT_SUFFIXES)}")
    return path


#: Families that cover Chinese, tried first for characters the default font lacks (a run labelled in Chinese).
_CJK_FAMILIES = ("noto sans cjk", "noto serif cjk", "source han", "wenquanyi", "droid sans fallback", "ar pl",
                 "sarasa", "microsoft yahei", "simhei", "simsun", "pingfang", "hiragino sans gb", "unifont")


@functools.cache
def _glyphs(path: str, face: int = 0) -> frozenset[int]:
    """The code points font file `path` (face `face` of a collection) has a glyph for; each file is
    read once a process."""
    from matplotlib.ft2font import FT2Font

    try:
        font = FT2Font(path, face_index=face) if face else FT2Font(path)
    except (OSError, RuntimeError, ValueError):  # a font file FreeType cannot read covers nothing
        return frozenset()
    return frozenset(code for code, glyph in font.get_charmap().items() if glyph)


@functools.cache
def _fallback_font(missing: frozenset[int]) -> tuple[str, frozenset[int]] | None:
    """The installed font family that has the most of the code points `missing` (the known CJK
    families first; the first that has them all is taken), and the code points the face matplotlib
    draws of it has; None where no installed font has any of them."""
    from matplotlib import font_manager

    families: dict[str, object] = {}
    for entry in font_manager.fontManager.ttflist:
        if "last resort" not in entry.name.lower():  # matplotlib's own: a box with the code point in it
            families.setdefault(entry.name, entry)  # a family's faces cover the same characters
    order = sorted(families.values(), key=lambda e: not any(name in e.name.lower() for name in _CJK_FAMILIES))
    best, most = None, 0
    for entry in order:
        n = len(missing & _glyphs(entry.fname, getattr(entry, "index", 0)))
        if n > most:
            best, most = entry, n
            if n == len(missing):
                break
    if best is None:
        return None
    path = font_manager.findfont(font_manager.FontProperties(family=[best.name]), fallback_to_default=False)
    return best.name, _glyphs(path, getattr(path, "face_index", 0))


def _fit_fonts(fig) -> None:
    """Draw no text of `fig` as boxes. Where a text has characters its font lacks (DejaVu Sans has no
    Chinese), the installed font that has them becomes its fallback (matplotlib takes each glyph from
    the first font of the family list that has it); a character no installed font has is written as
    its escape, `\\u7ef4`, so matplotlib has no glyph to warn about."""
    from matplotlib import font_manager
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        content = text.get_text()
        if content.isascii():  # every font matplotlib picks by default has ASCII
            continue
        path = font_manager.findfont(text.get_fontproperties())
        have = _glyphs(path, getattr(path, "face_index", 0))
        missing = frozenset(ord(c) for c in content if c != "\n" and ord(c) not in have)
        if not missing:
            continue
        fallback = _fallback_font(missing)
        if fallback is not None:
            text.set_fontfamily([*text.get_fontfamily(), fallback[0]])
            have = have | fallback[1]
        text.set_text("".join(c if c == "\n" or ord(c) in have else c.encode("ascii", "backslashreplace").decode()
                              for c in content))


def plot(runs: list[RunReport], path: str | Path) -> Path:
    """Per-device throughput bars and the per-window loss distribution, one colour per run; below
    them, each run's per-device timeline where it has one."""
    path = check_plot_path(path)
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display is needed or wanted
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'npueval[plot]' (or pip install matplotlib)") from None

    timed = [run for run in runs if run.timeline is not None]
    heights = [4.8] + [max(2.4, 1.6 + 0.16 * len(run.timeline.devices)) for run in timed]
    fig = plt.figure(figsize=(12, sum(heights)))
    grid = fig.add_gridspec(len(heights), 2, width_ratios=[1, 1.2], height_ratios=heights)
    bars, hist = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    for k, run in enumerate(timed):
        title = f"{'AB'[runs.index(run)]} {run.label}" if len(runs) > 1 else run.label
        draw(fig.add_subplot(grid[k + 1, :]), run.timeline, run.results.phases, title, run.results.startup)
    width = (0.8 if any(len(r.results.per_device) > 1 for r in runs) else 0.4) / len(runs)
    losses = [run.window_loss for run in runs]
    finite = np.concatenate([x[np.isfinite(x)] for x in losses]) if losses else np.zeros(0)
    edges = np.histogram_bin_edges(finite, bins=40) if finite.size else 10
    for k, run in enumerate(runs):
        devices = [d for d in run.results.per_device if d.windows]
        x = np.arange(len(devices)) + (k - (len(runs) - 1) / 2) * width
        fps = [d.fps or 0.0 for d in devices]
        label = f"{'AB'[k]} {run.label}" if len(runs) > 1 else None
        bars.bar_label(bars.bar(x, fps, width=width, label=label), fmt="%.1f", fontsize=8)
        if k == 0:
            one_node = len({d.node for d in devices}) == 1
            bars.set_xticks(np.arange(len(devices)), [d.device if one_node else f"{d.device}\n{d.node[:8]}"
                                                      for d in devices], fontsize=8)
        hist.hist(losses[k], bins=edges, alpha=0.6 if len(runs) > 1 else 0.9, label=label)
        mean_ce = run.results.mean_ce
        if mean_ce is not None and math.isfinite(mean_ce):
            hist.axvline(mean_ce, color=f"C{k}" if len(runs) > 1 else "black", linestyle="--", linewidth=1)
    bars.set_title("throughput per device")
    bars.set_ylabel("samples/s of device time")
    hist.set_title("per-window loss (dashed: mean cross-entropy)")
    hist.set_xlabel("nats per token")
    hist.set_ylabel("windows")
    if len(runs) > 1:
        bars.legend(fontsize=8)
        hist.legend(fontsize=8)
    fig.suptitle("\n".join((f"{'AB'[k]} {run.label}: " if len(runs) > 1 else "") + headline(run.results)
                           for k, run in enumerate(runs)),
                 fontsize=10)
    _fit_fonts(fig)  # before the layout, which measures the texts with their fonts
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
