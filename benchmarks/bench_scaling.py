"""Scaling of `npueval run` over simulated NPUs: 1 to 32 devices on one node, and on 2 and 4 nodes.

The device is the simulated backend at the 310P3's measured speed (DESIGN.md, Contracts): each
model batch of B = 8 windows of 512 tokens sleeps `--device-ms` 42 ms. Everything else is the
real run path, through the library API `npueval.eval.driver.run.run(RunConfig.from_flags(...))`: the Parquet
shards are read by the driver, every block goes through Ray's object store to a `DeviceWorker`
actor, the actor computes the simulated NLL and masks it, and every finished block is saved to
OUT/blocks and reduced into results.json.

Definitions (DESIGN.md, Metrics):

- scaling efficiency = samples/s on N devices ÷ (N · 1000 · B / device_ms);
- host overhead = (N · eval_s − Σ device_s) / Σ device_s, over the devices that ran blocks.

Both come from results.json (`samples_per_s`, `host_overhead`) and are recomputed here from
`per_device`; the two must agree.

Protocol:

- Data: a synthetic prepared data set (random ids, seed mode: every window full, 511 scored
  tokens), written with `ShardWriter` and a manifest with the keys `npueval prepare` writes; kept
  in benchmarks/out/ for the next invocation. Each N evaluates the first
  N · `--blocks-per-device` · `--block-windows` windows (`--limit`), so every device gets the
  same number of blocks and every run lasts about the same time whatever N is.
- One Ray per configuration (`ray.init` with an "NPU" resource of N, or a
  `ray.cluster_utils.Cluster` of k nodes with N/k NPUs each, all on 127.0.0.1), then `run()`
  `--repeat` times against it (each call starts and stops its N actors; `eval_s` is from the
  first block sent to the last result reduced, so actor start-up is not in it). Medians.
- Host cost: (a) the CPU time of every process during `eval_s`, from /proc (the driver, the
  actors, raylet/GCS, the rest of the machine); (b) the actors' in-call host time per block
  (block wall_s − device_s − device_wait_s, from OUT/blocks); (c) runs at --device-ms 0, where the host is the
  only cost, on 1, 2 and 4 devices: their samples/s is the most the host can feed; (d) the
  driver's and the actor's per-block costs in this process, without Ray.

Run from the repository root, in the project's virtual environment (about 10 minutes on 2 cores):

    python benchmarks/bench_scaling.py
    python benchmarks/bench_scaling.py --repeat 5 --single 1,4,8,16,32 --multi 2x16,4x8

Writes benchmarks/out/bench_scaling.json (git-ignored) and the plot benchmarks/scaling.png.
matplotlib is a benchmark-only dependency (`pip install matplotlib`), not one of npueval's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
from common import N_CTX, OUT, REPO, block_host_s, make_data, start_ray, stop_ray

import npueval.actors.worker as worker_module
import npueval.eval.driver.run as run_module
from npueval.actors.evaluator import Evaluator
from npueval.actors.simulated import SimulatedBackend
from npueval.eval.data.manifest import DataManifest
from npueval.eval.driver.blocks import BlockReader, plan_blocks
from npueval.eval.driver.dispatch import Dispatcher
from npueval.eval.driver.run import RunConfig, run
from npueval.eval.driver.run_folder import RunFolder

log = logging.getLogger("bench_scaling")


# -- CPU accounting from /proc ------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _category(pid: int, cmdline: bytes) -> str:
    if pid == os.getpid():
        return "driver"
    if b"DeviceWorker" in cmdline:
        return "actors"
    if b"raylet" in cmdline or b"gcs_server" in cmdline:
        return "raylet+gcs"
    if b"ray" in cmdline:
        return "ray other"
    return "other"


def cpu_snapshot() -> dict:
    """CPU seconds so far of every process (by pid, with its category), and the machine's busy total."""
    procs = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        pid = int(name)
        procs[pid] = (_category(pid, cmdline), (int(fields[11]) + int(fields[12])) / _TICK)
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    busy = (sum(cpu[:8]) - cpu[3] - cpu[4]) / _TICK  # all but idle and iowait
    return {"procs": procs, "busy": busy}


def cpu_delta(before: dict, after: dict) -> dict:
    out = {"machine": after["busy"] - before["busy"]}
    for pid, (category, seconds) in after["procs"].items():
        start = before["procs"].get(pid, (category, 0.0))[1]
        out[category] = out.get(category, 0.0) + max(0.0, seconds - start)
    return out


