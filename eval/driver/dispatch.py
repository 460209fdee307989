"""Sending blocks to the device actors, exactly once (docs/design.md, "Dispatch: plain actors").

Blocks are read from the shards and put into the object store ahead of time by a `Prefetcher`
thread (decoding a shard and copying a block stay off the dispatch loop's critical path), so a
device that frees up gets its next block at once. `npueval run` starts it while the device
actors are still starting, so the first round is ready when they are.

Each actor has up to `per_actor` calls in flight (the next block waits on the device while the
current one runs). At the start, the calls beyond the first wait in the driver until every
device has had time to take its first one (`first_round_hold`), or until a result comes back: at
32 devices on two cores the first round takes 0.2–0.3 s to reach its actors, and second calls
sent at once took the CPU from first ones still on their way (BENCHMARKS.md, "`npueval run` scaling").
A call that fails because its actor died, or with an error that is not the user's, sends its
block again (to whichever actor is free) and counts a retry; a block that fails more than
`max_retries` times ends the run, naming the block and the device. A dead actor is probed: Ray
restarts it up to its max_restarts and it gets work again; one that stays dead is left out.
Results come back through `on_result`, which saves each block as it arrives.

With `block_timeout`, a call that has been running longer than that (counted from when it
reached the head of its actor's queue) is taken for a hung device: the actor is killed, Ray
restarts it, its calls fail and their blocks go to the other devices; `timeouts` names them.

A device whose process may end on an error instead of raising it (`may_abort`: the om backend
through ais_bench's infer_pipeline) keeps the blocks of a death until its probe answers: the
restarted actor says whether its previous process died inside such a call (actors/node_files.py),
and if it did, the run ends there, naming the device, the block and `--no-pipeline`, rather than
feeding that block to device after device. Every failure is logged and reported with its root
cause: the type and message of the actor's own exception, not Ray's wrapper.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum

from npueval.actors.evaluator import BlockResult, BlockRows
from npueval.actors.node_files import CallInProgress
from npueval.actors.worker import CALLS_AT_ONCE, DeviceInfo
from npueval.core.errors import NpuevalError, RunError, counted, root_cause

from .background import lower_this_thread
from .blocks import Block
from .events import RunEvents
from .results_file import Timeout

log = logging.getLogger(__name__)

#: How long a dead device's restart is waited for (--block-timeout, when given, instead).
PROBE_TIMEOUT_S = 60.0
#: Calls in flight per actor: the next block is unpacked in the actor while the current one runs.
PER_ACTOR = CALLS_AT_ONCE
#: Per device, how long the calls beyond the first are held back at the start of a run (measured
#: on two cores: 32 first calls reached their actors over 0.2–0.3 s, 6–10 ms each).
FIRST_ROUND_S_PER_DEVICE = 0.010


def first_round_hold(devices: int) -> float:
    """Seconds the second round waits at the start: the time the first round takes to be taken up."""
    return devices * FIRST_ROUND_S_PER_DEVICE


def prefetch_depth(devices: int) -> int:
    """Blocks read ahead: two rounds of every device's calls in flight."""
    return 2 * PER_ACTOR * devices


class SlotState(Enum):
    STARTING = "starting"  # created: takes work once it has answered that it is up
    READY = "ready"  # takes work
    KILLED = "killed"  # killed here for a hung call: its calls are failing, it gets no work
    PROBING = "probing"  # dead: asked to describe itself, it answers once Ray has restarted it
    DEAD = "dead"  # left out of the run


@dataclass
class _Slot:
    actor: object
    name: str  # "npu:3 on node 4f1c…", for messages
    state: SlotState = SlotState.READY
    calls: deque = field(default_factory=deque)  # refs in flight, oldest first (an actor runs them in order)
    head_since: float = 0.0  # when the oldest call in flight began to run, about
    may_abort: bool = False  # an error may end its process (infer_pipeline): deaths wait for the probe
    parked: list = field(default_factory=list)  # (block, rows) of a death, until the probe says why
    timed_out: bool = False  # killed here for a hung call: its death needs no other explanation
    accepted: bool = True  # its answer has been checked (False from its start until it answers)

    @property
    def in_flight(self) -> int:
        return len(self.calls)

    def sent(self, ref) -> None:
        if not self.calls:
            self.head_since = time.monotonic()
        self.calls.append(ref)

    def returned(self, ref) -> None:
        self.calls.remove(ref)
        self.head_since = time.monotonic()


