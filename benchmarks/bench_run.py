"""`npueval run` over simulated NPUs: how it scales with the devices, and with the corpus.

The device is the simulated backend at the 310P3's measured speed (actors/simulated.py): each
model batch of B = 8 windows of 512 tokens takes `--device-ms` (42 ms). Everything else is the
real run path, through the library API `run(RunConfig.from_flags(...))`: the driver reads the
Parquet shards, every block goes through Ray's object store to a device actor, which computes
the simulated NLL and masks it; every finished block is saved and reduced into results.json.
A watcher (eval/driver/events.py) times what the driver does; nothing of npueval is patched.

Two sweeps:

**devices**: N = 1 … 32 devices on one node, and on 2 and 4 simulated nodes (a
`ray.cluster_utils.Cluster` on 127.0.0.1). The data set is synthetic (random ids, seed mode, every
window full) and each N evaluates N · `--blocks-per-device` blocks of `--block-windows`, so every
run lasts about as long whatever N is. One Ray per configuration, `--repeat` runs against it;
medians. Per row (docs/results.md for the results.json keys):

- efficiency = samples/s ÷ (N · 1000 · B / device_ms), every device up before the first block
  (`--wait-for-devices`: this sweep measures the dispatch, bench_eval_set.py the whole command);
  host overhead = (N · eval_s − Σ device_s) / Σ device_s, from results.json and recomputed from
  per_device (the two must agree);
- steady-state efficiency (start-up stagger and tail left out), the spread of the devices' ends,
  when the last device got its first block;
- the CPU of every process during eval_s from /proc (driver, actors, raylet+gcs, the rest), per
  model batch; the actors' in-call host time per block (wall − device − device wait).
`--host-n` adds runs at --device-ms 0 (the host is the only cost: the most it can feed).

    python benchmarks/bench_run.py devices
    python benchmarks/bench_run.py devices --single 1,32 --multi "" --host-n "" --pipeline both

**size**: corpora of wiki_zh's layout from benchmarks/gen_wiki_zh.py at 1× and 4× of `--sizes`
(in units of wiki_zh_2019: 0.15 is about 57 M scored tokens), through the real `npueval prepare
--files all`, then each `--devices` × `--nodes` over the whole data set, each configuration in a
child process of its own so that its memory figures are its own: the driver's peak RSS (and its
RssAnon and RssShmem), the object store's high-water mark over the nodes and the bytes spilled
(must be 0), wall_s, eval_s, windows/s, and the reduction against a numpy reference that reads the
shards with pyarrow alone (mean_ce to 1e-12 relative, the scored tokens exactly). Growth from 1×
to 4× is printed per configuration.

    python benchmarks/bench_run.py size
    python benchmarks/bench_run.py size --sizes 1 --no-growth --devices 32 --nodes 1 --device-ms 42 --repeat 1

Run from the repository root in the project's virtual environment. Data sets are kept in
benchmarks/out/ for the next invocation; each sweep writes benchmarks/out/bench_run_SWEEP.json,
and `devices` the plot benchmarks/scaling.png (matplotlib, a benchmark-only dependency).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import gen_wiki_zh  # noqa: E402
from common import (  # noqa: E402  (it sets Ray's loopback switches before importing ray)
    N_CTX,
    OUT,
    REPO,
    RssSampler,
    StorePoller,
    block_host_s,
    cpu_delta,
    cpu_snapshot,
    header,
    make_data,
    start_ray,
    stop_ray,
)

from npueval.eval.driver.events import RunEvents  # noqa: E402
from npueval.eval.driver.run import RunConfig, run  # noqa: E402

CHILD = "_one"  # hidden subcommand: one configuration of the size sweep, in its own process


# == devices ======================================================================================

class Probe(RunEvents):
    """What one run's driver did: CPU of every process during eval_s, when each block went out and
    each result came back, and the driver's time reading blocks and handling results."""

    def __init__(self):
        self.cpu: dict = {}
        self.read_s = self.on_result_s = 0.0
        self.sent_at: list[float] = []
        self.result_at: list[float] = []
        self.eval_start = self.eval_end = 0.0

    def evaluation_started(self, at):
        self._cpu_before = cpu_snapshot()
        self._process, self._thread = time.process_time(), time.thread_time()
        self.eval_start = time.perf_counter()

    def block_read(self, block, seconds):
        self.read_s += seconds

    def block_sent(self, block, device, at):
        self.sent_at.append(at)

    def result_handled(self, result, returned_at, seconds):
        self.result_at.append(returned_at)
        self.on_result_s += seconds

    def evaluation_ended(self, at):
        self.eval_end = at
        self.driver_cpu_s = time.process_time() - self._process
        self.driver_thread_s = time.thread_time() - self._thread
        self.cpu = cpu_delta(self._cpu_before, cpu_snapshot())


