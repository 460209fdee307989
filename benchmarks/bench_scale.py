"""Memory and throughput of `npueval run` as the corpus grows (RELIABILITY.md, "Scale").

Corpora of wiki_zh layout from benchmarks/gen_wiki_zh.py, at 1× and 4× of `--sizes` (in units
of wiki_zh_2019; the default 0.15 is about 85 M tokens in the stream and 57 M scored, above the
50 M the issue asks of 1×), go through the real `npueval prepare --files all` (seed mode). Then
every configuration of `--devices` × `--nodes` runs the simulated backend over the whole data set
at `--device-ms` per batch of 8 (0 by default: the host is the only cost, so the object store and
the driver see blocks as fast as they can be made). Each configuration runs in a child process of
its own (its own Ray: `ray.init`, or a `ray.cluster_utils.Cluster` of k nodes on 127.0.0.1), so
that its figures are its own:

- wall_s (run(), from reading the manifest to results.json), eval_s and windows/s (results.json);
- driver peak RSS: the child's ru_maxrss (Ray's processes are others; the driver holds its core
  worker, the shards' index, the blocks' results and the reduction), and its two parts sampled
  every 10 ms from /proc/self/status: RssAnon (the driver's own heap) and RssShmem (the object
  store's shared pages the driver has touched by putting blocks: they move with the store's
  occupancy, not with the driver's data);
- object-store high-water mark: the largest `object_store_bytes_used`, summed over the nodes, of
  Ray's global memory info polled every 0.05 s during the run (ray._private.internal_api, the
  call behind `ray memory --stats-only`), and the bytes spilled (must be 0). Ray frees objects
  in batches (up to 100, or once a second), so the store holds more than the blocks in flight;
- the reduction against a numpy reference that reads the shards with pyarrow alone and applies
  DESIGN.md's NLL function (actors/simulated.py's docstring), summed in float64: mean_ce to 1e-12
  relative and the scored-token count exactly.

Growth from 1× to 4× of the driver's peak RSS and of the object store's high-water mark is
printed per configuration; the issue's bound is 10%.

    python benchmarks/bench_scale.py                       # the sweep (about 25 minutes on 2 cores)
    python benchmarks/bench_scale.py --sizes 1 --devices 32 --nodes 1 --device-ms 42 --repeat 1 --no-growth

The second line is the full wiki_zh-size run at 32 devices at the 310P3's 42 ms per batch of 8.
Corpora, data sets and references are kept in benchmarks/out/scale/ for the next invocation.
Writes benchmarks/out/bench_scale.json (or --json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

import gen_wiki_zh  # noqa: E402
from common import start_ray, stop_ray  # noqa: E402  (it sets Ray's loopback switches before importing ray)

WORK = BENCH / "out" / "scale"
ONE = "_one"  # hidden subcommand: one configuration, in its own process
POLL_S = 0.05


# -- data ----------------------------------------------------------------------------------------

def ensure_data(scale: float, vocab: Path, workers: int) -> tuple[Path, dict]:
    """The corpus at `scale`, and its prepared data set (made once; the prepare time is kept)."""
    corpus = WORK / f"wiki-{scale:g}x"
    info = gen_wiki_zh.generate(corpus, vocab, scale, seed=0, workers=workers)
    data = WORK / f"data-{scale:g}x"
    stamp = WORK / f"data-{scale:g}x.json"
    if stamp.is_file() and (data / "manifest.json").is_file() and json.loads(stamp.read_text())["corpus"] == info:
        return data, json.loads(stamp.read_text())
    cmd = [sys.executable, "-m", "npueval.eval", "-q", "prepare", str(corpus), "--vocab", str(vocab), "--out",
           str(data),
           "--files", "all", "--force"]
    print(f"preparing {corpus} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    prepared = {"corpus": info, "prepare_s": round(time.perf_counter() - t0, 1),
                "shard_bytes": sum(p.stat().st_size for p in data.glob("shard-*.parquet")),
                "reference": numpy_reference(data)}
    stamp.write_text(json.dumps(prepared, indent=1) + "\n")
    return data, prepared


def numpy_reference(data: Path) -> dict:
    """Σ NLL and scored tokens straight from the shards, one shard at a time: pyarrow, numpy and
    DESIGN.md's function, nll of token t = 1 + ((x[t−1]·7919 + x[t]·104729 + (t−1)) mod 9973) / 9973
    in float32, summed in float64 over score_from ≤ t < n_valid. No npueval code involved."""
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


# -- one configuration (child process) ------------------------------------------------------------

class RssSampler:
    """Peaks of this process's RssAnon and RssShmem (KiB in /proc/self/status), every 10 ms."""

    FIELDS = ("RssAnon", "RssShmem")

    def __init__(self):
        self.peak = dict.fromkeys(self.FIELDS, 0)
        threading.Thread(target=self._work, daemon=True, name="rss-sampler").start()

    def _work(self) -> None:
        while True:
            with open("/proc/self/status") as f:
                for line in f:
                    key = line.split(":", 1)[0]
                    if key in self.peak:
                        self.peak[key] = max(self.peak[key], int(line.split()[1]) * 1024)
            time.sleep(0.01)


