"""The model's way to the actors of one node: `--actors` actors ask for a model file of
`--size-gb` at once, as the device actors of a multi-chip host do when a run starts. Reports the
time until every actor has its local copy, and each actor's peak private memory (what it holds
of its own, sampled every 10 ms from /proc/self/smaps_rollup: the object store's shared pages do
not count); with `--before REV`, the code of REV first, side by side.

    python benchmarks/bench_ship.py [--size-gb 1.5] [--actors 4] [--before REV] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import install_before

CHILD = r'''
import json, os, sys, tempfile, threading, time
from pathlib import Path
import ray

path, actors = Path(sys.argv[1]), int(sys.argv[2])
ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
from npueval.actors import worker
from npueval.eval.driver import fleet

objects = {}
start = time.perf_counter()
if hasattr(fleet, "ship"):
    model = fleet.ship(path, objects)
else:  # before the model's refs went through describe()
    model = fleet._ship(path)
shipped = time.perf_counter() - start


def private_mib() -> float:
    fields = dict(line.split(":", 1) for line in open("/proc/self/smaps_rollup").read().splitlines()[1:])
    return sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty")) / 1024


@ray.remote(num_cpus=0)
class Copier:
    def copy(self, model, objects):
        base, peak, done = private_mib(), [0.0], threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], private_mib())
                time.sleep(0.01)

        threading.Thread(target=sample, daemon=True).start()
        t0 = time.perf_counter()
        local = worker.local_model_file(model, objects) if objects else worker.local_model_file(model)
        took = time.perf_counter() - t0
        done.set()
        return {"s": took, "extra_mib": max(peak[0], private_mib()) - base, "size": local.stat().st_size}


copiers = [Copier.remote() for _ in range(actors)]
ray.get([c.__ray_ready__.remote() for c in copiers])
t0 = time.perf_counter()
got = ray.get([c.copy.remote(model, objects) for c in copiers])
print(json.dumps({"ship_s": shipped, "all_s": time.perf_counter() - t0, "actors": got}))
'''


def once(path: Path, actors: int, pythonpath: str | None) -> dict:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_AUTH_MODE": "disabled", "TMPDIR": tempfile.mkdtemp(prefix="ship-")}  # no copy there yet
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    r = subprocess.run([sys.executable, "-c", CHILD, str(path), str(actors)], env=env, capture_output=True,
                       text=True, check=True)
    subprocess.run(["rm", "-rf", env["TMPDIR"]], check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=1.5)
    ap.add_argument("--actors", type=int, default=4)
    ap.add_argument("--before", help="also measure the code of this git revision, first in each round")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="npueval-ship-"))
    try:
        model = work / "model.om"
        with model.open("wb") as f:
            for _ in range(int(args.size_gb * 1024)):
                f.write(os.urandom(1 << 20))
        versions = {"this tree": None}
        if args.before:
            versions = {args.before: str(install_before(args.before)), **versions}
        runs: dict[str, list[dict]] = {name: [] for name in versions}
        for _ in range(args.repeat):
            for name, pythonpath in versions.items():
                runs[name].append(once(model, args.actors, pythonpath))
        print(f"{args.size_gb} GB to {args.actors} actors of one node, median of {args.repeat}:")
        for name, rs in runs.items():
            extra = [max(a["extra_mib"] for a in r["actors"]) for r in rs]
            total = [sum(a["extra_mib"] for a in r["actors"]) for r in rs]
            print(f"  {name:>10}: shipped in {statistics.median(r['ship_s'] for r in rs):.2f} s, every actor's copy "
                  f"after {statistics.median(r['all_s'] for r in rs):.2f} s; private memory of the actors: "
                  f"{statistics.median(extra):.0f} MiB at most in one, {statistics.median(total):.0f} MiB in all")
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=True)


if __name__ == "__main__":
    main()
