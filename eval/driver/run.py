"""`npueval run`: evaluate a model on a prepared data set on every device of a Ray cluster.

The steps: read the data manifest and the model, and refuse a pair that does not fit (before
any device work); start one actor per device (eval/fleet.py); cut the windows into blocks and
send them (eval/dispatch.py), saving each finished block in OUT/blocks (eval/run_folder.py);
reduce every block, read back in block order, into results.json, windows.parquet and result.txt
(eval/results.py).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from npueval.actors.evaluator import BlockResult, BlockRows
from npueval.actors.worker import BackendFactory, DeviceInfo
from npueval.core.errors import DatasetError, Interrupted, UserError, interrupted_by
from npueval.core.files import file_sha256
from npueval.eval.data.dataset import open_data_set
from npueval.eval.data.manifest import DataManifest

from . import results as res
from .background import Background
from .blocks import Block, BlockPlan, BlockReader, WindowIndex, balanced_blocks, fixed_blocks, read_index
from .dispatch import PER_ACTOR, Dispatcher, Prefetcher, prefetch_depth
from .events import RunEvents
from .fleet import DeviceConfig, Fleet
from .metrics import drop_last_rows
from .model_spec import ModelSpec, check_pair, check_reference, resolve_model
from .provenance import provenance
from .results_file import Results, Timeout
from .run_folder import BackgroundSaver, RunFolder
from .timing import BlockTimes, Phases

log = logging.getLogger(__name__)

NONFINITE_CHOICES = ("fail", "skip")
#: results.json lists this many skipped windows at most (windows.parquet has them all).
NONFINITE_LISTED = 100
#: The most model batches a block holds: many per call, so Ray's ~1 ms per call is noise
#: (docs/design.md, "Dispatch: plain actors"); blocks shrink from it toward the end of a run.
BATCHES_PER_BLOCK = 32


@dataclass(frozen=True)
class RunConfig:
    data: Path
    out: Path
    model: Path | None = None
    device: DeviceConfig = field(default_factory=DeviceConfig)  # which devices run what (shared with bench)
    limit: int | None = None
    drop_last: bool = False
    resume: bool = False
    force: bool = False
    vocab: Path | None = None
    block_windows: int | None = None  # None: balanced blocks (eval/driver/blocks.py); N: fixed blocks of N
    on_nonfinite: str = "fail"  # fail: a NaN/Inf window loss ends the run; skip: left out, counted
    block_timeout: float | None = None  # seconds a call may run before its device is taken for hung
    wait_for_devices: bool = False  # no work until every device is up (each takes part: a check of every chip)
    command: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self):
        for name in ("data", "out", "model", "vocab"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        for name in ("limit", "block_windows"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} {value}: must be at least 1")
        if self.model is None and self.device.kind is not None and self.device.runs_model:
            raise UserError(f"--backend {self.device.backend} needs --model (a build folder, a .onnx or an .om)")
        if self.model is None and self.device.kind is None:
            raise UserError("--model is needed (a build folder, a .onnx or an .om), or --backend simulated")
        if self.resume and self.force:
            raise UserError("--resume and --force contradict each other: pick one")
        if self.on_nonfinite not in NONFINITE_CHOICES:
            raise UserError(f"--on-nonfinite {self.on_nonfinite!r}: choose one of {', '.join(NONFINITE_CHOICES)}")
        if self.block_timeout is not None and not self.block_timeout > 0:
            raise UserError(f"--block-timeout {self.block_timeout}: must be a positive number of seconds")

    @classmethod
    def from_flags(cls, **flags) -> RunConfig:
        """A config from flat keyword arguments, as the command line has them: those that are
        DeviceConfig's (backend, devices, device_ms, …) go to `device`."""
        names = {f.name for f in dataclasses.fields(DeviceConfig)}
        device = DeviceConfig(**{k: flags.pop(k) for k in list(flags) if k in names})
        return cls(device=device, **flags)


