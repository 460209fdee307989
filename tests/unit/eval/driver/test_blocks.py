"""The block planners (eval/driver/blocks.py): every window once and in order, the sizes they
promise, and the balance they are for, checked on a model of the dispatch (devices that take the
next block as one frees up, two held at once)."""

from __future__ import annotations

import heapq
import itertools
import json
import math

import pytest

from npueval.core.errors import DatasetError
from npueval.eval.driver.blocks import BlockPlan, balanced_blocks, fixed_blocks
from npueval.eval.driver.run_folder import RunFolder

CASES = [(w, n, b) for w in (1, 7, 8, 9, 100, 301, 9255, 100_000) for n in (1, 2, 3, 8, 16, 32) for b in (1, 4, 8)]


def batches_of(blocks, batch_size: int) -> list[int]:
    return [math.ceil((b.stop - b.first) / batch_size) for b in blocks]


def makespan(batches: list[int], devices: int, held: int = 2) -> int:
    """When the last device finishes, in model batches: blocks go out in order, `held` to each device
    at the start, then one to each device as it finishes one; a device runs its blocks back to back."""
    queue, busy_until, done = iter(batches), [0] * devices, []
    for _ in range(held):
        for d in range(devices):
            size = next(queue, None)
            if size is not None:
                busy_until[d] += size
                heapq.heappush(done, (busy_until[d], d))
    end = 0
    while done:
        t, d = heapq.heappop(done)
        end = max(end, t)
        size = next(queue, None)
        if size is not None:
            busy_until[d] = max(busy_until[d], t) + size
            heapq.heappush(done, (busy_until[d], d))
    return end


@pytest.mark.parametrize("windows, devices, batch", CASES)
def test_balanced_blocks_cover_every_window_once_in_whole_batches_shrinking(windows, devices, batch):
    blocks = balanced_blocks(windows, 2 * devices, batch, max_batches=32)
    assert [b.block_id for b in blocks] == list(range(len(blocks)))
    assert blocks[0].first == 0 and blocks[-1].stop == windows
    assert all(a.stop == b.first for a, b in itertools.pairwise(blocks))
    assert all((b.stop - b.first) % batch == 0 for b in blocks[:-1])  # only the last batch may be short
    sizes = batches_of(blocks, batch)
    assert all(1 <= s <= 32 for s in sizes) and sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("windows, devices, batch", CASES)
def test_balanced_blocks_end_every_device_within_a_batch_of_the_ideal(windows, devices, batch):
    total = math.ceil(windows / batch)
    blocks = balanced_blocks(windows, 2 * devices, batch, max_batches=32)
    assert makespan(batches_of(blocks, batch), devices) <= math.ceil(total / devices) + 1


def test_fixed_blocks_fall_short_where_balanced_ones_do_not():
    """The port's eval set (9,255 windows) at 16 devices, B = 8: fixed blocks of 256 windows make
    37 blocks, three rounds for some devices, two for the rest; balanced ones end within a batch."""
    total = math.ceil(9255 / 8)
    fixed = fixed_blocks(9255, 256)
    assert len(fixed) == 37 and fixed[-1].stop == 9255
    assert makespan(batches_of(fixed, 8), 16) == 3 * 32  # 2.26 rounds of work take three
    balanced = balanced_blocks(9255, 32, 8, max_batches=32)
    assert makespan(batches_of(balanced, 8), 16) <= math.ceil(total / 16) + 1
    assert batches_of(balanced, 8)[:2] == [32, 32]  # large while much is left


def test_a_plan_reads_back_from_the_run_folder(tmp_path):
    blocks = balanced_blocks(301, 8, 8, max_batches=32)
    folder = RunFolder(tmp_path)
    folder.write_plan(BlockPlan.of(blocks, 301))
    assert json.loads((tmp_path / "plan.json").read_text())["starts"][:2] == [0, blocks[1].first]
    assert folder.read_plan().blocks() == blocks
    assert RunFolder(tmp_path / "none").read_plan() is None


@pytest.mark.parametrize("content, message", [
    ("{", r"--resume: .*plan\.json is unreadable \(.*\); start over with --force"),
    ('{"format_version": 1, "windows": 10, "starts": [0, 5, 5]}', r"do not cut 0…10 into blocks"),
    ('{"format_version": 1, "windows": 10, "starts": [3]}', r"do not cut 0…10 into blocks"),
    ('{"format_version": 1, "windows": 10, "starts": "0"}', r"starts"),
    ('{"format_version": 2, "windows": 10, "starts": [0]}', r"plan\.json: format_version 2 is newer"),
])
def test_a_damaged_plan_is_named(tmp_path, content, message):
    (tmp_path / "plan.json").write_text(content)
    with pytest.raises(DatasetError, match=message):
        RunFolder(tmp_path).read_plan()
