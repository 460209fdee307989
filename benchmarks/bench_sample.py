"""The bundled sample: how long a newcomer's first command takes, and how many CPU workers to start.

    python benchmarks/bench_sample.py workers [--repeats 3] [--before REV]  # 1 worker × all threads vs one per core
    python benchmarks/bench_sample.py first-run                 # fresh venv: `pip install . && npueval run`

`workers` runs the whole sample (247 windows) with `--devices 1` and `--devices 2` alternately in
one session, and reports the medians of the run's eval_s, samples/s and wall time; with
`--before REV`, npueval at REV takes turns with this tree, run by run. `first-run`
copies the tracked files, makes a fresh venv and times the README's first Quick start command
(installation from the package index, then the run) with a cold npueval cache.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def npueval_run(python: str, cwd: Path, env: dict, *flags: str) -> tuple[float, dict]:
    start = time.perf_counter()
    r = subprocess.run([python, "-m", "npueval.eval", "run", *flags], cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if r.returncode:
        sys.exit(r.stderr)
    (line,) = [x for x in r.stdout.splitlines() if x.startswith("→ ")]
    return wall, json.loads((cwd / line[2:].split("  (")[0] / "results.json").read_text())


def workers(repeats: int, before: str | None) -> None:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    versions = {"this tree": env}
    if before:
        from common import install_before

        path = os.pathsep.join(filter(None, [str(install_before(before)), env.get("PYTHONPATH")]))
        versions = {f"before ({before})": {**env, "PYTHONPATH": path}, **versions}
    rows: dict[tuple[str, int], list[tuple[float, dict]]] = {(v, d): [] for v in versions for d in (1, 2)}
    with tempfile.TemporaryDirectory() as tmp:
        for version_env in versions.values():  # warm the cache: each version prepares once
            npueval_run(sys.executable, Path(tmp), version_env, "--limit", "4")
        for _ in range(repeats):
            for version, devices in rows:
                rows[version, devices].append(npueval_run(sys.executable, Path(tmp), versions[version], "--devices",
                                                          str(devices)))
    print(f"| version | CPU workers × threads | eval s | samples/s | wall s (whole command) |  (median of {repeats})")
    print("|---|---|---|---|---|")
    for (version, devices), runs in rows.items():
        threads = max(1, (os.cpu_count() or 1) // devices)
        print(f"| {version} | {devices} × {threads} | {statistics.median(r['eval_s'] for _, r in runs):.1f} | "
              f"{statistics.median(r['samples_per_s'] for _, r in runs):.2f} | "
              f"{statistics.median(w for w, _ in runs):.1f} |")


def first_run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "npueval"
        files = subprocess.run(["git", "ls-files"], cwd=REPO, check=True, capture_output=True, text=True).stdout.split()
        for rel in files:
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
        subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True)
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "NPUEVAL_CACHE_DIR": str(tmp / "cache"),
               "PATH": f"{tmp / 'venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
        env.pop("PYTHONPATH", None)
        start = time.perf_counter()
        subprocess.run(["pip", "install", "-q", "--no-cache-dir", "."], cwd=src, env=env, check=True)
        installed = time.perf_counter() - start
        run_wall, results = npueval_run(str(tmp / "venv" / "bin" / "python"), src, env)
    print(f"pip install . {installed:.0f} s (no pip cache); npueval run {run_wall:.0f} s (eval {results['eval_s']:.1f} "
          "s, "
          f"{results['windows']} windows, ppl {results['ppl']:.2f}); total {installed + run_wall:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    w = sub.add_parser("workers")
    w.add_argument("--repeats", type=int, default=3)
    w.add_argument("--before", help="also npueval at this git revision, taking turns with this tree")
    sub.add_parser("first-run")
    args = parser.parse_args()
    workers(args.repeats, args.before) if args.what == "workers" else first_run()


if __name__ == "__main__":
    main()