@dataclass(frozen=True)
class RunResult:
    out: Path
    results: Results = field(repr=False)


@dataclass(frozen=True)
class Plan:
    """The run's windows: `total` covered (--limit), `keep` scored (--drop-last), cut into blocks."""

    index: WindowIndex
    total: int
    keep: np.ndarray  # bool (W,)
    blocks: list[Block]
    done: set[int]  # finished before this command (--resume)
    batch_size: int


@dataclass
class Evaluated:
    fresh: list[BlockResult]  # the blocks this command evaluated, in the order they finished (totals only)
    started: float  # time.perf_counter() when the first block went out
    eval_s: float
    retries: int
    timeouts: list[Timeout]  # calls --block-timeout ended


def run(config: RunConfig, *, factory: BackendFactory | None = None,
        progress: Callable[[int, int, int], None] | None = None, events: RunEvents | None = None) -> RunResult:
    """Evaluate; `progress(windows_done, windows_total, tokens_done)` after each block.

    `factory` builds each actor's backend instead of the stock ones (tests keep a ledger);
    `events` hears what the run does as it goes (eval/driver/events.py: benchmarks)."""
    started_at, clock, epoch = _now(), time.perf_counter(), time.time()
    phases = Phases(clock)
    times = BlockTimes(events or RunEvents(), clock, epoch)
    data = open_data_set(config.data)
    if config.drop_last and data.mode in ("rolling", "stride"):
        raise UserError(f"--drop-last: the port's, for seed data; {config.data} is a {data.mode} data set, whose "
                        "numbers count every window; drop the flag")
    model = resolve_model(config.model, config.vocab) if config.model is not None else None
    vocab_checked = check_pair(model, data, config.data) if model is not None else False
    if config.device.check_against is not None:
        check_reference(config.device.check_against, model, data.n_ctx, config.data)
    folder = RunFolder(config.out)
    with folder.held():  # OUT is this run's from here on: a second run into it is refused
        _refuse_held_out(config, folder, model, data)
        stored = folder.read_plan() if config.resume else None  # the blocks a resumed run keeps
        # Every shard is checked against its sha256 while Ray and the device actors start, and before
        # any block is read.
        with (Background(lambda stop: read_index(config.data, data, stop), "npueval-verify") as verifying,
              Fleet(config.device, model, data.n_ctx, factory, phases) as fleet, ExitStack() as reading):
            index = verifying.result()
            phases.add("shards_verified", verifying.started, verifying.ended)
            # The first blocks are read, and sent, while the device actors start: a device gets work as
            # soon as it is up. Their batch is known before they answer, but for a bare OM's.
            batch = fleet.planned_batch_size or fleet.batch_size
            identity = _identity(config, model, data, fleet.choice.backend, batch)
            done = folder.check_start(identity, config.resume, config.force)
            plan, prefetched = _start_reading(config, index, data, model, batch, done, len(fleet.actors), stored,
                                              reading, times)

            def begin() -> None:  # once a device is up: --force deletes only for a run that can start
                folder.begin(identity, clear=config.force and not config.resume)
                folder.write_plan(BlockPlan.of(plan.blocks, plan.total))

            evaluated = _evaluate(config, fleet, plan, prefetched, folder, begin, progress, times)
            _add_evaluation_phases(phases, times, evaluated)
            fleet.stop_devices()
            # Ray stops while the results are reduced and written: they do not need it.
            stopping = Background(lambda stop: fleet.release(), "npueval-ray-stop")
            try:
                results = _finish(config, folder, fleet, model, data, vocab_checked, plan, evaluated, started_at,
                                  phases, clock, epoch)
                folder.write_timeline(times.table())
            finally:
                stopping.result()
        # results.json is complete before Ray stops; once it has, again with that phase.
        results = dataclasses.replace(results, phases=phases.all())
        folder.write_results(results)
    return RunResult(config.out, results)


