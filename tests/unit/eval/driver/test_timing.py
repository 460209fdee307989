"""Where a run's time goes: its phases, and each block's times as OUT/timeline.parquet holds them."""

import math
from types import SimpleNamespace

import pytest

from npueval.eval.driver.events import RunEvents
from npueval.eval.driver.timing import BlockTimes, Phases


def test_phases_are_seconds_from_the_start_in_order_of_start_then_end(caplog):
    phases = Phases(started=100.0)
    phases.add("write", 103.5, 104.25)
    phases.add("ray_start", 100.0, 102.0)
    with caplog.at_level("DEBUG", logger="npueval.eval.driver.timing"):
        phases.add("shards_verified", 100.0, 100.5)
    assert [(p.name, p.start_s, p.end_s) for p in phases.all()] == [
        ("shards_verified", 0.0, 0.5), ("ray_start", 0.0, 2.0), ("write", 3.5, 4.25)]
    assert "phase shards_verified" in caplog.text and "(0.500 s)" in caplog.text  # -v logs each as it ends


def test_a_timed_phase_is_kept_when_its_step_fails():
    phases = Phases(started=0.0)
    with pytest.raises(RuntimeError), phases.timed("reduce"):
        raise RuntimeError("disk")
    (phase,) = phases.all()
    assert phase.name == "reduce" and phase.end_s >= phase.start_s


class Heard(RunEvents):
    def __init__(self):
        self.heard = []

    def block_sent(self, block, device, at):
        self.heard.append(("sent", block.block_id))

    def result_handled(self, result, returned_at, seconds):
        self.heard.append(("handled", result.block_id))


def result(block_id, device, start, end):
    return SimpleNamespace(block_id=block_id, node_id="ab" * 10, device=device, windows=8, device_start=start,
                           device_end=end)


def test_block_times_keep_the_last_send_and_the_device_clock_and_pass_every_event_on():
    heard = Heard()
    times = BlockTimes(heard, started=10.0, started_epoch=1000.0)
    times.block_sent(SimpleNamespace(block_id=1), "npu:0", 11.0)
    times.block_sent(SimpleNamespace(block_id=0), "npu:1", 11.5)
    times.block_sent(SimpleNamespace(block_id=1), "npu:1", 12.0)  # failed on npu:0, sent again
    times.result_handled(result(1, "npu:1", 1002.25, 1003.0), 13.5, 0.001)
    times.result_handled(result(0, "npu:1", 0.0, 0.0), 14.0, 0.001)  # the backend said nothing
    times.block_sent(SimpleNamespace(block_id=2), "npu:0", 14.5)  # never came back: not in the table
    table = times.table().to_pydict()
    assert table["block_id"] == [0, 1] and table["device"] == ["npu:1", "npu:1"] and table["windows"] == [8, 8]
    assert table["sent_s"] == [1.5, 2.0] and table["returned_s"] == [4.0, 3.5]
    assert math.isnan(table["device_start_s"][0]) and math.isnan(table["device_end_s"][0])
    assert (table["device_start_s"][1], table["device_end_s"][1]) == (2.25, 3.0)
    assert (times.first_sent, times.first_returned) == (11.0, 13.5)
    assert heard.heard == [("sent", 1), ("sent", 0), ("sent", 1), ("handled", 1), ("handled", 0), ("sent", 2)]