class StorePoller:
    """The object store's bytes in use, summed over the nodes, every POLL_S: its high-water mark."""

    def __init__(self, address: str):
        from ray._private.internal_api import get_state_from_address

        self.state = get_state_from_address(address)
        self.high = self.spilled = self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, daemon=True, name="store-poller")

    def _work(self) -> None:
        from ray._private.internal_api import get_memory_info_reply

        while not self._stop.is_set():
            stats = get_memory_info_reply(self.state).store_stats
            self.high = max(self.high, stats.object_store_bytes_used)
            self.spilled = max(self.spilled, stats.spilled_bytes_total)
            self.polls += 1
            self._stop.wait(POLL_S)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def one_configuration(args) -> dict:
    import ray

    from npueval.eval.driver.run import RunConfig, run

    rss = RssSampler()
    cluster = start_ray(args.nodes, args.devices // args.nodes)
    runs = []
    try:
        address = ray.get_runtime_context().gcs_address
        for rep in range(args.repeat):
            out = Path(args.tmp) / f"run-{rep}"
            with StorePoller(address) as store:
                t0 = time.perf_counter()
                config = RunConfig.from_flags(data=Path(args.data), out=out, backend="simulated", devices=args.devices,
                                              batch_size=8, device_ms=args.device_ms, force=True, max_retries=0)
                results = run(config).results.to_json()
                wall = time.perf_counter() - t0
            runs.append({"wall_s": wall, "eval_s": results["eval_s"], "windows": results["windows"],
                         "windows_per_s": results["windows"] / results["eval_s"], "tokens": results["tokens"],
                         "mean_ce": results["mean_ce"], "nll_sum": results["nll_sum"], "blocks": results["blocks"],
                         "retries": results["retries"], "store_high_bytes": store.high,
                         "store_spilled_bytes": store.spilled, "store_polls": store.polls,
                         "devices_used": sum(1 for d in results["per_device"] if d["batches"])})
            print(f"    run {rep}: wall {wall:.1f} s, {runs[-1]['windows_per_s']:.0f} windows/s, "
                  f"store high {store.high / 2**20:.0f} MiB", file=sys.stderr, flush=True)
            subprocess.run(["rm", "-rf", str(out)], check=True)
    finally:
        stop_ray(cluster)
    return {"runs": runs, "driver_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "driver_peak_anon_bytes": rss.peak["RssAnon"], "driver_peak_shmem_bytes": rss.peak["RssShmem"]}


def child_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog=f"bench_scale.py {ONE}")
    for name, kind in (("--data", str), ("--tmp", str), ("--json", str), ("--nodes", int), ("--devices", int),
                       ("--device-ms", float), ("--repeat", int)):
        p.add_argument(name, type=kind, required=True)
    args = p.parse_args(argv)
    Path(args.json).write_text(json.dumps(one_configuration(args)))
    return 0


# -- the sweep ------------------------------------------------------------------------------------

def measure(data: Path, nodes: int, devices: int, args) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench_scale-") as tmp:
        out = Path(tmp) / "one.json"
        cmd = [sys.executable, __file__, ONE, "--data", str(data), "--tmp", tmp, "--json", str(out),
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


def check_reduction(row: dict, reference: dict) -> bool:
    return (row["tokens"] == reference["tokens"] and row["windows"] == reference["windows"]
            and abs(row["mean_ce"] - reference["mean_ce"]) <= 1e-12 * reference["mean_ce"]
            and row["same_numbers_every_run"])


def configurations(devices: list[int], nodes: list[int]) -> list[tuple[int, int]]:
    return [(k, n) for k in nodes for n in devices if n >= k and n % k == 0]


def table(rows: list[dict]) -> str:
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


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="0.15", help="1× sizes in units of wiki_zh_2019, comma-separated (default 0.15)")
    p.add_argument("--no-growth", action="store_true", help="only the sizes given, not also 4× each")
    p.add_argument("--devices", default="1,8,32")
    p.add_argument("--nodes", default="1,2,4")
    p.add_argument("--device-ms", type=float, default=0.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--free-period-ms", type=int, default=1000,
                   help="Ray's free_objects_period_milliseconds for the runs' Rays (Ray's default 1000; "
                        "npueval's local Ray: 100)")
    p.add_argument("--workers", type=int, default=2, help="processes generating the corpora")
    p.add_argument("--vocab", type=Path, default=gen_wiki_zh.DEFAULT_VOCAB)
    p.add_argument("--json", type=Path, default=BENCH / "out" / "bench_scale.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [ONE]:
        return child_main(argv[1:])
    args = parse_args(argv)
    ints = [int(x) for x in args.devices.split(",")]
    nodes = [int(x) for x in args.nodes.split(",")]
    scales = [float(x) for x in args.sizes.split(",")]
    if not args.no_growth:
        scales = [s * m for s in scales for m in (1, 4)]
    rows, prepared = [], {}
    for scale in scales:
        data, prep = ensure_data(scale, args.vocab, args.workers)
        prepared[f"{scale:g}"] = prep
        for k, n in configurations(ints, nodes):
            print(f"{scale:g}× wiki_zh, {k} node(s), {n} device(s), {args.device_ms:g} ms/batch", file=sys.stderr,
                  flush=True)
            row = {"size": f"{scale:g}", **measure(data, k, n, args)}
            row["reduction_ok"] = check_reduction(row, prep["reference"])
            rows.append(row)
    print(table(rows))
    if not args.no_growth:
        for s in args.sizes.split(","):
            print()
            print(growth_table(rows, f"{float(s):g}", f"{float(s) * 4:g}"))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                     "prepared": prepared, "machine": platform.platform(),
                                     "cpus": os.cpu_count(), "python": platform.python_version()}, indent=1))
    return 0 if all(r["reduction_ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