def _finish(config: RunConfig, folder: RunFolder, fleet: Fleet, model: ModelSpec | None, data: DataManifest,
            vocab_checked: bool, plan: Plan, evaluated: Evaluated, started_at: str, phases: Phases,
            clock: float, epoch: float) -> Results:
    """Reduce every block, read back from OUT/blocks (so a fresh, a retried and a resumed run
    reduce the same bytes), and write the outputs."""
    with phases.timed("reduce"):
        all_blocks = [folder.load(b.block_id) for b in plan.blocks]
        if config.on_nonfinite == "fail":  # the fresh blocks were checked as they came; a resumed
            for block in all_blocks:       # --on-nonfinite skip run may have saved others
                if block.block_id in plan.done:
                    res.check_finite(block)
        collected = res.collect(all_blocks, np.flatnonzero(plan.keep))
        all_blocks = [b.totals_only() for b in all_blocks]  # their windows are in `collected` now
        results = _results(config, fleet, model, data, vocab_checked, plan, collected, all_blocks, evaluated,
                           started_at, epoch)
        windows = res.windows_table(collected, plan.index)
    # results.json's first writing holds the phases so far; the run's last one adds its own.
    results = dataclasses.replace(results, wall_s=time.perf_counter() - clock, phases=phases.all())
    with phases.timed("write"):
        folder.write_outputs(results, windows, res.result_txt(results))
    return results


def _add_evaluation_phases(phases: Phases, times: BlockTimes, evaluated: Evaluated) -> None:
    """The evaluation, first block sent to last result, and the wait for its first result."""
    phases.add("evaluation", evaluated.started, evaluated.started + evaluated.eval_s)
    if times.first_returned is not None:
        phases.add("first_result", times.first_sent, times.first_returned)


def _plan(config: RunConfig, index: WindowIndex, batch_size: int, done: set[int], devices: int,
          stored: BlockPlan | None, data: DataManifest) -> Plan:
    total = min(config.limit or index.piece.size, index.piece.size)
    if data.mode == "rolling" and 0 < total < index.piece.size:
        total = _whole_documents(index.doc_id, total, config.limit)
    keep = np.zeros(index.piece.size, dtype=bool)
    keep[:total] = drop_last_rows(index.piece[:total], batch_size) if config.drop_last else True
    if stored is not None:  # run.json matched: the same windows, cut as the run began
        if stored.windows != total:
            raise DatasetError(f"--resume: {config.out}/plan.json covers {stored.windows} windows, this run {total}; "
                               "use another --out, or --force to start over")
        blocks = stored.blocks()
    elif config.block_windows:
        blocks = fixed_blocks(total, config.block_windows)
    else:
        blocks = balanced_blocks(total, devices * PER_ACTOR, batch_size, BATCHES_PER_BLOCK)
    if done:
        log.info("resuming: %d of %d blocks already finished in %s", len(done), len(blocks), config.out)
    return Plan(index, total, keep, blocks, done, batch_size)


def _whole_documents(doc_id: np.ndarray, total: int, limit: int) -> int:
    """--limit on a rolling data set: up to the end of the document window `total - 1` is in,
    since its loglikelihood, words and bytes count per document (lm-eval's --limit counts documents)."""
    whole = int(np.searchsorted(doc_id, doc_id[total - 1], side="right"))
    if whole != total:
        log.info("--limit %d: %d windows, to the end of document %d (a rolling data set counts whole documents)",
                 limit, whole, int(doc_id[total - 1]))
    return whole