def one_run(data: Path, out: Path, n: int, nodes: int, args, device_ms: float, limit: int,
            pipeline: bool, calls_at_once: int) -> dict:
    probe = Probe()
    started = time.perf_counter()
    results = run(RunConfig.from_flags(data=data, out=out, backend="simulated", devices=n, batch_size=args.batch_size,
                                       device_ms=device_ms, limit=limit, block_windows=args.block_windows, force=True,
                                       max_retries=0, pipeline=pipeline, calls_at_once=calls_at_once,
                                       wait_for_devices=True),  # the dispatch's scaling, not the actors' start
                  events=probe).results.to_json()
    ended = time.perf_counter()
    per = [d for d in results["per_device"] if d["batches"]]
    eval_s, blocks = results["eval_s"], results["blocks"]
    device_s = sum(d["device_s"] for d in per)
    ideal = n * 1000 * args.batch_size / device_ms if device_ms else None
    results_at = sorted(probe.result_at)
    # Steady state: results' rate once every device has returned its first block and before the
    # queue runs dry.
    k1, k2 = n, blocks - 2 * n
    steady = None
    if device_ms and k2 - k1 >= 4:
        steady = (k2 - k1) * args.block_windows / (results_at[k2] - results_at[k1]) / ideal
    return {
        "n": n, "nodes": nodes, "device_ms": device_ms, "pipeline": pipeline, "calls_at_once": calls_at_once,
        "windows": results["windows"], "blocks": blocks, "batches": sum(d["batches"] for d in per),
        "eval_s": eval_s, "wall_s": results["wall_s"], "samples_per_s": results["samples_per_s"],
        "samples_per_s_recomputed": results["windows"] / eval_s, "ideal_samples_per_s": ideal,
        "efficiency": results["samples_per_s"] / ideal if ideal else None,
        "host_overhead": results["host_overhead"],
        "host_overhead_recomputed": (len(per) * eval_s - device_s) / device_s if device_s else None,
        "devices_used": len(per), "nodes_used": len({d["node"] for d in per}),
        "blocks_per_device": sorted({round(d["batches"] * args.batch_size / args.block_windows) for d in per}),
        "first_round_s": probe.sent_at[n - 1] - probe.sent_at[0] if len(probe.sent_at) >= n else None,
        "first_result_s": results_at[0] - probe.eval_start if results_at else None,
        "end_spread_s": results_at[-1] - results_at[-n] if len(results_at) >= n else None,
        "steady_efficiency": steady,
        "setup_s": probe.eval_start - started, "after_s": ended - probe.eval_end,
        "mean_ce": results["mean_ce"],
        "driver_cpu_s": probe.driver_cpu_s, "driver_main_thread_s": probe.driver_thread_s,
        "driver_read_s": probe.read_s, "driver_on_result_s": probe.on_result_s,
        "actor_call_host_s": sum(block_host_s(out)), "cpu_s": probe.cpu,
        "cpu_busy_frac": probe.cpu.get("machine", 0.0) / (eval_s * (os.cpu_count() or 1)),
    }