# -- instrumenting the run path without changing it ---------------------------------------------

class _Probe:
    """What one run's driver did, filled by the wrappers below."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.cpu: dict = {}
        self.driver_cpu_s = self.driver_thread_s = 0.0
        self.read_s = self.on_result_s = 0.0
        self.sent_at: list[float] = []  # when the dispatch loop took each block to send it
        self.result_at: list[float] = []
        self.eval_start = self.eval_end = 0.0


PROBE = _Probe()
_original_evaluate = run_module._evaluate


def _probed_evaluate(*args, **kwargs):
    """run()'s `_evaluate` (whose clock is eval_s), with the CPU of every process around it."""
    before, p0, t0 = cpu_snapshot(), time.process_time(), time.thread_time()
    PROBE.eval_start = time.perf_counter()
    try:
        return _original_evaluate(*args, **kwargs)
    finally:
        PROBE.eval_end = time.perf_counter()
        PROBE.driver_cpu_s, PROBE.driver_thread_s = time.process_time() - p0, time.thread_time() - t0
        PROBE.cpu = cpu_delta(before, cpu_snapshot())


class _ProbedDispatcher(Dispatcher):
    """The same dispatcher; when each block is taken to be sent, and its `on_result` timed."""

    def run(self, blocks, on_result):
        def timed_blocks():
            for item in blocks:
                PROBE.sent_at.append(time.perf_counter())
                yield item

        def timed_result(result):
            t = time.perf_counter()
            PROBE.result_at.append(t)
            on_result(result)
            PROBE.on_result_s += time.perf_counter() - t

        return super().run(timed_blocks(), timed_result)


class _ProbedBlockReader(BlockReader):
    """The same reader, its time counted (in the prefetch thread, which may start before eval_s)."""

    def read(self, block):
        t = time.perf_counter()
        try:
            return super().read(block)
        finally:
            PROBE.read_s += time.perf_counter() - t


run_module._evaluate = _probed_evaluate
run_module.Dispatcher = _ProbedDispatcher
run_module.BlockReader = _ProbedBlockReader


# -- one measured run ---------------------------------------------------------------------------

def one_run(data: Path, out: Path, n: int, nodes: int, args, device_ms: float, limit: int,
            pipeline: bool = True, calls_at_once: int = worker_module.CALLS_AT_ONCE) -> dict:
    PROBE.reset()
    started = time.perf_counter()
    # calls_at_once 1 is the sequential actor of before (its second call waits in Ray's queue).
    results = run(RunConfig.from_flags(data=data, out=out, backend="simulated", devices=n, batch_size=args.batch_size,
                                       device_ms=device_ms, limit=limit, block_windows=args.block_windows, force=True,
                                       max_retries=0, pipeline=pipeline, calls_at_once=calls_at_once)).results.to_json()
    ended = time.perf_counter()
    per = [d for d in results["per_device"] if d["batches"]]
    eval_s = results["eval_s"]
    device_s = sum(d["device_s"] for d in per)
    batches = sum(d["batches"] for d in per)
    blocks = results["blocks"]
    ideal = n * 1000 * args.batch_size / device_ms if device_ms else None
    host = block_host_s(out)
    # When the last device got its first block, and how long after the median device's last result the run ended.
    first_round = PROBE.sent_at[n - 1] - PROBE.sent_at[0] if len(PROBE.sent_at) >= n else None
    cpu = PROBE.cpu
    # Steady state: the rate at which results arrive once every device has returned its first
    # block and before the queue runs dry (start-up stagger and tail left out).
    results_at = sorted(PROBE.result_at)
    k1, k2 = n, blocks - 2 * n
    steady = None
    if device_ms and k2 - k1 >= 4:
        steady = (k2 - k1) * args.block_windows / (results_at[k2] - results_at[k1]) / ideal
    row = {
        "n": n, "nodes": nodes, "device_ms": device_ms, "pipeline": pipeline, "calls_at_once": calls_at_once,
        "windows": results["windows"], "blocks": blocks,
        "batches": batches, "eval_s": eval_s, "wall_s": results["wall_s"],
        "samples_per_s": results["samples_per_s"],
        "samples_per_s_recomputed": results["windows"] / eval_s,
        "ideal_samples_per_s": ideal,
        "efficiency": results["samples_per_s"] / ideal if ideal else None,
        "host_overhead": results["host_overhead"],
        "host_overhead_recomputed": (len(per) * eval_s - device_s) / device_s if device_s else None,
        "devices_used": len(per), "nodes_used": len({d["node"] for d in per}),
        "blocks_per_device": sorted({round(d["batches"] * args.batch_size / args.block_windows) for d in per}),
        "first_round_s": first_round,
        "first_result_s": PROBE.result_at[0] - PROBE.eval_start if PROBE.result_at else None,
        # How far apart the devices finish: the time between the first and the last of the last N results.
        "end_spread_s": results_at[-1] - results_at[-n] if len(results_at) >= n else None,
        "steady_efficiency": steady,
        "setup_s": PROBE.eval_start - started, "after_s": ended - PROBE.eval_end,
        "mean_ce": results["mean_ce"],
        "driver_cpu_s": PROBE.driver_cpu_s, "driver_main_thread_s": PROBE.driver_thread_s,
        "driver_read_s": PROBE.read_s, "driver_on_result_s": PROBE.on_result_s,
        "actor_call_host_s": sum(host),
        "cpu_s": cpu,
        "cpu_busy_frac": cpu.get("machine", 0.0) / (eval_s * (os.cpu_count() or 1)),
    }
    return row