def _start_reading(config: RunConfig, index: WindowIndex, data: DataManifest, model: ModelSpec | None, batch_size: int,
                   done: set[int], devices: int, stored: BlockPlan | None, stack: ExitStack,
                   events: RunEvents) -> tuple[Plan, Prefetcher]:
    """The plan, and a thread (closed with `stack`) that reads its unfinished blocks into the
    object store ahead of the devices. `run` starts it while the actors start: at 32 devices the
    first round of reads took 0.3 s of eval time when it began only once they had all answered."""
    plan = _plan(config, index, batch_size, done, devices, stored, data)
    reader = BlockReader(config.data, data, plan.keep, model.vocab_size if model else None)
    todo = [b for b in plan.blocks if b.block_id not in plan.done]

    def read(block: Block) -> BlockRows:
        start = time.perf_counter()
        rows = reader.read(block)
        events.block_read(block, time.perf_counter() - start)
        return rows

    return plan, stack.enter_context(Prefetcher(todo, read, depth=prefetch_depth(devices)))


def _evaluate(config: RunConfig, fleet: Fleet, plan: Plan, prefetched: Prefetcher, folder: RunFolder,
              begin: Callable[[], None], progress: Callable[[int, int, int], None] | None,
              events: RunEvents) -> Evaluated:
    """Send the unfinished blocks to the devices, each device as soon as it is up, saving each
    block as it comes back; `begin` makes OUT the run's when the first device is up (or at the
    end, where none was needed)."""
    batch_by_batch: list[str] = []
    begun = False

    def accept(k: int, ref) -> DeviceInfo:
        nonlocal begun
        info = fleet.accept(k, ref)
        if not begun:
            begin()
            begun = True
        if config.device.pipeline and info.ais_bench_api == "infer" and not batch_by_batch:
            batch_by_batch.append(info.name)
            log.warning("%s: this ais_bench has no infer_pipeline (the pre-2024 package the vendor's wheel links "
                        "still serve): one infer call per model batch; the newer ais_bench runs a block's batches "
                        "back to back (docs/npu-hosts.md, \"ais_bench and aclruntime\")", info.name)
        return info

    names = [f"device actor {k}" for k in range(len(fleet.actors))]  # until each answers
    dispatcher = Dispatcher(fleet.actors, names, config.device.max_retries, block_timeout=config.block_timeout,
                            events=events, starting=fleet.ready_refs, accept=accept,
                            wait_for_all=config.wait_for_devices, describe=fleet.describe)
    fresh: list[BlockResult] = []
    windows = sum(int(plan.keep[b.first: b.stop].sum()) for b in plan.blocks if b.block_id in plan.done)
    tokens, total = 0, int(plan.keep.sum())

    saver = BackgroundSaver(folder)

    def finished(result: BlockResult) -> None:
        nonlocal windows, tokens
        if config.on_nonfinite == "fail":
            res.check_finite(result)  # before saving: the run ends on it, and --resume redoes it
        saver.save(result)
        fresh.append(result.totals_only())  # the per-window arrays are read back from OUT/blocks at the end
        windows, tokens = windows + result.windows, tokens + result.scored_tokens
        if progress:
            progress(windows, total, tokens)

    start = time.perf_counter()
    interrupted: KeyboardInterrupt | None = None
    try:
        dispatcher.run(prefetched, finished)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM
        interrupted = exc
    finally:
        saver.close()  # whatever ends the run, every finished block reaches the disk first
        start = dispatcher.first_sent or start  # eval_s: the first block sent to the last result
        eval_s = time.perf_counter() - start
        events.evaluation_ended(time.perf_counter())
    if interrupted is not None:  # counted on disk: Ctrl-C may land between a block's save and its count here
        raise Interrupted(f"{interrupted_by(interrupted)}: {len(plan.done) + saver.saved} of {len(plan.blocks)} "
                          f"blocks are saved in {config.out}; continue with --resume", by=interrupted)
    if not begun:  # nothing was left to evaluate (--resume)
        begin()
    return Evaluated(fresh, start, eval_s, dispatcher.retries, dispatcher.timeouts)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _refuse_held_out(config: RunConfig, folder: RunFolder, model: ModelSpec | None, data: DataManifest) -> None:
    """Fail before starting Ray when OUT holds blocks and neither --resume nor --force was given,
    or, with --resume, blocks of another data set, model or plan (what is known before Ray)."""
    if folder.check_free(config.resume, config.force) and config.resume:
        folder.check_same_run(_identity(config, model, data), partial=True)