class Prefetcher:
    """(block, its rows in the object store), in block order, read up to `depth` blocks ahead in a
    thread. An error while reading (a bad token id) comes out where its block would have."""

    _END = object()

    def __init__(self, blocks: list[Block], read: Callable[[Block], BlockRows], depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(blocks, read), daemon=True, name="npueval-prefetch")
        self._thread.start()

    def _work(self, blocks: list[Block], read: Callable[[Block], BlockRows]) -> None:
        import ray

        lower_this_thread()  # reading ahead must not take the CPU from a device actor waiting to start
        try:
            for block in blocks:
                if not self._put((block, ray.put(read(block)))):
                    return
        except BaseException as exc:
            self._put(exc)
            return
        self._put(self._END)

    def _put(self, item) -> bool:
        """Wait for room in the queue unless the consumer has gone; False if it has."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[tuple[Block, object]]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Dispatcher:
    """One run's sending: `run` once, then `retries` and `timeouts` say what it took.

    With `starting` (each actor's describe() call, while the actors start), a device gets work as
    soon as its own answer has come and `accept(k, ref)` has checked it (a DeviceInfo: the slot
    takes its name and whether it may abort from it; or the run's end), not when every device is
    up. The run may end before a late device has answered: it then does no work. `wait_for_all`
    holds every block back until all have answered. `describe(actor)` makes the describe() call
    that probes a dead actor (fleet.py's, which hands it the model files again)."""

    def __init__(self, actors: list, names: list[str], max_retries: int, per_actor: int = PER_ACTOR,
                 block_timeout: float | None = None, hold_s: float | None = None,
                 may_abort: list[bool] | None = None, events: RunEvents | None = None,
                 starting: list | None = None, accept: Callable[[int, object], DeviceInfo] | None = None,
                 wait_for_all: bool = False, describe: Callable[[object], object] | None = None):
        may_abort = may_abort or [False] * len(actors)
        self.events = events or RunEvents()
        self.slots = [_Slot(a, n, may_abort=m) for a, n, m in zip(actors, names, may_abort)]
        self._starting: dict[object, int] = {}  # an actor's first describe() → its slot
        self._any_started = not starting  # whether a device has been up (without `starting`: all are)
        self._wait_for_all = wait_for_all  # no work until every device of `starting` has answered
        self._stranded_since: float | None = None
        self._last_loss: str | None = None  # the last device left out, and why
        self._accept = accept
        self._describe = describe or (lambda actor: actor.describe.remote())
        for k, ref in enumerate(starting or ()):
            self.slots[k].state, self.slots[k].accepted = SlotState.STARTING, False
            self._starting[ref] = k
        self.max_retries, self.per_actor, self.block_timeout = max_retries, per_actor, block_timeout
        self.hold_s = first_round_hold(len(self.slots)) if hold_s is None else hold_s
        self.retries = 0
        self.first_sent: float | None = None
        self.timeouts: list[Timeout] = []  # calls ended by block_timeout
        self._retry: deque[tuple[Block, object]] = deque()  # failed blocks go out again before fresh ones
        self._in_flight: dict[object, tuple[Block, object, int]] = {}  # call → (block, rows, slot)
        self._probes: dict[object, tuple[int, float]] = {}  # a dead actor's describe() → (slot, sent at)
        self._failures: Counter[int] = Counter()
        self._fresh: Iterator[tuple[Block, object]] = iter(())
        self._exhausted = False
        self._held_until = 0.0  # the second round's calls wait till then, or a result

    def run(self, blocks: Iterable[tuple[Block, object]], on_result: Callable[[BlockResult], None]) -> None:
        """Send `blocks` ((block, its rows in the object store), e.g. a Prefetcher) to the devices;
        each result goes to `on_result` as it comes back."""
        import ray

        self._fresh = iter(blocks)
        self._held_until = math.inf  # from the first block sent: the first round's hold
        while True:
            holding = self._send()
            if self._finished():
                return
            self._note_stranded()
            # ray.wait gives the first ready ref in list order: a device that has come up is taken
            # in before another result of those already working.
            ready, _ = ray.wait([*self._starting, *self._probes, *self._in_flight], num_returns=1,
                                timeout=self._wait_s(holding))
            if not ready:
                self._on_timeout()
                continue
            (ref,) = ready
            if ref in self._starting:
                self._on_started(self._starting.pop(ref), ref)
                continue
            self._held_until = 0.0  # a device is back for more: the first round has been taken up
            if ref in self._probes:
                self._on_probe(ref, self._probes.pop(ref)[0])
                continue
            block, rows, k = self._in_flight.pop(ref)
            self.slots[k].returned(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:
                self._on_failure(block, rows, k, exc)
                continue
            self._on_result(k, result, on_result)

    def _send(self) -> bool:
        """Fill the ready devices' calls, round by round so that every device gets a block before
        any gets a second; True while the first round's hold keeps the second one back."""
        holding = time.monotonic() < self._held_until
        if self._wait_for_all and any(not s.accepted and s.state is not SlotState.DEAD for s in self.slots):
            return holding
        for depth in range(1, (1 if holding else self.per_actor) + 1):
            for k, slot in enumerate(self.slots):
                if slot.state is SlotState.READY and slot.in_flight < depth:
                    item = self._next_block()
                    if item is None:
                        return holding
                    block, rows = item
                    if self.first_sent is None:  # the evaluation (eval_s) starts with the first device's work
                        self.first_sent = time.perf_counter()
                        self._held_until = time.monotonic() + self.hold_s
                        self.events.evaluation_started(self.first_sent)
                    ref = slot.actor.evaluate.remote(block.block_id, rows)
                    self._in_flight[ref] = (block, rows, k)
                    slot.sent(ref)
                    self.events.block_sent(block, slot.name, time.perf_counter())
        return holding

    def _next_block(self) -> tuple[Block, object] | None:
        if self._retry:
            return self._retry.popleft()
        if not self._exhausted:
            item = next(self._fresh, None)
            self._exhausted = item is None
            return item
        return None

    def _finished(self) -> bool:
        """Whether nothing is left to wait for; a RunError if blocks are left and no device is."""
        work_left = bool(self._retry) or not self._exhausted or any(slot.parked for slot in self.slots)
        if self._in_flight or ((self._probes or self._starting) and work_left):  # nor one still starting or
            return False                                                         # restarting, once all is done
        if work_left:
            left = f"{len(self._retry)} or more blocks were left unevaluated; the finished blocks are saved"
            if self.timeouts and all(s.timed_out for s in self.slots if s.state is SlotState.DEAD):
                # The flag, not the devices: each was ended by it, and its restart awaited as long.
                raise RunError(f"every device failed: each had a call run past --block-timeout "
                               f"{self.block_timeout:g} s, was restarted and did not come back within it; {left}; "
                               "give a --block-timeout well above the time a block takes on these devices (or "
                               "none), then continue with --resume")
            raise RunError(f"every device failed (the last, {self._last_loss}); {left}, continue with --resume")
        return True

    def _on_started(self, k: int, ref) -> None:
        """Actor k is up: it takes work from now on, under the name its answer gives. One whose
        process died while it started (an abort, its node lost) is probed like any dead device;
        one whose backend raised ends the run with that error (`accept`)."""
        slot = self.slots[k]
        if _died_while_starting(ref):
            log.warning("%s died while starting: waiting for Ray to restart it", slot.name)
            self._probe(k)
            return
        self._take_up(k, self._accept(k, ref))

    def _take_up(self, k: int, info: DeviceInfo) -> None:
        slot = self.slots[k]
        slot.name, slot.may_abort, slot.state = info.name, info.ais_bench_api == "pipeline", SlotState.READY
        slot.accepted = True
        self._any_started = True

    def _note_stranded(self) -> None:
        """Whether the run now waits only for devices still starting, every device that was up
        having been lost: from then on they have probe_timeout to come up (one whose node is gone
        never does: Ray holds its first call until it can place the actor again)."""
        stranded = (self._starting and self._any_started and not self._in_flight and not self._probes
                    and not any(slot.state is SlotState.READY for slot in self.slots))
        if not stranded:
            self._stranded_since = None
        elif self._stranded_since is None:
            self._stranded_since = time.monotonic()

    def _give_up_starting(self) -> None:
        if self._stranded_since is not None and time.monotonic() - self._stranded_since > self.probe_timeout:
            for k in list(self._starting.values()):
                self._leave_out(k, f"it had not come up {self.probe_timeout:g} s after every device that was up "
                                   "was lost")
            self._starting.clear()

    def _on_result(self, k: int, result: BlockResult, on_result: Callable[[BlockResult], None]) -> None:
        slot = self.slots[k]
        if slot.state is SlotState.KILLED and not slot.calls:  # it answered as it was being killed:
            self._probe(k)  # wait for Ray's restart like any death
        returned_at = time.perf_counter()
        on_result(result)
        self.events.result_handled(result, returned_at, time.perf_counter() - returned_at)

    def _on_failure(self, block: Block, rows, k: int, exc: Exception) -> None:
        """A call failed: the user's error ends the run; any other sends its block again (after
        the probe, for a device that may have died inside infer_pipeline) and counts a retry."""
        cause = getattr(exc, "cause", None)
        if isinstance(cause, NpuevalError):
            raise cause from None
        slot = self.slots[k]
        self._failures[block.block_id] += 1
        self.retries += 1
        died, why = _actor_died(exc), _failure(exc, slot)
        log.warning("block %d (windows %d–%d) failed on %s: %s", block.block_id, block.first,
                    block.stop - 1, slot.name, why)
        if self._failures[block.block_id] > self.max_retries:
            raise RunError(
                f"block {block.block_id} (windows {block.first}–{block.stop - 1}) failed "
                f"{counted(self._failures[block.block_id], 'time')}, last on {slot.name}: {why}; "
                "the finished blocks are saved, continue with --resume"
            ) from None
        if died and slot.may_abort and slot.state is not SlotState.DEAD:
            slot.parked.append((block, rows))
        else:
            self._retry.append((block, rows))
        if died and slot.state in (SlotState.READY, SlotState.KILLED):
            self._probe(k)

    def _on_timeout(self) -> None:
        """ray.wait came back empty: a call may have run past block_timeout, a probe past its own."""
        if self.block_timeout is not None:
            self._end_hung_calls()
        self._give_up_probes()
        self._give_up_starting()

    def _probe(self, k: int) -> None:
        """Ask a dead or killed actor to describe itself: it answers once Ray has restarted it."""
        self.slots[k].state = SlotState.PROBING
        self._probes[self._describe(self.slots[k].actor)] = (k, time.monotonic())

    @property
    def probe_timeout(self) -> float:
        return self.block_timeout or PROBE_TIMEOUT_S

    def _wait_s(self, holding: bool) -> float | None:
        """How long ray.wait may block: until a call in flight would pass block_timeout, a
        restarting device its probe_timeout, or the first round's hold its end."""
        deadlines = [started + self.probe_timeout for _, started in self._probes.values()]
        if self.block_timeout is not None:
            deadlines += [s.head_since + self.block_timeout for s in self.slots
                          if s.calls and s.state is SlotState.READY]
        if holding and self._held_until < math.inf:
            deadlines.append(self._held_until)
        if self._stranded_since is not None:
            deadlines.append(self._stranded_since + self.probe_timeout)
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _give_up_probes(self) -> None:
        """A restarted actor that has not answered within probe_timeout (Ray cannot place it: its
        node is gone and no other has room) is left out of the run."""
        now = time.monotonic()
        for ref, (k, started) in list(self._probes.items()):
            if now - started > self.probe_timeout:
                del self._probes[ref]
                self._leave_out(k, f"it did not come back within {self.probe_timeout:g} s")

    def _end_hung_calls(self) -> None:
        """Kill every actor whose oldest call has run past block_timeout: Ray restarts it, its
        calls fail, and their blocks are sent again like any failed block."""
        import ray

        now = time.monotonic()
        for slot in self.slots:
            if slot.calls and slot.state is SlotState.READY and now - slot.head_since > self.block_timeout:
                block = self._in_flight[slot.calls[0]][0]
                log.warning("block %d (windows %d–%d) on %s: no answer after %g s (--block-timeout); "
                            "restarting the device and sending its blocks elsewhere",
                            block.block_id, block.first, block.stop - 1, slot.name, self.block_timeout)
                self.timeouts.append(Timeout(block.block_id, slot.name))
                # Its calls' failures come back through ray.wait, however long Ray takes to notice
                # (seconds on a busy host): until then it gets no work and is not timed again.
                slot.state, slot.timed_out = SlotState.KILLED, True
                ray.kill(slot.actor, no_restart=False)

    def _on_probe(self, ref, k: int) -> None:
        """A restarted actor answered (it is back, unless its previous process died inside a call
        that ends the process on error: then the run ends), or failed to (it is left out)."""
        import ray

        slot = self.slots[k]
        try:
            described = ray.get(ref)
        except Exception as exc:
            self._leave_out(k, root_cause(exc))
            return
        if not slot.accepted:  # it died while starting: this is its first answer
            self._take_up(k, self._accept(k, ref))
            log.info("%s is up (restarted by Ray)", slot.name)
            return
        death = getattr(described, "previous_death", None)
        if death is not None and not slot.timed_out:  # a hung call killed here leaves its note too
            raise RunError(_died_inside(slot.name, death, slot.parked)) from None
        slot.state, slot.timed_out = SlotState.READY, False
        self._retry.extend(slot.parked)
        slot.parked.clear()
        log.info("%s is back (restarted by Ray)", slot.name)

    def _leave_out(self, k: int, why: str) -> None:
        slot = self.slots[k]
        slot.state = SlotState.DEAD
        self._last_loss = f"{slot.name}: {why}"
        self._retry.extend(slot.parked)
        slot.parked.clear()
        log.warning("%s is left out of the run: %s", slot.name, why)


def _died_inside(device: str, death: CallInProgress, parked: list) -> str:
    """The one line that ends a run whose device died inside ais_bench's infer_pipeline."""
    block = next((b for b, _ in parked if b.block_id == death.block), None)
    windows = f" (windows {block.first}–{block.stop - 1})" if block is not None else ""
    return (f"{device} died inside {death.call} on block {death.block}{windows}: an error there ends the "
            "process instead of raising, so its message is only in that node's Ray worker log; continue with "
            "--resume --no-pipeline, which runs the device batch by batch and reports the error; the finished "
            "blocks are saved")


def _died_while_starting(ref) -> bool:
    """Whether an actor's first describe() (done) failed because its process died or its node was
    lost, rather than because its constructor or backend raised (that is the user's error)."""
    import ray
    from ray.exceptions import RayActorError

    try:
        ray.get(ref, timeout=0)
    except RayActorError as exc:
        return not exc.actor_init_failed
    except Exception:
        return False
    return False


def _actor_died(exc: Exception) -> bool:
    from ray.exceptions import RayActorError

    return isinstance(exc, RayActorError)


def _failure(exc: Exception, slot: _Slot) -> str:
    """Why a call failed, on one line: the actor's own exception, or that its process died."""
    if not _actor_died(exc):
        return root_cause(exc)
    why = f"its process died or was killed ({type(exc).__name__})"
    if slot.may_abort:
        why += "; an error inside ais_bench's infer_pipeline ends the process: --no-pipeline reports it"
    return why
