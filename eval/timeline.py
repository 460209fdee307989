"""A run's timeline as `npueval report` shows it: each device's blocks over the run's time, from
OUT/timeline.parquet (eval/driver/timing.py), and the phases in results.json.

A block's bar runs from its device's first call to its last, on that device's host clock; where a
backend said nothing, from when the driver sent it to when it came back. What is not a bar in the
evaluation's span is time the device waited: for its start, for work, or for the others to end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from npueval.core.errors import UserError, counted
from npueval.eval.driver.results_file import DeviceStart, Phase
from npueval.eval.driver.timing import TIMELINE


@dataclass(frozen=True)
class Timeline:
    devices: tuple[str, ...]  # "npu:3", or "npu:3 on 4f1c2a9b" over several nodes; in the order drawn
    device: np.ndarray = field(repr=False)  # per block: its index in `devices`
    block_id: np.ndarray = field(repr=False)
    start: np.ndarray = field(repr=False)  # seconds from the run's start
    end: np.ndarray = field(repr=False)
    span: tuple[float, float]  # the evaluation: first block sent to last result

    def busy_share(self) -> np.ndarray:
        """Per device, the share of the evaluation's span it spent running blocks."""
        busy = np.bincount(self.device, weights=self.end - self.start, minlength=len(self.devices))
        return busy / max(self.span[1] - self.span[0], 1e-9)


def load_timeline(folder: Path, phases: tuple[Phase, ...]) -> Timeline | None:
    """OUT/timeline.parquet, or None where the run wrote none (an npueval before it, or no block
    evaluated by the last command)."""
    import pyarrow.parquet as pq

    path = folder / TIMELINE
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path).to_pydict()
    except (ValueError, OSError) as exc:  # pyarrow.ArrowInvalid
        raise UserError(f"{path}: unreadable ({exc}); rerun with --resume to write it again") from None
    if not table["block_id"]:
        return None
    one_node = len(set(table["node"])) == 1
    names = [d if one_node else f"{d} on {n[:8]}" for n, d in zip(table["node"], table["device"])]
    devices = tuple(sorted(set(names), key=_device_order))
    device_start, device_end = np.asarray(table["device_start_s"], float), np.asarray(table["device_end_s"], float)
    known = np.isfinite(device_start) & np.isfinite(device_end)
    start = np.where(known, device_start, np.asarray(table["sent_s"], float))
    end = np.where(known, device_end, np.asarray(table["returned_s"], float))
    evaluation = next((p for p in phases if p.name == "evaluation"), None)
    span = (evaluation.start_s, evaluation.end_s) if evaluation else (float(start.min()), float(end.max()))
    return Timeline(devices=devices, device=np.array([devices.index(n) for n in names], np.int64),
                    block_id=np.asarray(table["block_id"], np.int64), start=start, end=end, span=span)


def _device_order(name: str) -> tuple:
    """npu:2 before npu:10; by node, then by kind and number."""
    device, _, node = name.partition(" on ")
    kind, _, number = device.partition(":")
    return (node, kind, int(number) if number.isdigit() else -1, number)


def describe_time(phases: tuple[Phase, ...], timeline: Timeline | None,
                  startup: tuple[DeviceStart, ...] = ()) -> list[str]:
    """The phases, when the devices came up, and how busy they were during the evaluation."""
    lines = []
    if phases:
        lines.append("  phases (s from the start): " + ", ".join(
            f"{p.name} {p.start_s:.2f}–{p.end_s:.2f}" for p in phases))
    if startup:
        heard = np.array([d.heard_s for d in startup])
        opening = [d.open_s for d in startup if d.open_s is not None]
        last = startup[int(np.argmax(heard))]
        lines.append(f"  devices up (s from the start): first {heard.min():.2f}, median {np.median(heard):.2f}, last "
                     f"{heard.max():.2f} ({last.device})"
                     + (f"; opening a backend took {max(opening):.2f} s at most" if opening else ""))
    if timeline is not None:
        share, n = timeline.busy_share(), len(timeline.devices)
        least = int(np.argmin(share))
        lines.append(f"  devices busy {share.mean():.1%} of the evaluation ({timeline.span[1] - timeline.span[0]:.2f} "
                     f"s, {counted(len(timeline.block_id), 'block')} on {counted(n, 'device')})"
                     + (f"; least busy {timeline.devices[least]} {share[least]:.1%}" if n > 1 else ""))
    return lines


#: Phases drawn as shaded spans behind the bars (the evaluation is the bars themselves).
_SHADED = ("ray_start", "shards_verified", "model_shipped", "devices_ready", "reduce", "write", "ray_stop")


def draw(ax, timeline: Timeline, phases: tuple[Phase, ...], title: str,
         startup: tuple[DeviceStart, ...] = ()) -> None:
    """Each device a row, each block a bar (alternate shades so that neighbours stay apart), a
    hatched bar from its actor's creation to its backend being open, the phases around the
    evaluation shaded and named along the top."""
    import matplotlib.transforms as transforms

    rows = len(timeline.devices)
    one_node = len({d.node for d in startup}) <= 1
    for d in startup:
        name = d.device if one_node else f"{d.device} on {d.node[:8]}"
        ready = d.ready_s if d.ready_s is not None else d.heard_s
        if name in timeline.devices and ready > d.created_s:
            k = timeline.devices.index(name)
            ax.broken_barh([(d.created_s, ready - d.created_s)], (k - 0.25, 0.5), facecolors="none",
                           edgecolors="0.55", hatch="////", linewidth=0.5)
    for k in range(rows):
        mine = timeline.device == k
        order = np.argsort(timeline.start[mine])
        starts, ends = timeline.start[mine][order], timeline.end[mine][order]
        colours = ["C0" if j % 2 == 0 else "#7fb2de" for j in range(starts.size)]
        ax.broken_barh(list(zip(starts, ends - starts)), (k - 0.4, 0.8), facecolors=colours, linewidth=0)
    share = timeline.busy_share()
    top = transforms.blended_transform_factory(ax.transData, ax.transAxes)
    shown = [p for p in phases if p.name in _SHADED and p.end_s > p.start_s]
    for j, p in enumerate(shown):
        ax.axvspan(p.start_s, p.end_s, color="0.85", alpha=0.5, linewidth=0, zorder=0)
        ax.text((p.start_s + p.end_s) / 2, 1.01 + 0.045 * (j % 2), p.name.replace("_", " "), transform=top,
                ha="center", va="bottom", fontsize=7, color="0.3")
    ax.axvline(timeline.span[0], color="0.4", linewidth=0.8, linestyle=":")
    ax.axvline(timeline.span[1], color="0.4", linewidth=0.8, linestyle=":")
    labels = [f"{name}  {s:.0%}" for name, s in zip(timeline.devices, share)]
    step = max(1, rows // 32)  # at most 32 labels; the rows are all drawn
    ax.set_yticks(range(0, rows, step), labels[::step], fontsize=7 if rows > 8 else 8)
    ax.set_ylim(rows - 0.5, -0.5)
    ends = [timeline.end.max(), *(p.end_s for p in phases)]
    ax.set_xlim(0, max(ends) * 1.01)
    ax.set_xlabel("seconds from the run's start (hatched: the device starting; bars: blocks on it; gaps: it waited)")
    ax.set_title(f"{title}: devices busy {share.mean():.1%} of the evaluation", fontsize=9, pad=22)
