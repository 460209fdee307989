"""Benchmark `npueval prepare` against a plain re-implementation of the port's data scripts.

"The port" is the ModelZoo GPT2 port's get_data_json.py + pre_data.py + compare_loss.py
windowing (docs/design.md, "The port's protocol", steps 1-8), written here the straightforward
way: the whole corpus read into one list, 100 pieces cut by position, short articles dropped,
one article at a time through the pure-Python classic BERT tokenizer
(tests/reference/classic_bert.py), [MASK] ids [CLS] per article, windows of 512 every 768.

Generated wiki_zh-layout corpora are used (tests/reference/textgen.py): "1x" of --size-mb MB and
"4x", four times larger, and of each a "-removed-chars" copy: the same articles with characters
that the tokenizer's cleaning removes put into 60% of them (zero-width spaces, direction marks,
soft hyphens, …: textgen.with_removed_characters; the port is not run on them). They are kept in
the work folder and reused when present; ours runs on each in turn. Every measured run is a
fresh process, started by a small launcher process so that its peak RSS (ru_maxrss) is its own
(the launcher's ~12 MB is the floor); wall time includes interpreter start-up and imports. Ours
runs --repeat times (median wall, largest peak RSS), into a fresh output folder each time; the
port runs once. In full mode the port's window count, token-id sum and stream length must equal
ours (read from our Parquet shards), which shows both did the same job.

Run from the repository root, in the project's virtual environment:

    python benchmarks/bench_prepare.py                          # everything, full port runs
    python benchmarks/bench_prepare.py --port-sample-articles 3000 --json out.json
    python benchmarks/bench_prepare.py --skip-port-4x --repeat 5

With --port-sample-articles N the port tokenizes only the first N kept articles; its wall
time is extrapolated to the whole corpus (reading as measured, tokenizing scaled by
characters) and the equality checks are skipped. The output says so.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "reference"))
sys.path.insert(0, str(REPO / "benchmarks"))

import classic_bert  # noqa: E402
import gen_wiki_zh  # noqa: E402
import port  # noqa: E402
import textgen  # noqa: E402

NUM_PIECES, N_CTX, STRIDE, MIN_LENGTH = 100, 512, 768, 128
PORT_WORKER = "_port"  # hidden subcommand: one port run, in its own process


# -- corpora ---------------------------------------------------------------------------------

def ensure_corpus(work: Path, vocab: Path, target_mb: int, seed: int) -> Path:
    """The corpus of `target_mb` MB for `seed` under `work`, generated unless already complete."""
    root = work / f"corpus-{target_mb}mb-seed{seed}"
    done = root / ".complete"
    if done.is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    tokens = vocab.read_text(encoding="utf-8").splitlines()
    print(f"generating {target_mb} MB corpus in {root} ...", file=sys.stderr)
    textgen.generate_wiki_corpus(root, tokens, target_mb * 10**6, seed)
    done.write_text(json.dumps({"target_mb": target_mb, "seed": seed, "vocab": str(vocab)}) + "\n")
    return root


def ensure_dirty_corpus(clean: Path, seed: int) -> Path:
    """The clean corpus with characters cleaning removes put into 60% of its articles
    (textgen.with_removed_characters), generated unless already complete."""
    root = clean.with_name(clean.name + "-removed-chars")
    done = root / ".complete"
    if done.is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    print(f"copying {clean} with removed characters into {root} ...", file=sys.stderr)
    textgen.dirty_copy(clean, root, seed)
    done.write_text(json.dumps({"from": str(clean), "seed": seed}) + "\n")
    return root


def corpus_bytes(root: Path) -> int:
    """The generated corpora have one file per folder: all of it is read."""
    return sum(p.stat().st_size for p in root.glob("*/wiki_*"))


# -- the port ----------------------------------------------------------------------------------

def run_port(root: Path, vocab: Path, sample_articles: int | None) -> dict:
    """The port on `root`: windows, their id sum, stream tokens, and where the time went."""
    t0 = time.perf_counter()
    tokenizer = classic_bert.ClassicBertTokenizer(vocab)
    mask, cls = tokenizer.vocab["[MASK]"], tokenizer.vocab["[CLS]"]
    pieces = port.pieces(port.read_texts(str(root)), NUM_PIECES, MIN_LENGTH)
    t_read = time.perf_counter()
    budget = sample_articles if sample_articles is not None else sum(map(len, pieces))
    out = {"articles_kept": sum(map(len, pieces)), "chars_kept": sum(len(t) for p in pieces for t in p),
           "articles_tokenized": 0, "chars_tokenized": 0, "stream_tokens": 0, "windows": 0, "id_sum": 0}
    for piece in pieces:
        stream: list[int] = []
        for text in piece[:budget - out["articles_tokenized"]]:
            stream.append(mask)
            stream.extend(tokenizer.encode(text))
            stream.append(cls)
            out["articles_tokenized"] += 1
            out["chars_tokenized"] += len(text)
        windows = port.seed_windows(stream, N_CTX, STRIDE)
        out["stream_tokens"] += len(stream)
        out["windows"] += len(windows)
        out["id_sum"] += sum(map(sum, windows))
    out["read_s"], out["tokenize_s"] = t_read - t0, time.perf_counter() - t_read
    return out


def port_worker_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog=f"bench_prepare.py {PORT_WORKER}")
    p.add_argument("corpus", type=Path)
    p.add_argument("--vocab", type=Path, required=True)
    p.add_argument("--result", type=Path, required=True)
    p.add_argument("--sample-articles", type=int, default=None)
    args = p.parse_args(argv)
    result = run_port(args.corpus, args.vocab, args.sample_articles)
    args.result.write_text(json.dumps(result) + "\n")
    return 0


# -- measuring -------------------------------------------------------------------------------

#: Runs argv[2:] and writes its peak RSS (KiB) to argv[1]. A child's ru_maxrss counts the
#: memory of the process it was forked from, so the fork happens in this small launcher,
#: not in the benchmark process (which has numpy and pyarrow loaded).
LAUNCHER = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
    "sys.exit(rc)"
)


def measure(cmd: list[str], log: Path) -> tuple[float, float]:
    """Run `cmd` in a fresh process; (wall seconds, its peak RSS in MB). Output goes to `log`."""
    rss_file = log.with_suffix(".maxrss")
    with open(log, "wb") as f:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", LAUNCHER, str(rss_file), *cmd],
                              stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{tail}")
    return wall, int(rss_file.read_text()) / 1024  # Linux: KiB


def source_fingerprint() -> str:
    """A hash of eval/*.py: tells runs of ours apart when its code changes during a benchmark."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "eval").rglob("*.py")):
        digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def npueval_command() -> str:
    beside = Path(sys.executable).parent / "npueval"
    return str(beside) if beside.exists() else (shutil.which("npueval") or "npueval")


def bench_ours(corpora: dict[str, Path], vocab: Path, work: Path, repeat: int) -> dict[str, dict]:
    """`npueval prepare` `repeat` times on each corpus (label → folder), the corpora in turn within
    each round, so that a slower spell of the shared machine falls on all of them; each run into a
    fresh folder, the last output kept."""
    runs: dict[str, dict] = {label: {"walls_s": [], "peak_rss_mb_runs": [], "eval_sources": []} for label in corpora}
    for r in range(repeat):
        for label, corpus in corpora.items():
            out = work / f"prepared-{label}"
            shutil.rmtree(out, ignore_errors=True)
            runs[label]["eval_sources"].append(source_fingerprint())
            cmd = [npueval_command(), "prepare", str(corpus), "--vocab", str(vocab), "--out", str(out), "--force"]
            wall, peak = measure(cmd, work / f"ours-{label}-{r}.log")
            runs[label]["walls_s"].append(wall)
            runs[label]["peak_rss_mb_runs"].append(peak)
            print(f"  ours {label} run {r + 1}/{repeat}: {wall:.2f} s, {peak:.0f} MB", file=sys.stderr)
    for label, run in runs.items():
        out = work / f"prepared-{label}"
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        run.update(wall_s=statistics.median(run["walls_s"]), peak_rss_mb=max(run["peak_rss_mb_runs"]), out=str(out),
                   stream_tokens=manifest["stream_tokens"], windows=manifest["windows"],
                   id_sum=shard_id_sum(out, manifest))
    return runs


def shard_id_sum(out: Path, manifest: dict) -> int:
    import pyarrow.parquet as pq

    total = 0
    for shard in manifest["shards"]:
        ids = pq.read_table(out / shard["name"], columns=["input_ids"]).column("input_ids")
        total += int(ids.combine_chunks().values.to_numpy().sum(dtype="int64"))
    return total


def bench_port(corpus: Path, vocab: Path, work: Path, label: str, sample: int | None) -> dict:
    """One port run in a fresh process; with a sample, its wall time extrapolated to the corpus."""
    result_path = work / f"port-{label}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), PORT_WORKER, str(corpus),
           "--vocab", str(vocab), "--result", str(result_path)]
    if sample is not None:
        cmd += ["--sample-articles", str(sample)]
    print(f"  port {label}{'' if sample is None else f' (sample of {sample} articles)'} ...", file=sys.stderr)
    wall, peak = measure(cmd, work / f"port-{label}.log")
    result = json.loads(result_path.read_text())
    sampled = result["articles_tokenized"] < result["articles_kept"]
    scale = result["chars_kept"] / max(result["chars_tokenized"], 1)
    est = wall - result["tokenize_s"] + result["tokenize_s"] * scale if sampled else wall
    print(f"  port {label}: {wall:.2f} s measured, {est:.2f} s full, {peak:.0f} MB", file=sys.stderr)
    return {**result, "measured_wall_s": wall, "wall_s": est, "sampled": sampled, "peak_rss_mb": peak}


def check_same_job(label: str, ours: dict, port: dict) -> None:
    """In full mode the port and ours must make the same windows from the same stream."""
    for key in ("windows", "id_sum", "stream_tokens"):
        if ours[key] != port[key]:
            raise AssertionError(f"{label}: {key} differs: ours {ours[key]}, port {port[key]}")


# -- report ----------------------------------------------------------------------------------

def table(rows: list[dict]) -> str:
    head = ("corpus MB", "implementation", "wall s (median)", "stream tokens", "Mtokens/s",
            "peak RSS MB", "speed ours/port")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ratio = f"{r['ratio']:.1f}x" if r.get("ratio") else "-"
        lines.append(f"| {r['corpus_mb']:.1f} | {r['impl']} | {r['wall_s']:.2f} | {r['stream_tokens']:,} | "
                     f"{r['mtok_s']:.3f} | {r['peak_rss_mb']:.0f} | {ratio} |")
    return "\n".join(lines)


def environment() -> dict:
    rev = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True)
    return {"when": time.strftime("%Y-%m-%d %H:%M:%S %z"), "git": rev.stdout.strip(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "machine": platform.platform()}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=Path, help="GPT2-Chinese's vocab.txt (default: one of its shape and size, made up)")
    p.add_argument("--work", type=Path, default=REPO / "benchmarks" / "out",
                   help="corpora, outputs and logs (default benchmarks/out, git-ignored)")
    p.add_argument("--size-mb", type=int, default=20, help="size of the 1x corpus (default 20; 4x is four times)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=3, help="runs of ours per corpus; the median is reported")
    p.add_argument("--skip-port-4x", action="store_true", help="do not run the port on the 4x corpus")
    p.add_argument("--port-sample-articles", type=int, default=None, metavar="N",
                   help="the port tokenizes only the first N kept articles; its time is extrapolated")
    p.add_argument("--json", type=Path, default=None, help="write the raw numbers here")
    args = p.parse_args(argv)
    if args.size_mb < 20:
        p.error("--size-mb: at least 20")
    if args.repeat < 1:
        p.error("--repeat: at least 1")
    return args


def rows_for(mb: float, ours: dict, port: dict | None) -> list[dict]:
    """Table rows of one corpus size; Mtokens/s of both from our manifest's stream tokens."""
    tokens = ours["stream_tokens"]
    rows = [{"corpus_mb": mb, "impl": "npueval prepare", "wall_s": ours["wall_s"], "stream_tokens": tokens,
             "mtok_s": tokens / ours["wall_s"] / 1e6, "peak_rss_mb": ours["peak_rss_mb"],
             "ratio": port["wall_s"] / ours["wall_s"] if port else None}]
    if port:
        name = f"port (est. from {port['articles_tokenized']} articles)" if port["sampled"] else "port"
        rows.append({"corpus_mb": mb, "impl": name, "wall_s": port["wall_s"], "stream_tokens": tokens,
                     "mtok_s": tokens / port["wall_s"] / 1e6, "peak_rss_mb": port["peak_rss_mb"]})
    return rows


def notes(raw: dict, args: argparse.Namespace) -> list[str]:
    """What the table's numbers are, and anything that qualifies them."""
    env, sizes = raw["env"], raw["sizes"]
    sources = sorted({f for v in sizes.values() for f in v["ours"]["eval_sources"]})
    out = [f"{env['when']}, git {env['git']}, eval/ sources {', '.join(sources)}, {env['cpus']} CPUs, "
           f"Python {env['python']}; ours: median of {args.repeat} runs; port: 1 run; each run a fresh process."]
    if len(sources) > 1:
        out.append("WARNING: eval/ changed during the benchmark; ours' runs are not comparable: rerun.")
    sampled = [k for k, v in sizes.items() if v["port"] and v["port"]["sampled"]]
    if sampled:
        out.append(f"Port on {', '.join(sampled)}: sample of {args.port_sample_articles} articles, wall time "
                   "extrapolated by characters, peak RSS as measured on the sample; window check skipped.")
    checked = [k for k, v in sizes.items() if v["port"] and not v["port"]["sampled"]]
    if checked:
        out.append(f"Same windows, window id sum and stream tokens as ours: {', '.join(checked)}.")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [PORT_WORKER]:
        return port_worker_main(argv[1:])
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    vocab = (args.vocab or gen_wiki_zh.default_vocab()).resolve()
    rows, raw = [], {"env": environment(), "args": {k: str(v) for k, v in vars(args).items()}, "sizes": {}}
    corpora = {}
    for label, factor in (("1x", 1), ("4x", 4)):
        clean = ensure_corpus(args.work, vocab, args.size_mb * factor, args.seed)
        corpora.update({label: clean, f"{label}-removed-chars": ensure_dirty_corpus(clean, args.seed)})
    for label, corpus in corpora.items():
        print(f"{label}: {corpus} ({corpus_bytes(corpus) / 1e6:.1f} MB)", file=sys.stderr)
    measured = bench_ours(corpora, vocab, args.work, args.repeat)
    for label, corpus in corpora.items():
        mb = corpus_bytes(corpus) / 1e6
        ours = measured[label]
        port = None
        if not (label == "4x" and args.skip_port_4x) and not label.endswith("-removed-chars"):
            port = bench_port(corpus, vocab, args.work, label, args.port_sample_articles)
            if not port["sampled"]:
                check_same_job(label, ours, port)
        raw["sizes"][label] = {"corpus": str(corpus), "corpus_mb": mb, "ours": ours, "port": port}
        rows.extend(rows_for(mb, ours, port))
    print(table(rows))
    print()
    print("\n".join(notes(raw, args)))
    for label in ("1x", "4x"):
        clean, dirty = raw["sizes"][label]["ours"], raw["sizes"][f"{label}-removed-chars"]["ours"]
        ratio = (dirty["stream_tokens"] / dirty["wall_s"]) / (clean["stream_tokens"] / clean["wall_s"])
        raw["sizes"][f"{label}-removed-chars"]["speed_ratio"] = ratio
        print(f"{label} with characters cleaning removes in 60% of the articles: {ratio:.2f}x the clean corpus's "
              "stream tokens/s.")
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
