"""The GIL: what a device library that never releases it does to a run, side by side with one that does.

aclruntime, under ais_bench, holds the GIL for the whole of a device call (its pybind11 bindings
have no gil_scoped_release). Inside a device actor nothing else then runs while the device
computes: not the next block's unpacking, not the last block's result going back through Ray.
The simulated backend's device time is a sleep, which releases the GIL, so the scaling figures
measured with it assume an overlap a real NPU host may not have.

This runs the real om backend (actors/om_backend.py) through the fake ais_bench of tests/fakes in
its simulated-compute mode: each execution computes the simulated backend's documented NLL and
then holds the GIL for --device-ms in a C call (libc nanosleep through ctypes.PyDLL, as a wait on
the device does: no CPU, GIL held). Configurations, each on N devices of one node, run by run:

    simulated           the simulated backend (device time with the GIL free): the reference
    om-gil              om, GIL held: one infer_pipeline call per block, 2 calls at once per actor
    om-gil-1-call       the same with 1 call at once (the second waits in Ray's queue)
    om-gil-no-pipeline  --no-pipeline: one infer call per model batch (the GIL is free between batches)

Metrics, from results.json (docs/results.md): efficiency = samples/s ÷ Σ device FPS (the devices'
own 1000·B/mean execute ms), host overhead = (N·eval_s − Σ device_s) / Σ device_s; from each block:
the time it waited for the actor's device thread, and its in-call host time (wall − device − wait).
Every configuration must give the same mean CE to the last bit, and the script checks it.

Run from the repository root, in the project's virtual environment (about 15 minutes on 2 cores):

    python benchmarks/bench_gil.py
    python benchmarks/bench_gil.py --devices 1,8,32 --repeat 3 --blocks-per-device 16

Writes benchmarks/out/bench_gil.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from common import OUT, REPO, block_host_s, make_data, start_ray, stop_ray

from npueval.eval.driver.run import RunConfig, run

FAKES = REPO / "tests" / "fakes"
CONFIGS = {
    "simulated": {"backend": "simulated"},
    "om-gil": {"backend": "om"},
    "om-gil-1-call": {"backend": "om", "calls_at_once": 1},
    "om-gil-no-pipeline": {"backend": "om", "pipeline": False},
}


def fake_ais_bench_env(batch_size: int, device_ms: float, chips: int) -> None:
    """What the actors of the next Ray inherit: the fake ais_bench on a host of `chips` chips,
    computing the simulated NLL and holding the GIL for the device time."""
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FAKES), os.environ.get("PYTHONPATH")]))
    os.environ.update(FAKE_AIS_BENCH_COMPUTE="simulated", FAKE_AIS_BENCH_SHAPE=f"{batch_size},512",
                      FAKE_AIS_BENCH_DEVICE_MS=str(device_ms), FAKE_ACL_DEVICE_COUNT=str(chips))


def block_waits(out: Path) -> list[float]:
    waits = []
    for path in sorted((out / "blocks").glob("block-*.parquet")):
        waits.append(json.loads(pq.read_schema(path).metadata[b"npueval"]).get("device_wait_s", 0.0))
    return waits


def one_run(name: str, data: Path, om: Path, out: Path, n: int, args) -> dict:
    kw = dict(CONFIGS[name])
    backend = kw.pop("backend")
    config = RunConfig.from_flags(data=data, out=out, backend=backend, devices=n, force=True, max_retries=0,
                       limit=n * args.blocks_per_device * args.block_windows, block_windows=args.block_windows,
                                  **({"model": om} if backend == "om" else {"batch_size": args.batch_size,
                                                              "device_ms": args.device_ms}), **kw)
    results = run(config).results.to_json()
    host, waits = block_host_s(out), block_waits(out)
    return {"config": name, "n": n, "eval_s": results["eval_s"], "mean_ce": results["mean_ce"],
            "efficiency": results["samples_per_s"] / results["device_fps_sum"],
            "host_overhead": results["host_overhead"],
            "device_ms": 1000 * sum(d["device_s"] for d in results["per_device"])
                         / sum(d["batches"] for d in results["per_device"]),
            "block_wait_s": statistics.median(waits), "block_host_s": statistics.median(host),
            "ais_bench_api": results["ais_bench_api"]}


def median_rows(rows: list[dict]) -> dict:
    out = dict(rows[0])
    for key in ("eval_s", "efficiency", "host_overhead", "device_ms", "block_wait_s", "block_host_s"):
        out[key] = statistics.median(r[key] for r in rows)
    out["efficiency_runs"] = [round(r["efficiency"], 4) for r in rows]
    return out


def table(rows: list[dict]) -> str:
    lines = ["| N | configuration | efficiency (runs) | host overhead | block waits for the device thread | "
             "in-call host time per block |", "|---|---|---|---|---|---|"]
    for r in rows:
        runs = ", ".join(f"{e:.2%}" for e in r["efficiency_runs"])
        lines.append(f"| {r['n']} | {r['config']} | {r['efficiency']:.2%} ({runs}) | {r['host_overhead']:.2%} | "
                     f"{1000 * r['block_wait_s']:.0f} ms | {1000 * r['block_host_s']:.1f} ms |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", default="1,8,32", help="N, comma-separated (default 1,8,32)")
    p.add_argument("--repeat", type=int, default=3, help="runs of each configuration per N (default 3); medians")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"which of {', '.join(CONFIGS)}")
    p.add_argument("--device-ms", type=float, default=42.0,
                   help="device time per model batch (default 42, the 310P3's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--block-windows", type=int, default=256, help="windows per block (default 256: 32 batches)")
    p.add_argument("--blocks-per-device", type=int, default=16)
    args = p.parse_args()
    devices = [int(n) for n in args.devices.split(",")]
    configs = args.configs.split(",")
    OUT.mkdir(parents=True, exist_ok=True)
    windows = max(devices) * args.blocks_per_device * args.block_windows
    data = make_data(OUT / f"scaling-data-{windows}", windows)  # the data set bench_run.py devices makes too
    fake_ais_bench_env(args.batch_size, args.device_ms, max(devices))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-gil-") as tmp:
        om = Path(tmp) / "model.om"  # the fake's simulated compute reads only its shape from FAKE_AIS_BENCH_SHAPE
        om.write_bytes(b"")
        om.chmod(0o644)
        for n in devices:
            cluster = start_ray(1, n)
            try:
                runs = {name: [] for name in configs}
                for k in range(args.repeat):
                    for name in configs:  # side by side, run by run
                        started = time.perf_counter()
                        row = one_run(name, data, om, Path(tmp) / f"{name}-{n}-{k}", n, args)
                        runs[name].append(row)
                        print(f"N={n} {name} run {k + 1}: efficiency {row['efficiency']:.2%}, "
                              f"eval {row['eval_s']:.1f} s ({time.perf_counter() - started:.0f} s)", flush=True)
            finally:
                stop_ray(cluster)
            means = {r["mean_ce"] for rs in runs.values() for r in rs}
            if len(means) != 1:
                print(f"N={n}: the configurations disagree on the mean CE: {sorted(means)}", file=sys.stderr)
                return 1
            rows += [median_rows(rs) for rs in runs.values()]
    print("\n" + table(rows))
    (OUT / "bench_gil.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
