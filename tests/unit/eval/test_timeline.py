"""`npueval report`'s timeline: OUT/timeline.parquet read back, the devices' busy shares, the text
and the plot's panel."""

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from run_data import results_folder

from npueval.core.errors import UserError
from npueval.eval.driver.results_file import Phase
from npueval.eval.report import describe, load_run, plot
from npueval.eval.timeline import describe_time, load_timeline

PHASES = (Phase("ray_start", 0.0, 1.0), Phase("evaluation", 2.0, 6.0), Phase("write", 6.5, 7.0))


def write_timeline(folder, rows):
    """rows: (block_id, device, sent, returned, device_start, device_end)."""
    cols = list(zip(*rows))
    pq.write_table(pa.table({
        "block_id": pa.array(cols[0], pa.int64()), "node": pa.array(["4f1c2a9b77"] * len(rows)).dictionary_encode(),
        "device": pa.array(cols[1]).dictionary_encode(), "windows": pa.array([8] * len(rows), pa.int64()),
        "sent_s": np.array(cols[2], float), "returned_s": np.array(cols[3], float),
        "device_start_s": np.array(cols[4], float), "device_end_s": np.array(cols[5], float)}),
        folder / "timeline.parquet")


ROWS = [(0, "npu:10", 2.0, 4.1, 2.1, 4.0), (1, "npu:2", 2.0, 5.1, 3.0, 5.0), (2, "npu:10", 4.1, 6.0, 4.0, 5.9),
        (3, "npu:2", 5.1, 5.9, math.nan, math.nan)]


def test_busy_shares_use_the_device_clock_or_else_the_drivers(tmp_path):
    write_timeline(tmp_path, ROWS)
    timeline = load_timeline(tmp_path, PHASES)
    assert timeline.devices == ("npu:2", "npu:10")  # by number, not as text; one node: not named
    assert timeline.span == (2.0, 6.0)
    # npu:2: 3.0–5.0 on its clock, then 5.1–5.9 as sent and returned; npu:10: 2.1–4.0 and 4.0–5.9
    assert timeline.busy_share() == pytest.approx([2.8 / 4, 3.8 / 4])
    lines = describe_time(PHASES, timeline)
    assert lines == ["  phases (s from the start): ray_start 0.00–1.00, evaluation 2.00–6.00, write 6.50–7.00",
                     "  devices busy 82.5% of the evaluation (4.00 s, 4 blocks on 2 devices); least busy "
                     "npu:2 70.0%"]


def test_one_block_on_one_device_is_said_in_the_singular(tmp_path):
    write_timeline(tmp_path, ROWS[:1])
    (line,) = describe_time((), load_timeline(tmp_path, PHASES))
    assert line == "  devices busy 47.5% of the evaluation (4.00 s, 1 block on 1 device)"


def test_a_run_without_a_timeline_reads_as_before(tmp_path):
    assert load_timeline(tmp_path, PHASES) is None
    run = load_run(results_folder(tmp_path / "a", [0], [1.0], [1]))
    assert run.timeline is None and "devices busy" not in describe(run)


def test_a_damaged_timeline_is_named(tmp_path):
    (tmp_path / "timeline.parquet").write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match=f"{tmp_path / 'timeline.parquet'}: unreadable .*rerun with --resume"):
        load_timeline(tmp_path, PHASES)


def test_the_plot_gives_each_run_with_a_timeline_a_panel_of_its_devices(tmp_path):
    pytest.importorskip("matplotlib")
    folder = results_folder(tmp_path / "a", [0, 1], [1.0, 2.0], [1, 1], phases=PHASES)
    write_timeline(folder, ROWS)
    run = load_run(folder)
    assert "devices busy 82.5% of the evaluation" in describe(run)
    png = plot([run], tmp_path / "p.png").read_bytes()
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1320, round((4.8 + 2.4) * 110))  # the plots, then one timeline of two rows


def test_the_report_says_when_the_devices_came_up_and_the_plot_hatches_it(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from npueval.eval import timeline
    from npueval.eval.driver.results_file import DeviceStart

    startup = (DeviceStart("4f1c2a9b77", "npu:10", 1.0, 1.2, 1.5, 0.3, 1.55),
               DeviceStart("4f1c2a9b77", "npu:2", 1.0, 1.3, 2.9, 1.5, 3.0))
    folder = results_folder(tmp_path / "a", [0, 1], [1.0, 2.0], [1, 1], phases=PHASES, startup=startup)
    write_timeline(folder, ROWS)
    run = load_run(folder)
    assert ("devices up (s from the start): first 1.55, median 2.27, last 3.00 (npu:2); opening a backend took "
            "1.50 s at most") in describe(run)
    drawn = []
    draw = timeline.draw

    def spy(ax, *args):  # the hatched bars' (start, length, bottom) once drawn
        draw(ax, *args)
        for bars in (c for c in ax.collections if c.get_hatch()):
            for path in bars.get_paths():
                x, y = path.vertices[:, 0], path.vertices[:, 1]
                drawn.append((round(float(x.min()), 3), round(float(x.max() - x.min()), 3), round(float(y.min()), 2)))

    monkeypatch.setattr("npueval.eval.report.draw", spy)
    plot([run], tmp_path / "p.png")
    # npu:2 is drawn first (row 0), npu:10 second: each hatched from its creation to its backend open
    assert sorted(drawn) == [(1.0, 0.5, 0.75), (1.0, 1.9, -0.25)]
