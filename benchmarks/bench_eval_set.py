"""`npueval run` on eval sets of the sizes users have: this tree against an earlier commit, side by side.

Two sets, both from benchmarks/gen_wiki_zh.py through the real `npueval prepare`:

- **port**: each folder's first file (`--files first`), the port's own eval set: about 8 thousand
  seed windows;
- **wiki**: the whole corpus at `--wiki-scale` (1 is wiki_zh_2019's size, about a million windows).

Each run is `npueval run --backend simulated --devices N` as a user starts it, in a process of its
own: it starts its own local Ray (or, with `--join`, joins one the benchmark started for it), so
its wall time holds Ray's start and stop. The device is the simulated 310P3 (B = 8, `--device-ms`
42 a batch). The two versions take turns run by run; the earlier one is `git archive REV`
installed with `pip --target` into benchmarks/out/ and put first on the child's PYTHONPATH (and so
on its Ray workers'). Per run, from a watcher on the run's events (the same in both versions) and
results.json:

- **eval_s**: the first block sent → the last result; **ideal_s** = windows / B × device_ms / N;
  **efficiency** = ideal_s / eval_s.
- **busy**: Σ device seconds / Σ over devices of (last result − that device's first block): the
  share of the time the devices had work to do that they computed. It leaves out the time before a
  device was up, which `efficiency` counts where a device gets work as soon as it is up.
- **outside** = wall − eval_s: Ray, the actors' start, the checks, the reduction, the writing, the stop.

    python benchmarks/bench_eval_set.py                       # port set, 1/8/16/32 devices, and the joined case
    python benchmarks/bench_eval_set.py --devices 8,16,32 --join "" --also-wait   # what starting early gives
    python benchmarks/bench_eval_set.py --sets wiki --wiki-devices 32 --wiki-repeat 1

`--also-wait` adds this tree with `--wait-for-devices` (no work until every device is up), run by
run beside the others: the difference is what handing a device work as soon as it is up gives.

Run from the repository root in the project's virtual environment; writes
benchmarks/out/bench_eval_set.json and prints a Markdown table (medians).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import gen_wiki_zh  # noqa: E402
from common import OUT, header, install_before  # noqa: E402  (it sets Ray's loopback switches)

CHILD = "_one"
BATCH = 8


# -- the data sets -------------------------------------------------------------------------------

def ensure_set(name: str, args) -> Path:
    """The prepared data set `name` (port or wiki), made once and kept in benchmarks/out/."""
    vocab = args.vocab or gen_wiki_zh.default_vocab()
    scale = 1.0 if name == "port" else args.wiki_scale
    corpus = OUT / ("wiki-port" if name == "port" else f"wiki-{scale:g}x")
    data = OUT / ("data-port" if name == "port" else f"data-{scale:g}x-all")
    info = gen_wiki_zh.generate(corpus, vocab, scale, seed=0, workers=args.workers, first_files_only=name == "port")
    stamp = data / "bench-corpus.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == info and (data / "manifest.json").is_file():
        return data
    print(f"preparing {corpus} ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "npueval.eval", "-q", "prepare", str(corpus), "--vocab", str(vocab),
                    "--out", str(data), "--files", "first" if name == "port" else "all", "--force"], check=True)
    stamp.write_text(json.dumps(info))
    return data


# -- one run, in a child -----------------------------------------------------------------------------

def child_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog=f"bench_eval_set.py {CHILD}")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--devices", type=int, required=True)
    p.add_argument("--device-ms", type=float, required=True)
    p.add_argument("--address")
    p.add_argument("--wait-for-devices", action="store_true")
    args = p.parse_args(argv)

    import npueval.eval
    from npueval.eval.driver.events import RunEvents
    from npueval.eval.driver.run import RunConfig, run

    class Watcher(RunEvents):
        def __init__(self):
            self.first_sent: dict[str, float] = {}
            self.last_result = 0.0

        def block_sent(self, block, device, at):
            self.first_sent.setdefault(device, at)

        def result_handled(self, result, returned_at, seconds):
            self.last_result = max(self.last_result, returned_at)

    watcher = Watcher()
    t0 = time.perf_counter()
    extra = {"wait_for_devices": True} if args.wait_for_devices else {}
    results = run(RunConfig.from_flags(data=args.data, out=args.out, backend="simulated", devices=args.devices,
                                       batch_size=BATCH, device_ms=args.device_ms, address=args.address, **extra),
                  events=watcher).results.to_json()
    wall = time.perf_counter() - t0
    first = min(watcher.first_sent.values())
    eval_s = watcher.last_result - first
    device_s = sum(d["device_s"] for d in results["per_device"])
    up = sum(watcher.last_result - at for at in watcher.first_sent.values())
    print(json.dumps({
        "npueval": str(Path(npueval.eval.__file__).parent.parent), "wall_s": wall, "eval_s": eval_s,
        "first_block_s": first - t0, "busy": device_s / up if up else None,
        "devices_used": sum(1 for d in results["per_device"] if d["batches"]), "blocks": results["blocks"],
        "windows": results["windows"], "tokens": results["tokens"], "mean_ce": results["mean_ce"],
        "results_eval_s": results["eval_s"], "phases": results.get("phases", []),
    }))
    return 0


def one_run(version: str, pythonpath: Path | None, data: Path, devices: int, args, address: str | None,
            flags: tuple[str, ...] = ()) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="bench-eval-set-") as tmp:
        cmd = [sys.executable, __file__, CHILD, "--data", str(data), "--out", str(Path(tmp) / "out"),
               "--devices", str(devices), "--device-ms", str(args.device_ms),
               *(["--address", address] if address else []), *flags]
        done = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{version} at {devices} devices failed:\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    ideal = row["windows"] / BATCH * args.device_ms / 1000 / devices
    return {**row, "ideal_s": ideal, "efficiency": ideal / row["eval_s"], "outside_s": row["wall_s"] - row["eval_s"]}


class JoinedRay:
    """`ray start --head` with `devices` simulated NPUs on 127.0.0.1, its workers on `pythonpath`."""

    def __init__(self, devices: int, pythonpath: Path | None, port: int):
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        if pythonpath is not None:
            self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), self.env.get("PYTHONPATH")]))
        self.ray = str(Path(sys.executable).parent / "ray")
        self.address = f"127.0.0.1:{port}"
        subprocess.run([self.ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                        "--resources", json.dumps({"NPU": devices}), "--include-dashboard", "false",
                        "--disable-usage-stats"], env=self.env, check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run([self.ray, "stop", "--force"], env=self.env, capture_output=True)


# -- the sweep ---------------------------------------------------------------------------------------

def measure(args) -> list[dict]:
    versions = [(f"before ({args.before})", install_before(args.before), ()), ("after", None, ())]
    if args.also_wait:  # the same tree, every device up before any gets work: what starting early gives
        versions.append(("after, --wait-for-devices", None, ("--wait-for-devices",)))
    rows = []
    cases = [(s, n, False) for s in args.sets for n in (args.devices if s == "port" else args.wiki_devices)]
    cases += [("port", n, True) for n in args.join if "port" in args.sets]
    for set_name, n, joined in cases:
        data = ensure_set(set_name, args)
        runs = {v: [] for v, _, _ in versions}
        for rep in range(args.repeat if set_name == "port" else args.wiki_repeat):
            for version, path, flags in versions:
                ray = JoinedRay(n, path, args.port) if joined else None
                try:
                    if ray:
                        time.sleep(2)  # the cluster settles, as one a user started a while ago has
                    row = one_run(version, path, data, n, args, ray.address if ray else None, flags)
                finally:
                    if ray:
                        ray.stop()
                runs[version].append(row)
                print(f"  {set_name} {n} devices{' joined' if joined else ''} {version} run {rep}: wall "
                      f"{row['wall_s']:.2f} s, eval {row['eval_s']:.2f} s (ideal {row['ideal_s']:.2f}), "
                      f"outside {row['outside_s']:.2f} s, busy {row['busy']:.3f}", file=sys.stderr, flush=True)
        for version, _, _ in versions:
            rs = runs[version]
            med = {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "eval_s", "efficiency", "busy",
                                                                    "outside_s", "first_block_s")}
            rows.append({"set": set_name, "devices": n, "joined": joined, "version": version, **med,
                         "windows": rs[0]["windows"], "blocks": rs[0]["blocks"], "ideal_s": rs[0]["ideal_s"],
                         "mean_ce": rs[0]["mean_ce"], "same_numbers": len({r["mean_ce"] for r in rs}) == 1,
                         "runs": rs})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| set | devices | version | blocks | eval_s | ideal s | efficiency | busy | wall_s "
             "| outside evaluation s | mean CE |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        n = f"{r['devices']}{' (joined)' if r['joined'] else ''}"
        lines.append(f"| {r['set']} ({r['windows']:,} windows) | {n} | {r['version']} | {r['blocks']} | "
                     f"{r['eval_s']:.2f} | {r['ideal_s']:.2f} | {r['efficiency']:.3f} | {r['busy']:.3f} | "
                     f"{r['wall_s']:.2f} | {r['outside_s']:.2f} | {r['mean_ce']:.12f} |")
    return "\n".join(lines)


def phases_table(rows: list[dict]) -> str:
    """Where the newer version's wall time went (its results.json phases, medians)."""
    names = ["ray_start", "shards_verified", "model_shipped", "first_device_ready", "devices_ready", "evaluation",
             "reduce", "write", "ray_stop"]
    lines = ["| set | devices | version | " + " | ".join(names) + " |", "|---|---:|---|" + "---:|" * len(names)]
    for r in rows:
        if not r["version"].startswith("after"):
            continue
        cells = []
        for name in names:
            spans = [(p["start_s"], p["end_s"]) for run in r["runs"] for p in run["phases"] if p["name"] == name]
            cells.append("–" if not spans else f"{statistics.median(s for s, _ in spans):.2f}–"
                                               f"{statistics.median(e for _, e in spans):.2f}")
        lines.append(f"| {r['set']} | {r['devices']}{' (joined)' if r['joined'] else ''} | {r['version']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CHILD]:
        return child_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="port", help="port, wiki or port,wiki (default port)")
    p.add_argument("--devices", default="1,8,16,32", help="devices on the port set (default 1,8,16,32)")
    p.add_argument("--join", default="8", help="devices of the port-set runs that join a running Ray (default 8)")
    p.add_argument("--wiki-devices", default="32")
    p.add_argument("--wiki-scale", type=float, default=1.0, help="the wiki set's size in wiki_zh_2019s (default 1)")
    p.add_argument("--device-ms", type=float, default=42.0)
    p.add_argument("--repeat", type=int, default=3, help="runs per version on the port set (default 3)")
    p.add_argument("--wiki-repeat", type=int, default=1)
    p.add_argument("--before", default="d26eef2", help="the commit to compare with (default d26eef2: before "
                   "balanced blocks and the overlapped start)")
    p.add_argument("--also-wait", action="store_true",
                   help="also this tree with --wait-for-devices, run by run beside the others")
    p.add_argument("--port", type=int, default=6391, help="the joined Ray's port on 127.0.0.1")
    p.add_argument("--workers", type=int, default=2, help="processes generating the corpora")
    p.add_argument("--vocab", type=Path, help="GPT2-Chinese's vocab.txt (default: one of its shape, made up)")
    p.add_argument("--json", type=Path, default=OUT / "bench_eval_set.json")
    args = p.parse_args(argv)
    args.sets = [s for s in args.sets.split(",") if s]
    args.devices, args.wiki_devices = [int(x) for x in args.devices.split(",") if x], [
        int(x) for x in args.wiki_devices.split(",") if x]
    args.join = [int(x) for x in args.join.split(",") if x]
    t0 = time.perf_counter()
    rows = measure(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({**header(), "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
                                    indent=1) + "\n")
    same = all(r["same_numbers"] for r in rows) and len({(r["set"], r["mean_ce"]) for r in rows}) == len(
        {r["set"] for r in rows})
    print(f"\n## Eval sets of real size (medians; B = {BATCH}, {args.device_ms:g} ms a batch)\n")
    print(table(rows))
    print("\n## Where the time went (after; seconds from the run's start, medians)\n")
    print(phases_table(rows))
    print(f"\nthe same mean CE to the last bit for every run, version and device count of a set: {same}")
    print(f"total {time.perf_counter() - t0:.0f} s; wrote {args.json}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