def _identity(config: RunConfig, model: ModelSpec | None, data: DataManifest, backend: str | None = None,
              batch_size: int | None = None) -> dict:
    """What the blocks in OUT are blocks of: --resume continues only the same run. Without the
    backend and batch size (the devices say them, once Ray has started) those keys are left out.
    `pipeline` is not part of it: with or without it the blocks are the same bits, so a run may be
    resumed either way."""
    identity = {
        "data_manifest_sha256": file_sha256(config.data / "manifest.json"),
        "model": model.identity if model else None,
        "seq_len": data.n_ctx,
        "limit": config.limit,
        "drop_last": config.drop_last,
    }
    if backend is not None:
        # block_windows None: balanced blocks, which plan.json keeps (a resumed run evaluates those).
        identity.update(backend=backend, batch_size=batch_size, block_windows=config.block_windows)
    return identity


def _results(config: RunConfig, fleet: Fleet, model: ModelSpec | None, data: DataManifest, vocab_checked: bool,
             plan: Plan, collected: res.Collected, all_blocks: list[BlockResult], evaluated: Evaluated,
             started_at: str, epoch: float) -> Results:
    batch_size = plan.batch_size
    answered = fleet.answered_in_order()  # a device still starting when the last block was done did nothing
    nonfinite = res.nonfinite(collected)  # only --on-nonfinite skip gets here with any
    metrics = res.loss(res.finite_only(collected), plan.index, batch_size)
    devices = res.per_device(all_blocks, batch_size, answered)
    return Results(
        mean_ce=res.finite(metrics.mean_ce),
        ppl=res.finite(metrics.perplexity),
        seed_ppl=res.finite(metrics.seed_ppl),
        bits_per_byte=res.finite(metrics.bits_per_byte),
        byte_perplexity=res.finite(metrics.byte_perplexity),
        word_perplexity=res.finite(metrics.word_perplexity),
        guide_ppl=res.finite(metrics.guide_ppl),
        tokens=metrics.scored_tokens,
        bytes=metrics.scored_bytes,
        words=metrics.scored_words,
        windows=metrics.windows,
        windows_dropped=int(plan.total - plan.keep[: plan.total].sum()),
        backend=fleet.choice.backend,
        fallback=fleet.choice.fallback,
        pipeline=config.device.pipeline,
        ais_bench_api=fleet.ais_bench_api,
        retries=evaluated.retries,
        timeouts=tuple(evaluated.timeouts),
        windows_nonfinite=len(nonfinite),
        nonfinite=tuple(nonfinite[:NONFINITE_LISTED]),
        wall_s=None,  # the caller's clock
        speed=res.speed(evaluated.fresh, evaluated.eval_s, batch_size),
        per_device=tuple(devices),
        check=res.run_check(config.device.check_against, devices),
        model_manifest_sha256=model.manifest_sha256 if model else None,
        data_manifest_sha256=file_sha256(config.data / "manifest.json"),
        started_at=started_at,
        ended_at=_now(),
        nll_sum=metrics.nll_sum,
        seed_batches=metrics.seed_batches,
        batch_size=batch_size,
        seq_len=data.n_ctx,
        limit=config.limit,
        drop_last=config.drop_last,
        blocks=len(all_blocks),
        blocks_resumed=len(all_blocks) - len(evaluated.fresh),
        vocab_checked=vocab_checked,
        model=model.name if model else None,
        data=str(config.data),
        provenance=provenance(config.command, [d.host for d in answered]),
        devices_started=len(fleet.ready_refs),
        startup=tuple(fleet.startup(epoch)),
    )
