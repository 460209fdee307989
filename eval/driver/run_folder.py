"""The results folder of a run (OUT): finished blocks, then results.json, windows.parquet, result.txt.

Each finished block is written at once and atomically to OUT/blocks/ (a temporary file renamed),
so a run that dies, is interrupted or is killed loses only the blocks in flight; `--resume`
continues it. OUT/run.json records what the blocks are blocks of (data, model, backend, how they
were cut) and OUT/plan.json the blocks themselves: `--resume` refuses blocks of another run and
evaluates the same blocks on any number of devices; an OUT that holds blocks is refused without
`--resume` or `--force`.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import numpy as np

from npueval.actors.evaluator import BlockResult, CheckStats
from npueval.core.contracts import ContractError, NewerFormat, check_format_version, from_json, to_json
from npueval.core.errors import DatasetError, UserError, counted
from npueval.core.files import atomic_write, atomic_write_with, output_lock

from .background import lower_this_thread
from .blocks import PLAN_FORMAT, BlockPlan
from .results_file import RESULTS, Results
from .timing import TIMELINE

log = logging.getLogger(__name__)

RUN = "run.json"
PLAN = "plan.json"
BLOCKS = "blocks"
OUTPUTS = ("results.json", "windows.parquet", "result.txt", "timeline.parquet")


class RunFolder:
    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.blocks = self.out / BLOCKS

    def held(self) -> ExitStack:
        """OUT is this run's until the returned stack closes: a second run into it is refused (their
        blocks would mix), and an OUT that cannot be written is named before Ray starts, not when
        the first block is saved."""
        return output_lock(self.out)

    def check_free(self, resume: bool, force: bool) -> set[int]:
        """The finished blocks in OUT, refused unless --resume or --force says what to do with them."""
        if self.out.exists() and not self.out.is_dir():
            raise DatasetError(f"--out {self.out} is a file; name a folder")
        held = self.finished()
        if held and not (resume or force):
            raise DatasetError(
                f"--out {self.out} already holds {counted(len(held), 'finished block')} of a run: continue it with "
                "--resume, or start over with --force"
            )
        return held

    def start(self, identity: dict, resume: bool, force: bool) -> set[int]:
        """Prepare OUT for this run; the ids of the blocks already finished (with --resume)."""
        held = self.check_start(identity, resume, force)
        self.begin(identity, clear=force and not resume)
        return held

    def check_start(self, identity: dict, resume: bool, force: bool) -> set[int]:
        """The blocks this run keeps (with --resume), or its refusal; OUT is not changed."""
        held = self.check_free(resume, force)
        if force and not resume:
            return set()
        if held:
            self.check_same_run(identity)
        elif resume:  # not an error: `--resume` may be how a script always starts, the first time too
            log.warning("--resume: %s holds no finished block; starting from the first", self.out)
        return held

    def begin(self, identity: dict, clear: bool) -> None:
        """OUT becomes this run's: with `clear` (--force) the earlier run's files go first; then
        run.json. The driver calls it once a device is up, so a run that cannot start leaves OUT
        as it was."""
        if clear:
            shutil.rmtree(self.blocks, ignore_errors=True)
            for name in (RUN, PLAN, *OUTPUTS):
                (self.out / name).unlink(missing_ok=True)
        try:
            self.blocks.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--out {self.out}: cannot make {BLOCKS}/ there ({exc.strerror or exc}); choose another "
                            "--out") from None
        _write_atomic(self.out / RUN, json.dumps(identity, indent=2) + "\n")

    def check_same_run(self, identity: dict, partial: bool = False) -> None:
        """Refuse (--resume) blocks of another run. A `partial` identity (before Ray has started,
        without what the devices decide) is compared on its own keys only."""
        before = self._identity()
        keys = set(identity) if partial else set(before) | set(identity)
        differ = sorted(k for k in keys if before.get(k) != identity.get(k))
        if differ:
            key = differ[0]
            raise DatasetError(
                f"--resume: the blocks in {self.out} are of another run ({key}: {before.get(key)!r} there, "
                f"{identity.get(key)!r} now); use another --out, or --force to start over"
            )

    def write_plan(self, plan: BlockPlan) -> None:
        _write_atomic(self.out / PLAN, json.dumps(to_json(plan)) + "\n")

    def read_plan(self) -> BlockPlan | None:
        """The blocks the run in OUT was started with; None where it has none (no run yet, or one
        of an npueval that kept no plan: its run.json's block_windows says how it cut them)."""
        path = self.out / PLAN
        if not path.is_file():
            return None
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
            check_format_version(obj, PLAN_FORMAT)
            plan = from_json(BlockPlan, obj)
            plan.check()
        except NewerFormat as exc:
            raise DatasetError(f"{path}: {exc}") from None
        except (json.JSONDecodeError, UnicodeDecodeError, ContractError, ValueError) as exc:
            raise DatasetError(f"--resume: {path} is unreadable ({exc}); start over with --force") from None
        return plan

    def finished(self) -> set[int]:
        if not self.blocks.is_dir():
            return set()
        return {int(p.stem.split("-")[1]) for p in self.blocks.glob("block-*.parquet")}

    def _identity(self) -> dict:
        try:
            return json.loads((self.out / RUN).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            raise DatasetError(f"--resume: {self.out / RUN} is missing or unreadable; start over with "
                               "--force") from None

    def save(self, result: BlockResult) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        meta = {"block_id": result.block_id, "node": result.node_id, "device": result.device,
                "windows": result.windows, "batches": result.batches, "device_s": result.device_s,
                "wall_s": result.wall_s, "device_wait_s": result.device_wait_s,
                "device_start": result.device_start, "device_end": result.device_end,
                "check": asdict(result.check) if result.check else None}
        table = pa.table({"window_id": result.window_ids, "nll_sum": result.window_nll,
                          "n_scored": result.window_scored})
        table = table.replace_schema_metadata({"npueval": json.dumps(meta)})
        _write_atomic(self.blocks / f"block-{result.block_id:06d}.parquet", lambda tmp: pq.write_table(table, tmp))

    def load(self, block_id: int) -> BlockResult:
        import pyarrow.parquet as pq

        path = self.blocks / f"block-{block_id:06d}.parquet"
        table = pq.read_table(path)
        meta = json.loads(table.schema.metadata[b"npueval"])
        nll = table.column("nll_sum").to_numpy()
        scored = table.column("n_scored").to_numpy()
        return BlockResult(
            block_id=meta["block_id"], node_id=meta["node"], device=meta["device"],
            nll_sum=float(np.sum(nll)), scored_tokens=int(scored.sum()), windows=meta["windows"],
            batches=meta["batches"], device_s=meta["device_s"], wall_s=meta["wall_s"],
            window_ids=table.column("window_id").to_numpy(), window_nll=nll, window_scored=scored,
            check=CheckStats(**meta["check"]) if meta["check"] else None,
            # Blocks saved by an earlier npueval have none of these.
            device_wait_s=meta.get("device_wait_s", 0.0),
            device_start=meta.get("device_start", 0.0),
            device_end=meta.get("device_end", 0.0),
        )

    def write_outputs(self, results: Results, windows, result_txt: str) -> None:
        import pyarrow.parquet as pq

        # Row groups of 64 Ki windows: the writer buffers one encoded row group, not the whole file.
        _write_atomic(self.out / "windows.parquet", lambda tmp: pq.write_table(windows, tmp, row_group_size=1 << 16))
        _write_atomic(self.out / "result.txt", result_txt)
        self.write_results(results)

    def write_results(self, results: Results) -> None:
        _write_atomic(self.out / RESULTS, results.dumps())

    def write_timeline(self, table) -> None:
        """OUT/timeline.parquet: the blocks this command evaluated, and when (eval/driver/timing.py)."""
        import pyarrow.parquet as pq

        _write_atomic(self.out / TIMELINE, lambda tmp: pq.write_table(table, tmp))


class BackgroundSaver:
    """Saves finished blocks in a thread, off the dispatch loop (a Parquet write costs milliseconds
    the loop needs for the devices); `close` waits until every block handed to it is on disk."""

    def __init__(self, folder: RunFolder):
        from concurrent.futures import ThreadPoolExecutor

        self.folder = folder
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="npueval-save",
                                        initializer=lower_this_thread)
        self._pending: list = []
        self.saved = 0  # blocks on disk (final once `close` has returned)

    def save(self, result: BlockResult) -> None:
        failed = [f for f in self._pending if f.done() and f.exception() is not None]
        if failed:  # a full disk ends the run now, not after every device has finished
            raise failed[0].exception()
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._pool.submit(self._save, result))

    def _save(self, result: BlockResult) -> None:
        self.folder.save(result)
        self.saved += 1  # only the one saving thread counts

    def close(self) -> None:
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pool.shutdown(wait=True)


def _write_atomic(path: Path, content: str | Callable[[Path], None]) -> None:
    """Write a temporary file, then rename it over PATH: a reader sees the old file or the new one,
    never half of one. A failed write (a full disk, a file-size limit) leaves nothing behind and
    is a one-line error naming the file."""
    try:
        if isinstance(content, str):
            atomic_write(path, content)
        else:
            atomic_write_with(path, content)
    except OSError as exc:
        raise UserError(f"--out {path.parent}: cannot write {path.name} ({exc.strerror or exc}); free some space "
                            "(or choose another --out), then continue with --resume") from None