def median_row(rows: list[dict]) -> dict:
    med = dict(rows[0])
    for key, value in rows[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("n", "nodes", "device_ms"):
            values = [r[key] for r in rows if r[key] is not None]
            med[key] = statistics.median(values) if values else None
    med["cpu_s"] = {k: statistics.median(r["cpu_s"].get(k, 0.0) for r in rows) for k in rows[0]["cpu_s"]}
    med["blocks_per_device"] = sorted({k for r in rows for k in r["blocks_per_device"]})
    med["runs"], med["all_runs"] = len(rows), rows
    return med


def measure_devices(data: Path, tmp: Path, nodes: int, per_node: int, args, device_ms: float,
                    limit: int) -> list[dict]:
    """One Ray for the configuration; `--repeat` runs of each mode (pipeline, calls at once), the
    modes taking turns run by run so that all see the same machine. One median row per mode."""
    n = nodes * per_node
    label = f"{nodes}x{per_node}@{device_ms:g}ms"
    cluster = start_ray(nodes, per_node)
    rows = {mode: [] for mode in args.modes}
    try:
        for rep in range(args.warmup + args.repeat):
            for pipeline, calls in args.modes:
                out = tmp / f"{label}-{rep}-{int(pipeline)}-{calls}"
                row = one_run(data, out, n, nodes, args, device_ms, limit, pipeline, calls)
                shutil.rmtree(out, ignore_errors=True)
                kept = rep >= args.warmup
                if kept:
                    rows[(pipeline, calls)].append(row)
                eff = f"eff {row['efficiency']:.4f} overhead {row['host_overhead']:.4f} " if device_ms else ""
                print(f"  {label} {_calls(row)} run {rep}{'' if kept else ' (warm-up)'}: "
                      f"{row['samples_per_s']:.1f} samples/s {eff}eval_s {row['eval_s']:.2f} "
                      f"cpu busy {row['cpu_busy_frac']:.0%}", flush=True)
                time.sleep(args.settle)  # let the stopped actors' processes go before the next run
    finally:
        stop_ray(cluster)
    return [median_row(rows[mode]) for mode in args.modes]


def _calls(row: dict) -> str:
    calls = "block (pipeline)" if row["pipeline"] else "per batch"
    return f"{calls}, {row['calls_at_once']} at once"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def scaling_table(rows: list[dict]) -> str:
    lines = ["| N | nodes | device calls | samples/s | ideal | efficiency | host overhead | eval_s | steady state |"
             " blocks/device | last device's first block, s | devices' ends spread, s | CPU busy |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['nodes']} | {_calls(r)} | {r['samples_per_s']:.1f} | {r['ideal_samples_per_s']:.1f} | "
            f"{_pct(r['efficiency'])} | {_pct(r['host_overhead'])} | {r['eval_s']:.2f} | "
            f"{_pct(r['steady_efficiency'])} | {'/'.join(map(str, r['blocks_per_device']))} | "
            f"{r['first_round_s']:.3f} | {r['end_spread_s']:.3f} | {100 * r['cpu_busy_frac']:.0f}% |")
    return "\n".join(lines)


def cpu_table(rows: list[dict]) -> str:
    """CPU per model batch during eval_s, by process; the actors' in-call host time; the driver's."""
    lines = ["| N | nodes | device_ms | device calls | samples/s | CPU ms/batch (all) | driver | actors | raylet+gcs |"
             " ray other | other | actor in-call host ms/batch | driver CPU ms/block (main thread) |",
             "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        per_batch = lambda k, r=r: 1000 * r["cpu_s"].get(k, 0.0) / r["batches"]  # noqa: E731
        lines.append(
            f"| {r['n']} | {r['nodes']} | {r['device_ms']:g} | {_calls(r)} | {r['samples_per_s']:.0f} | "
            f"{per_batch('machine'):.2f} | {per_batch('driver'):.2f} | {per_batch('actors'):.2f} | "
            f"{per_batch('raylet+gcs'):.2f} | {per_batch('ray other'):.2f} | {per_batch('other'):.2f} | "
            f"{1000 * r['actor_call_host_s'] / r['batches']:.2f} | "
            f"{1000 * r['driver_cpu_s'] / r['blocks']:.2f} ({1000 * r['driver_main_thread_s'] / r['blocks']:.2f}) |")
    return "\n".join(lines)


def plot_scaling(single: list[dict], multi: list[dict], path: Path, args) -> None:
    """Efficiency and host overhead against N: one node as a line, several nodes as markers; the
    first mode's runs (with --pipeline both, the per-batch ones in grey beside them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    calls = args.modes[0][1]
    single = [r for r in single if r["calls_at_once"] == calls]
    multi = [r for r in multi if r["calls_at_once"] == calls and r["pipeline"] == args.modes[0][0]]
    baseline = [r for r in single if r["pipeline"] != args.modes[0][0]]
    single = [r for r in single if r not in baseline]
    ns = [r["n"] for r in single]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, goal in ((axes[0], "efficiency", 95), (axes[1], "host_overhead", 2)):
        if baseline:
            ax.plot([r["n"] for r in baseline], [100 * r[key] for r in baseline], "x--", color="grey",
                    label="1 node, one device call per batch (--no-pipeline)")
        ax.plot(ns, [100 * r[key] for r in single], "o-", label="1 node")
        for nodes, marker in ((2, "s"), (4, "^"), (8, "D")):
            pts = [r for r in multi if r["nodes"] == nodes]
            if pts:
                ax.plot([r["n"] for r in pts], [100 * r[key] for r in pts], marker, ms=8, linestyle="--",
                        label=f"{nodes} nodes")
        ax.axhline(goal, color="grey", linestyle=":", label=f"goal {goal}%")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_xlabel("simulated devices N")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("scaling efficiency, %")
    axes[0].set_title(f"npueval run, simulated 310P3 (B={args.batch_size}, {args.device_ms:g} ms/batch)",
                      fontsize=10)
    axes[1].set_ylabel("host overhead, % of device time")
    axes[1].set_title(f"medians of {args.repeat} runs; {args.blocks_per_device} blocks of {args.block_windows} "
                      "windows per device", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sweep_devices(args) -> int:
    pipelines = {"on": [True], "off": [False], "both": [True, False]}[args.pipeline]
    calls = {"2": [2], "1": [1], "both": [2, 1]}[args.calls_at_once]
    args.modes = [(p, c) for p in pipelines for c in calls]
    single, multi, host_n = _ints(args.single), _multi(args.multi), _ints(args.host_n)
    max_n = max(single + [a * b for a, b in multi] + [1])
    windows = max(max_n * args.blocks_per_device * args.block_windows, args.host_windows)
    t0 = time.perf_counter()
    data = make_data(OUT / f"scaling-data-{windows}", windows)
    print(f"data: {windows} windows of {N_CTX}; block = {args.block_windows} windows = "
          f"{args.block_windows // args.batch_size} batches = "
          f"{args.block_windows // args.batch_size * args.device_ms / 1000:.3f} s of device time; "
          f"{args.blocks_per_device} blocks per device", flush=True)
    report = {**header(), "args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="bench_run-") as tmp:
        tmp = Path(tmp)
        host_rows = [row for n in host_n for row in measure_devices(data, tmp, 1, n, args, 0.0, args.host_windows)]
        single_rows = [row for n in single for row in measure_devices(
            data, tmp, 1, n, args, args.device_ms, n * args.blocks_per_device * args.block_windows)]
        multi_rows = [row for nodes, per in multi for row in measure_devices(
            data, tmp, nodes, per, args, args.device_ms, nodes * per * args.blocks_per_device * args.block_windows)]
    report.update(single=single_rows, multi=multi_rows, host=host_rows, total_s=time.perf_counter() - t0)
    _write_json(args.json or OUT / "bench_run_devices.json", report)
    rows = single_rows + multi_rows
    if rows:
        plot_scaling(single_rows, multi_rows, args.plot, args)
        print(f"\n## Scaling (medians of {args.repeat}; B={args.batch_size}, {args.device_ms:g} ms per batch)\n")
        print(scaling_table(rows))
    print("\n## Host CPU during eval_s, ms per model batch, by process\n")
    print(cpu_table(rows + host_rows))
    agree = all(abs(r["host_overhead"] - r["host_overhead_recomputed"]) < 1e-9
                and abs(r["samples_per_s"] - r["samples_per_s_recomputed"]) < 1e-6 for r in rows)
    print(f"\nresults.json and the recomputation from per_device agree: {agree}")
    print(f"total {time.perf_counter() - t0:.0f} s" + (f"; plot {args.plot}" if rows else ""))
    return 0 if agree else 1


# == size =========================================================================================

WORK = OUT / "scale"


def ensure_corpus_data(scale: float, vocab: Path, workers: int) -> tuple[Path, dict]:
    """The corpus at `scale`, and its prepared data set (made once; the prepare time is kept)."""
    corpus = WORK / f"wiki-{scale:g}x"
    info = gen_wiki_zh.generate(corpus, vocab, scale, seed=0, workers=workers)
    data, stamp = WORK / f"data-{scale:g}x", WORK / f"data-{scale:g}x.json"
    if stamp.is_file() and (data / "manifest.json").is_file() and json.loads(stamp.read_text())["corpus"] == info:
        return data, json.loads(stamp.read_text())
    print(f"preparing {corpus} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "npueval.eval", "-q", "prepare", str(corpus), "--vocab", str(vocab),
                    "--out", str(data), "--files", "all", "--force"], check=True)
    prepared = {"corpus": info, "prepare_s": round(time.perf_counter() - t0, 1),
                "shard_bytes": sum(p.stat().st_size for p in data.glob("shard-*.parquet")),
                "reference": numpy_reference(data)}
    stamp.write_text(json.dumps(prepared, indent=1) + "\n")
    return data, prepared


def numpy_reference(data: Path) -> dict:
    """Σ NLL and scored tokens straight from the shards, one shard at a time: pyarrow, numpy and
    the simulated backend's documented function, nll of token t = 1 + ((x[t−1]·7919 + x[t]·104729
    + (t−1)) mod 9973) / 9973 in float32, summed in float64 over score_from ≤ t < n_valid. No
    npueval code involved."""
    import numpy as np
    import pyarrow.parquet as pq

    manifest = json.loads((data / "manifest.json").read_text())
    nll_sum, tokens, windows = 0.0, 0, 0
    for shard in manifest["shards"]:
        table = pq.read_table(data / shard["name"], columns=["input_ids", "score_from", "n_valid"])
        ids = table.column("input_ids").combine_chunks()
        x = ids.values.to_numpy().astype(np.int64).reshape(len(ids), -1)
        j = np.arange(x.shape[1] - 1)
        nll = (1 + ((x[:, :-1] * 7919 + x[:, 1:] * 104729 + j) % 9973) / 9973).astype(np.float32)
        t = j + 1
        mask = (t >= table.column("score_from").to_numpy()[:, None]) & (t < table.column("n_valid").to_numpy()[:, None])
        nll_sum += float(np.where(mask, nll.astype(np.float64), 0.0).sum())
        tokens += int(mask.sum())
        windows += len(x)
    return {"nll_sum": nll_sum, "tokens": tokens, "windows": windows, "mean_ce": nll_sum / tokens}


def one_configuration(args) -> dict:
    """In the child: its own Ray, `--repeat` runs over the whole data set, memory watched."""
    import ray

    rss = RssSampler()
    cluster = start_ray(args.nodes, args.devices // args.nodes)
    runs = []
    try:
        address = ray.get_runtime_context().gcs_address
        for rep in range(args.repeat):
            out = Path(args.tmp) / f"run-{rep}"
            with StorePoller(address) as store:
                t0 = time.perf_counter()
                results = run(RunConfig.from_flags(data=Path(args.data), out=out, backend="simulated",
                                                   devices=args.devices, batch_size=8, device_ms=args.device_ms,
                                                   force=True, max_retries=0)).results.to_json()
                wall = time.perf_counter() - t0
            runs.append({"wall_s": wall, "eval_s": results["eval_s"], "windows": results["windows"],
                         "windows_per_s": results["windows"] / results["eval_s"], "tokens": results["tokens"],
                         "mean_ce": results["mean_ce"], "nll_sum": results["nll_sum"], "blocks": results["blocks"],
                         "retries": results["retries"], "store_high_bytes": store.high,
                         "store_spilled_bytes": store.spilled, "store_polls": store.polls,
                         "devices_used": sum(1 for d in results["per_device"] if d["batches"])})
            print(f"    run {rep}: wall {wall:.1f} s, {runs[-1]['windows_per_s']:.0f} windows/s, "
                  f"store high {store.high / 2**20:.0f} MiB", file=sys.stderr, flush=True)
            shutil.rmtree(out)
    finally:
        stop_ray(cluster)
    return {"runs": runs, "driver_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "driver_peak_anon_bytes": rss.peak["RssAnon"], "driver_peak_shmem_bytes": rss.peak["RssShmem"]}


def child_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog=f"bench_run.py {CHILD}")
    for name, kind in (("--data", str), ("--tmp", str), ("--json", str), ("--nodes", int), ("--devices", int),
                       ("--device-ms", float), ("--repeat", int)):
        p.add_argument(name, type=kind, required=True)
    args = p.parse_args(argv)
    Path(args.json).write_text(json.dumps(one_configuration(args)))
    return 0


def measure_size(data: Path, nodes: int, devices: int, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_run-size-") as tmp:
        out = Path(tmp) / "one.json"
        cmd = [sys.executable, __file__, CHILD, "--data", str(data), "--tmp", tmp, "--json", str(out),
               "--nodes", str(nodes), "--devices", str(devices), "--device-ms", str(args.device_ms),
               "--repeat", str(args.repeat)]
        # Ray's own processes read the setting from the environment they inherit (the child starts
        # its Ray with common.start_ray, not npueval's connect(), which sets it itself).
        env = {**os.environ, "RAY_free_objects_period_milliseconds": str(args.free_period_ms)}
        subprocess.run(cmd, check=True, cwd=REPO, env=env)
        raw = json.loads(out.read_text())
    runs = raw["runs"]
    med = {k: statistics.median(r[k] for r in runs) for k in ("wall_s", "eval_s", "windows_per_s")}
    return {"nodes": nodes, "devices": devices, **med,
            **{k: raw[k] for k in ("driver_peak_rss_bytes", "driver_peak_anon_bytes", "driver_peak_shmem_bytes")},
            "store_high_bytes": max(r["store_high_bytes"] for r in runs),
            "store_spilled_bytes": max(r["store_spilled_bytes"] for r in runs),
            "windows": runs[0]["windows"], "tokens": runs[0]["tokens"], "mean_ce": runs[0]["mean_ce"],
            "same_numbers_every_run": len({(r["mean_ce"], r["tokens"], r["windows"]) for r in runs}) == 1,
            "retries": sum(r["retries"] for r in runs), "runs": runs}


def reduction_ok(row: dict, reference: dict) -> bool:
    return (row["tokens"] == reference["tokens"] and row["windows"] == reference["windows"]
            and abs(row["mean_ce"] - reference["mean_ce"]) <= 1e-12 * reference["mean_ce"]
            and row["same_numbers_every_run"])


def size_table(rows: list[dict]) -> str:
    lines = ["| size | tokens (scored) | nodes | devices | wall s | eval s | windows/s | driver peak RSS MiB "
             "(anon, shmem) | object store HWM MiB | spilled | = numpy reference |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['tokens']:,} | {r['nodes']} | {r['devices']} | {r['wall_s']:.1f} | "
                     f"{r['eval_s']:.1f} | {r['windows_per_s']:,.0f} | {r['driver_peak_rss_bytes'] / 2**20:.0f} "
                     f"({r['driver_peak_anon_bytes'] / 2**20:.0f}, {r['driver_peak_shmem_bytes'] / 2**20:.0f}) | "
                     f"{r['store_high_bytes'] / 2**20:.0f} | {r['store_spilled_bytes']} | "
                     f"{'yes' if r['reduction_ok'] else '**NO**'} |")
    return "\n".join(lines)


def growth_table(rows: list[dict], small: str, large: str) -> str:
    lines = [f"| nodes | devices | driver peak RSS {small} → {large} MiB | growth | its RssAnon | growth "
             f"| object store HWM {small} → {large} MiB | growth |", "|---:|---:|---|---:|---|---:|---|---:|"]
    by = {(r["size"], r["nodes"], r["devices"]): r for r in rows}
    for (size, k, n), a in by.items():
        b = by.get((large, k, n))
        if size != small or b is None:
            continue
        cells = []
        for key in ("driver_peak_rss_bytes", "driver_peak_anon_bytes", "store_high_bytes"):
            growth = b[key] / a[key] - 1 if a[key] else float("nan")
            cells.append(f"{a[key] / 2**20:.0f} → {b[key] / 2**20:.0f} | {growth:+.1%}")
        lines.append(f"| {k} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_size(args) -> int:
    devices, nodes = _ints(args.devices), _ints(args.nodes)
    scales = [float(x) for x in args.sizes.split(",")]
    if not args.no_growth:
        scales = [s * m for s in scales for m in (1, 4)]
    rows, prepared = [], {}
    for scale in scales:
        data, prep = ensure_corpus_data(scale, args.vocab or gen_wiki_zh.default_vocab(), args.workers)
        prepared[f"{scale:g}"] = prep
        for k, n in [(k, n) for k in nodes for n in devices if n >= k and n % k == 0]:
            print(f"{scale:g}× wiki_zh, {k} node(s), {n} device(s), {args.device_ms:g} ms/batch", file=sys.stderr,
                  flush=True)
            row = {"size": f"{scale:g}", **measure_size(data, k, n, args)}
            row["reduction_ok"] = reduction_ok(row, prep["reference"])
            rows.append(row)
    print(size_table(rows))
    if not args.no_growth:
        for s in args.sizes.split(","):
            print()
            print(growth_table(rows, f"{float(s):g}", f"{float(s) * 4:g}"))
    _write_json(args.json or OUT / "bench_run_size.json",
                {**header(), "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "prepared": prepared})
    return 0 if all(r["reduction_ok"] for r in rows) else 1


# == the command ==================================================================================

def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _multi(text: str) -> list[tuple[int, int]]:
    return [tuple(int(x) for x in item.lower().split("x")) for item in filter(None, text.split(","))]


def _write_json(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"wrote {path}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sweeps = p.add_subparsers(dest="sweep", required=True)
    d = sweeps.add_parser("devices", help="N devices on one node and on several: efficiency, host overhead, CPU")
    d.add_argument("--single", default="1,4,8,16,32", help="devices on one node (default 1,4,8,16,32)")
    d.add_argument("--multi", default="2x16,4x8", help="NODESxPER_NODE simulated multi-node configurations")
    d.add_argument("--host-n", default="1,4", help="devices of the --device-ms 0 runs (host cost only)")
    d.add_argument("--repeat", type=int, default=3)
    d.add_argument("--warmup", type=int, default=0, help="unmeasured runs per configuration first")
    d.add_argument("--batch-size", type=int, default=8)
    d.add_argument("--device-ms", type=float, default=42.0)
    d.add_argument("--block-windows", type=int, default=256, help="windows per block (one actor call)")
    d.add_argument("--blocks-per-device", type=int, default=16)
    d.add_argument("--host-windows", type=int, default=8192, help="windows of each --device-ms 0 run")
    d.add_argument("--settle", type=float, default=1.0, help="seconds between runs")
    d.add_argument("--pipeline", choices=("on", "off", "both"), default="on",
                   help="a block's batches in one device call (on: run's default), one call per batch (off: "
                        "--no-pipeline), or both, taking turns run by run")
    d.add_argument("--calls-at-once", choices=("2", "1", "both"), default="2",
                   help="calls a device actor runs at once (2: run's), 1, or both, taking turns run by run")
    d.add_argument("--plot", type=Path, default=BENCH / "scaling.png")
    d.add_argument("--json", type=Path)
    s = sweeps.add_parser("size", help="corpora of wiki_zh's size and 4× that: memory, object store, speed")
    s.add_argument("--sizes", default="0.15", help="1× sizes in units of wiki_zh_2019 (default 0.15)")
    s.add_argument("--no-growth", action="store_true", help="only the sizes given, not also 4× each")
    s.add_argument("--devices", default="1,8,32")
    s.add_argument("--nodes", default="1,2,4")
    s.add_argument("--device-ms", type=float, default=0.0)
    s.add_argument("--repeat", type=int, default=3)
    s.add_argument("--free-period-ms", type=int, default=1000,
                   help="Ray's free_objects_period_milliseconds for the runs' Rays (Ray's default 1000; "
                        "npueval's local Ray: 100)")
    s.add_argument("--workers", type=int, default=2, help="processes generating the corpora")
    s.add_argument("--vocab", type=Path, help="GPT2-Chinese's vocab.txt (default: one of its shape and size, made up)")
    s.add_argument("--json", type=Path)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CHILD]:
        return child_main(argv[1:])
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return sweep_devices(args) if args.sweep == "devices" else sweep_size(args)


if __name__ == "__main__":
    sys.exit(main())
