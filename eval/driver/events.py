"""What a run says as it goes, for whoever watches it: a benchmark's probe, an application that
embeds npueval. `run(config, events=...)` takes a subclass that overrides what it needs; the
base class ignores everything.

Every method is called in the driver's main thread, except `block_read` (the read-ahead
thread). Times are `time.perf_counter()` seconds. A watcher must be quick: it runs on the
dispatch loop's critical path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from npueval.actors.evaluator import BlockResult

    from .blocks import Block


class RunEvents:
    def evaluation_started(self, at: float) -> None:
        """The first device to answer is about to get the first block: eval_s starts."""

    def block_read(self, block: Block, seconds: float) -> None:
        """The block's rows were read from the shards (read-ahead thread), in `seconds`."""

    def block_sent(self, block: Block, device: str, at: float) -> None:
        """The block went to `device` (again, after a failure)."""

    def result_handled(self, result: BlockResult, returned_at: float, seconds: float) -> None:
        """A block's result came back at `returned_at` and took `seconds` to check and queue for saving."""

    def evaluation_ended(self, at: float) -> None:
        """The last result is in (or the run failed): eval_s ends."""