def median_row(rows: list[dict]) -> dict:
    med = dict(rows[0])
    for key, value in rows[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("n", "nodes", "device_ms"):
            values = [r[key] for r in rows if r[key] is not None]
            med[key] = statistics.median(values) if values else None
    med["cpu_s"] = {k: statistics.median(r["cpu_s"].get(k, 0.0) for r in rows) for k in rows[0]["cpu_s"]}
    med["blocks_per_device"] = sorted({k for r in rows for k in r["blocks_per_device"]})
    med["runs"] = len(rows)
    return med


def measure(data: Path, tmp: Path, nodes: int, per_node: int, args, device_ms: float, limit: int) -> list[dict]:
    """One Ray for the configuration; `--repeat` runs of each mode ((pipeline, calls at once), from
    --pipeline and --calls-at-once), the modes taking turns run by run so that all see the same
    machine. One median row per mode."""
    n = nodes * per_node
    label = f"{nodes}x{per_node}@{device_ms:g}ms"
    t0 = time.perf_counter()
    cluster = start_ray(nodes, per_node)
    rows = {mode: [] for mode in args.modes}
    try:
        for rep in range(args.warmup + args.repeat):
            for mode in args.modes:
                pipeline, calls = mode
                out = tmp / f"{label}-{rep}-{int(pipeline)}-{calls}"
                row = one_run(data, out, n, nodes, args, device_ms, limit, pipeline, calls)
                shutil.rmtree(out, ignore_errors=True)
                kept = rep >= args.warmup
                if kept:
                    rows[mode].append(row)
                eff = f"eff {row['efficiency']:.4f} overhead {row['host_overhead']:.4f} " if device_ms else ""
                print(f"  {label} {_calls(row)} run {rep}{'' if kept else ' (warm-up)'}: "
                      f"{row['samples_per_s']:.1f} samples/s {eff}eval_s {row['eval_s']:.2f} "
                      f"cpu busy {row['cpu_busy_frac']:.0%} driver cpu {row['driver_cpu_s']:.2f}s", flush=True)
                time.sleep(args.settle)  # let the stopped actors' processes go before the next run
    finally:
        stop_ray(cluster)
    meds = []
    for mode in args.modes:
        med = median_row(rows[mode])
        med["all_runs"] = rows[mode]
        med["config_s"] = time.perf_counter() - t0
        meds.append(med)
    return meds


def idle_actors(n: int, seconds: float = 5.0) -> dict:
    """CPU of n started DeviceWorker actors doing nothing (Ray's own background work), in cores."""
    from npueval.actors.worker import WorkerSpec, remote_workers

    cluster = start_ray(1, n)
    try:
        actors = remote_workers(WorkerSpec("simulated", batch_size=8, seq_len=N_CTX), n, 0)
        ray.get([a.describe.remote() for a in actors])
        time.sleep(2.0)
        before, t = cpu_snapshot(), time.perf_counter()
        time.sleep(seconds)
        delta, dt = cpu_delta(before, cpu_snapshot()), time.perf_counter() - t
        for a in actors:
            ray.kill(a)
    finally:
        stop_ray(cluster)
    return {"actors": n, "cores": {k: v / dt for k, v in delta.items()}}


# -- per-block host costs in this process, without Ray -------------------------------------------

def microbench(data: Path, args) -> dict:
    """Driver: BlockReader.read + RunFolder.save of one block; actor: Evaluator.evaluate at 0 ms, per batch."""
    import pickle

    manifest = DataManifest.read(data)
    keep = np.ones(manifest.windows, dtype=bool)
    reader = BlockReader(data, manifest, keep, None)
    blocks = plan_blocks(min(manifest.windows, 64 * args.block_windows), args.block_windows)
    reader.read(blocks[0])  # the shard's first read (parquet decode) is per shard, not per block
    t = time.perf_counter()
    rows = [reader.read(b) for b in blocks]
    read_ms = 1000 * (time.perf_counter() - t) / len(blocks)
    evaluator = Evaluator(SimulatedBackend(args.batch_size, N_CTX, 0.0))
    evaluator.evaluate(0, **vars(rows[0]))
    t = time.perf_counter()
    results = [evaluator.evaluate(b.block_id, **vars(r)) for b, r in zip(blocks, rows)]
    eval_ms = 1000 * (time.perf_counter() - t) / len(blocks)
    t = time.perf_counter()
    for r in rows:
        pickle.loads(pickle.dumps(r, protocol=5))
    pickle_ms = 1000 * (time.perf_counter() - t) / len(blocks)
    with tempfile.TemporaryDirectory() as d:
        folder = RunFolder(Path(d))
        folder.blocks.mkdir(parents=True)
        t = time.perf_counter()
        for r in results:
            folder.save(r)
        save_ms = 1000 * (time.perf_counter() - t) / len(blocks)
    sleeps = []
    for _ in range(50):
        t = time.perf_counter()
        time.sleep(args.device_ms / 1000)
        sleeps.append(time.perf_counter() - t - args.device_ms / 1000)
    batches = args.block_windows // args.batch_size
    return {"driver_read_ms_per_block": read_ms, "driver_save_ms_per_block": save_ms,
            "pickle_roundtrip_ms_per_block": pickle_ms, "actor_evaluate_ms_per_block": eval_ms,
            "actor_evaluate_ms_per_batch": eval_ms / batches,
            "sleep_overshoot_ms_idle": 1000 * statistics.median(sleeps)}


# -- reporting ----------------------------------------------------------------------------------

def _calls(row: dict) -> str:
    calls = "block (pipeline)" if row["pipeline"] else "per batch"
    return f"{calls}, {row.get('calls_at_once', 1)} at once"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def table(rows: list[dict], batch_size: int) -> str:
    lines = ["| N | nodes | device calls | samples/s | ideal samples/s | efficiency | host overhead | eval_s |"
             " steady-state efficiency | blocks/device | last device's first block, s | CPU busy (2 cores) |"
             " run() wall s |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['nodes']} | {_calls(r)} | {r['samples_per_s']:.1f} | {r['ideal_samples_per_s']:.1f} | "
            f"{100 * r['efficiency']:.2f}% | {100 * r['host_overhead']:.2f}% | {r['eval_s']:.2f} | "
            f"{_pct(r['steady_efficiency'])} | "
            f"{'/'.join(map(str, r['blocks_per_device']))} | {r['first_round_s']:.3f} | "
            f"{100 * r['cpu_busy_frac']:.0f}% | {r['wall_s']:.1f} |")
    return "\n".join(lines)


def host_table(rows: list[dict], batch_size: int) -> str:
    lines = ["| N (device_ms 0) | device calls | samples/s | batches/s | host ms/batch (2 cores) | CPU busy |"
             " driver | actors | raylet+gcs | ray other | other |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        per_batch = lambda k, r=r: 1000 * r["cpu_s"].get(k, 0.0) / r["batches"]  # noqa: E731
        bps = r["samples_per_s"] / batch_size
        lines.append(
            f"| {r['n']} | {_calls(r)} | {r['samples_per_s']:.0f} | {bps:.0f} | {per_batch('machine'):.2f} | "
            f"{100 * r['cpu_busy_frac']:.0f}% | {per_batch('driver'):.2f} | {per_batch('actors'):.2f} | "
            f"{per_batch('raylet+gcs'):.2f} | {per_batch('ray other'):.2f} | {per_batch('other'):.2f} |")
    return "\n".join(lines)


def cpu_table(rows: list[dict]) -> str:
    lines = ["| N | nodes | device calls | CPU ms/batch (all) | driver | actors | raylet+gcs | ray other | other |"
             " actor in-call host ms/batch | driver CPU ms/block (main thread) |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        per_batch = lambda k, r=r: 1000 * r["cpu_s"].get(k, 0.0) / r["batches"]  # noqa: E731
        lines.append(
            f"| {r['n']} | {r['nodes']} | {_calls(r)} | {per_batch('machine'):.2f} | {per_batch('driver'):.2f} | "
            f"{per_batch('actors'):.2f} | {per_batch('raylet+gcs'):.2f} | {per_batch('ray other'):.2f} | "
            f"{per_batch('other'):.2f} | {1000 * r['actor_call_host_s'] / r['batches']:.2f} | "
            f"{1000 * r['driver_cpu_s'] / r['blocks']:.2f} ({1000 * r['driver_main_thread_s'] / r['blocks']:.2f}) |")
    return "\n".join(lines)


def _plot_multi(ax, multi: list[dict], key: str) -> None:
    """The multi-node points of one panel, a marker per node count (percent of `key`)."""
    for nodes, marker in ((2, "s"), (4, "^"), (8, "D")):
        pts = [r for r in multi if r["nodes"] == nodes]
        if pts:
            ax.plot([r["n"] for r in pts], [100 * r[key] for r in pts], marker, ms=8, linestyle="--",
                    label=f"{nodes} nodes")


def plot(single: list[dict], multi: list[dict], path: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    # With --calls-at-once both: the first kind's runs only (run's own, 2 at once, by default).
    calls = args.modes[0][1]
    single = [r for r in single if r["calls_at_once"] == calls]
    multi = [r for r in multi if r["calls_at_once"] == calls]
    # With --pipeline both: the pipelined runs as the curve, the per-batch ones in grey beside them.
    baseline = [r for r in single if not r["pipeline"]] if any(r["pipeline"] for r in single) else []
    single = [r for r in single if r not in baseline]
    multi = [r for r in multi if r["pipeline"] or not baseline]
    ns = [r["n"] for r in single]
    if baseline:
        ax.plot([r["n"] for r in baseline], [100 * r["efficiency"] for r in baseline], "x--", color="grey",
                label="1 node, one device call per batch (--no-pipeline)")
        ax2.plot([r["n"] for r in baseline], [100 * r["host_overhead"] for r in baseline], "x--", color="grey",
                 label="1 node, --no-pipeline")
    ax.plot(ns, [100 * r["efficiency"] for r in single], "o-", label="1 node")
    steady = [(r["n"], 100 * r["steady_efficiency"]) for r in single if r["steady_efficiency"] is not None]
    if steady:
        ax.plot(*zip(*steady), "o:", mfc="none", color="C0", alpha=0.7, label="1 node, steady state (no start/tail)")
    _plot_multi(ax, multi, "efficiency")
    ax.axhline(95, color="grey", linestyle=":", label="goal 95%")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("simulated devices N")
    ax.set_ylabel("scaling efficiency, %")
    ax.set_title(f"npueval run, simulated 310P3 (B={args.batch_size}, {args.device_ms:g} ms/batch)", fontsize=10)
    lo = min(90.0, min(100 * r["efficiency"] for r in single + multi + baseline) - 1)
    ax.set_ylim(lo, 100.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")

    ax2.plot(ns, [100 * r["host_overhead"] for r in single], "o-", label="1 node")
    _plot_multi(ax2, multi, "host_overhead")
    ax2.axhline(2, color="grey", linestyle=":", label="goal 2%")
    ax2.set_xscale("log", base=2)
    ax2.set_xticks(ns, [str(n) for n in ns])
    ax2.set_xlabel("simulated devices N")
    ax2.set_ylabel("host overhead, % of device time")
    ax2.set_title(f"medians of {args.repeat} runs; {args.blocks_per_device} blocks of {args.block_windows} "
                  "windows per device; 2-core host", fontsize=9)
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _multi(text: str) -> list[tuple[int, int]]:
    out = []
    for item in filter(None, text.split(",")):
        nodes, per = item.lower().split("x")
        out.append((int(nodes), int(per)))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--single", default="1,4,8,16,32", help="devices on one node (default 1,4,8,16,32)")
    p.add_argument("--multi", default="2x2,2x8,2x16,4x2,4x8",
                   help="NODESxPER_NODE simulated multi-node configurations (default 2x2,2x8,2x16,4x2,4x8)")
    p.add_argument("--host-n", default="1,2,4", help="devices of the --device-ms 0 runs (host cost only)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--warmup", type=int, default=0, help="unmeasured runs per configuration first")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device-ms", type=float, default=42.0)
    p.add_argument("--block-windows", type=int, default=64, help="windows per block (one actor call)")
    p.add_argument("--blocks-per-device", type=int, default=16)
    p.add_argument("--host-windows", type=int, default=8192, help="windows of each --device-ms 0 run")
    p.add_argument("--idle-n", type=int, default=32, help="also measure the CPU of this many idle actors (0: no)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds between runs")
    p.add_argument("--json", type=Path, default=OUT / "bench_scaling.json")
    p.add_argument("--plot", type=Path, default=REPO / "benchmarks" / "scaling.png")
    p.add_argument("--pipeline", choices=("on", "off", "both"), default="on",
                   help="a block's batches in one device call (on, run's default), one call per batch (off, "
                        "--no-pipeline), or both, taking turns run by run")
    p.add_argument("--calls-at-once", choices=("2", "1", "both"), default="2",
                   help="calls a device actor runs at once: 2 (run's: the next block is unpacked while the "
                        "device runs one), 1 (a sequential actor, as before), or both, taking turns run by run")
    args = p.parse_args()
    pipelines = {"on": [True], "off": [False], "both": [True, False]}[args.pipeline]
    calls = {"2": [2], "1": [1], "both": [2, 1]}[args.calls_at_once]
    args.modes = [(p, c) for p in pipelines for c in calls]
    logging.basicConfig(level=logging.WARNING)

    single, multi, host_n = _ints(args.single), _multi(args.multi), _ints(args.host_n)
    max_n = max(single + [a * b for a, b in multi] + [1])
    windows = max(max_n * args.blocks_per_device * args.block_windows, args.host_windows)
    t0 = time.perf_counter()
    data = make_data(OUT / f"scaling-data-{windows}", windows)
    print(f"data: {windows} windows of {N_CTX} ({time.perf_counter() - t0:.1f} s); block = {args.block_windows} "
          f"windows = {args.block_windows // args.batch_size} batches = "
          f"{args.block_windows // args.batch_size * args.device_ms / 1000:.3f} s of device time; "
          f"{args.blocks_per_device} blocks per device", flush=True)

    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "args": {k: str(v) for k,
                                                                                    v in vars(args).items()},
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__,
                          "platform": platform.platform()},
              "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                       capture_output=True, text=True).stdout.strip(),
              "started_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    report["micro"] = microbench(data, args)
    print("per-block host costs in this process (no Ray):", json.dumps(report["micro"], indent=1), flush=True)

    if args.idle_n:
        report["idle"] = idle_actors(args.idle_n)
        print(f"{args.idle_n} idle actors use", {k: round(v, 3) for k, v in report["idle"]["cores"].items()},
              "cores", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench_scaling-") as tmp:
        tmp = Path(tmp)
        host_rows = []
        for n in host_n:
            host_rows.extend(measure(data, tmp, 1, n, args, 0.0, args.host_windows))
        single_rows, multi_rows = [], []
        for n in single:
            single_rows.extend(measure(data, tmp, 1, n, args, args.device_ms,
                                       n * args.blocks_per_device * args.block_windows))
        for nodes, per in multi:
            n = nodes * per
            multi_rows.extend(measure(data, tmp, nodes, per, args, args.device_ms,
                                      n * args.blocks_per_device * args.block_windows))

    report.update(single=single_rows, multi=multi_rows, host=host_rows,
                  total_s=time.perf_counter() - t0)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    plot(single_rows, multi_rows, args.plot, args)

    rows = single_rows + multi_rows
    print(f"\n## Scaling (medians of {args.repeat}; B={args.batch_size}, {args.device_ms:g} ms per batch)\n")
    print(table(rows, args.batch_size))
    print("\n## Host CPU during eval_s, ms per model batch, by process\n")
    print(cpu_table(rows))
    print("\n## Host only (--device-ms 0)\n")
    print(host_table(host_rows, args.batch_size))
    checks = [abs(r["host_overhead"] - r["host_overhead_recomputed"]) < 1e-9 and
              abs(r["samples_per_s"] - r["samples_per_s_recomputed"]) < 1e-6 for r in rows]
    print(f"\nresults.json and the recomputation from per_device agree: {all(checks)}")
    print(f"total {time.perf_counter() - t0:.0f} s; wrote {args.json} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
