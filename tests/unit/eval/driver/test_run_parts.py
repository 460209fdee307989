"""The parts of `npueval run` that need no Ray: blocks, the results folder, the reduction's
exactly-once check, the device actor as a plain class, and the sick-chip check."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest
from run_data import FAKES, synthetic_manifest

from npueval.actors.evaluator import BlockResult, BlockRows, Evaluator
from npueval.actors.simulated import SimulatedBackend
from npueval.actors.worker import DeviceWorker, WorkerSpec, check_chip_health
from npueval.core.errors import DatasetError, RunError, UserError
from npueval.eval.data.dataset import ShardWriter
from npueval.eval.data.windows import Windows
from npueval.eval.driver.blocks import Block, BlockReader, fixed_blocks, read_index
from npueval.eval.driver.results import collect
from npueval.eval.driver.results_file import RunCheck
from npueval.eval.driver.run_folder import BackgroundSaver, RunFolder

L = 8


@pytest.fixture
def data(tmp_path):
    """23 windows of 3 pieces in shards of 5 rows; row r's ids are r·10 + position."""
    writer = ShardWriter(tmp_path, L, rows_per_shard=5)
    row = 0
    for piece, count in ((0, 9), (1, 7), (2, 7)):
        ids = (np.arange(row, row + count)[:, None] * 10 + np.arange(L)).astype(np.int32)
        writer.write([Windows(piece, ids, np.full(count, L), np.ones(count, np.int64), np.arange(row, row + count))])
        row += count
    shards = writer.close()
    manifest = synthetic_manifest(shards, L)
    return tmp_path, manifest


def test_blocks_cover_the_windows_once():
    assert fixed_blocks(10, 4) == [Block(0, 0, 4), Block(1, 4, 8), Block(2, 8, 10)]
    assert fixed_blocks(0, 4) == []


def test_a_block_read_across_shards_keeps_only_the_scored_windows(data):
    folder, manifest = data
    keep = np.ones(23, bool)
    keep[[4, 5, 12]] = False
    reader = BlockReader(folder, manifest, keep, vocab_size=1000)
    rows = reader.read(Block(0, 3, 14))  # shards 0, 1 and 2
    assert rows.window_ids.tolist() == [3, 6, 7, 8, 9, 10, 11, 13]
    assert (rows.input_ids[:, 0] == rows.window_ids * 10).all()
    assert rows.input_ids.shape == (8, L) and rows.n_valid.tolist() == [L] * 8
    index = read_index(folder, manifest)
    assert index.piece.tolist() == [0] * 9 + [1] * 7 + [2] * 7 and index.doc_id.tolist() == list(range(23))


def test_a_token_id_outside_the_vocabulary_names_shard_and_row(data):
    folder, manifest = data
    reader = BlockReader(folder, manifest, np.ones(23, bool), vocab_size=120)  # row 12 holds id 120
    with pytest.raises(DatasetError, match=r"shard-00002\.parquet: row 2 holds token id 120 at position 0, "
                                           r"outside the model's vocabulary of 120"):
        reader.read(Block(0, 10, 15))


def block_result(block_id: int, window_ids, nll) -> BlockResult:
    window_ids = np.asarray(window_ids, np.int64)
    return BlockResult(block_id, "node-a", "npu:0", float(np.sum(nll)), 3 * len(window_ids), len(window_ids), 1,
                       0.25, 0.5, window_ids, np.asarray(nll, np.float64), np.full(len(window_ids), 3, np.int64))


def test_a_saved_block_reads_back_bit_for_bit(tmp_path):
    folder = RunFolder(tmp_path / "out")
    folder.start({"model": "m"}, resume=False, force=False)
    saved = replace(block_result(7, [14, 15], [1 / 3, np.pi]), device_wait_s=0.125, device_start=1765060000.125,
                    device_end=1765060001.5)
    folder.save(saved)
    loaded = folder.load(7)
    assert loaded.window_nll.tobytes() == saved.window_nll.tobytes()
    assert (loaded.block_id, loaded.node_id, loaded.device, loaded.device_s, loaded.batches) == (7, "node-a", "npu:0",
                                                                                                  0.25, 1)
    assert (loaded.device_wait_s, loaded.device_start, loaded.device_end) == (0.125, 1765060000.125, 1765060001.5)
    assert folder.finished() == {7} and not list((tmp_path / "out" / "blocks").glob(".*"))


def test_a_block_saved_without_its_device_wait_reads_back_with_none(tmp_path):
    """Blocks saved by an earlier npueval have no device_wait_s, device_start, device_end: --resume
    reads them as 0."""
    import json

    import pyarrow.parquet as pq

    folder = RunFolder(tmp_path / "out")
    folder.start({"model": "m"}, resume=False, force=False)
    folder.save(block_result(3, [6, 7], [1.0, 2.0]))
    path = folder.blocks / "block-000003.parquet"
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"npueval"])
    for key in ("device_wait_s", "device_start", "device_end"):
        del meta[key]
    pq.write_table(table.replace_schema_metadata({"npueval": json.dumps(meta)}), path)
    loaded = folder.load(3)
    assert (loaded.device_wait_s, loaded.device_start, loaded.device_end) == (0.0, 0.0, 0.0)
    assert loaded.window_nll.tolist() == [1.0, 2.0]


def test_the_background_saver_counts_what_reached_the_disk(tmp_path):
    folder = RunFolder(tmp_path / "out")
    folder.start({"model": "m"}, resume=False, force=False)
    saver = BackgroundSaver(folder)
    for k in range(5):
        saver.save(block_result(k, [2 * k], [float(k)]))
    saver.close()
    assert saver.saved == 5 and folder.finished() == set(range(5))


def test_the_results_folder_refuses_blocks_of_another_run(tmp_path):
    folder = RunFolder(tmp_path / "out")
    folder.start({"model": "m", "limit": 10}, resume=False, force=False)
    folder.save(block_result(0, [0], [1.0]))
    with pytest.raises(DatasetError, match=r"holds 1 finished block of a run: continue it with --resume"):
        folder.start({"model": "m", "limit": 10}, resume=False, force=False)
    with pytest.raises(DatasetError, match=r"of another run \(model: 'm' there, 'n' now\)"):
        folder.start({"model": "n", "limit": 10}, resume=True, force=False)
    assert folder.start({"model": "m", "limit": 10}, resume=True, force=False) == {0}
    assert folder.check_start({"model": "n", "limit": 10}, resume=False, force=True) == set()
    assert folder.finished() == {0} and (folder.out / "run.json").is_file()  # the check changes nothing
    folder.begin({"model": "n", "limit": 10}, clear=True)  # --force, once a device is up
    assert folder.finished() == set() and '"model": "n"' in (folder.out / "run.json").read_text()


def test_resume_on_a_folder_without_blocks_starts_from_the_first_and_says_so(tmp_path, caplog):
    folder = RunFolder(tmp_path / "out")
    with caplog.at_level("WARNING", logger="npueval.eval.driver.run_folder"):
        assert folder.start({"model": "m"}, resume=True, force=False) == set()
    assert [r.getMessage() for r in caplog.records] == [
        f"--resume: {tmp_path / 'out'} holds no finished block; starting from the first"]


def test_the_reduction_proves_every_window_was_counted_once():
    blocks = [block_result(0, [0, 1], [1.0, 2.0]), block_result(1, [2, 3], [3.0, 4.0])]
    assert collect(blocks, np.arange(4)).nll.tolist() == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(RunError, match=r"hold 4 windows, the run needs 5 \(1 missing, 0 counted twice\)"):
        collect(blocks, np.arange(5))
    with pytest.raises(RunError, match=r"1 counted twice"):
        collect([*blocks, block_result(2, [3], [4.0])], np.arange(5))


def test_windows_table_names_each_windows_device_in_window_order_whatever_the_block_order():
    """Device and node are dictionary-encoded (a code per window, each name once); blocks that
    came back out of order (a resumed run) are sorted by window_id, in order they are not copied."""
    import pyarrow as pa

    from npueval.eval.driver.blocks import WindowIndex
    from npueval.eval.driver.results import windows_table

    def on(block, device, node):
        return replace(block, device=device, node_id=node)

    index = WindowIndex(np.array([0, 0, 1, 1, 1], np.int32), np.array([7, 7, 8, 9, 9], np.int64))
    blocks = [on(block_result(1, [3, 4], [4.0, 5.0]), "npu:1", "nodeB"),
              on(block_result(0, [0, 1, 2], [1.0, 2.0, 3.0]), "npu:0", "nodeA")]
    for ordered in (blocks[::-1], blocks):
        collected = collect(ordered, np.arange(5))
        table = windows_table(collected, index)
        assert table.column("window_id").to_pylist() == [0, 1, 2, 3, 4]
        assert table.column("nll_sum").to_pylist() == [1.0, 2.0, 3.0, 4.0, 5.0]
        assert table.column("piece").to_pylist() == [0, 0, 1, 1, 1] and table.column("doc_id").to_pylist()[3] == 9
        assert table.column("device").to_pylist() == ["npu:0"] * 3 + ["npu:1"] * 2
        assert table.column("node").to_pylist() == ["nodeA"] * 3 + ["nodeB"] * 2
        assert pa.types.is_dictionary(table.schema.field("device").type)
        device_of = {0: "npu:0", 1: "npu:0", 2: "npu:0", 3: "npu:1", 4: "npu:1"}
        assert [collected.device(i) for i in range(5)] == [device_of[w] for w in collected.window_ids.tolist()]
    in_order = collect(blocks[::-1], np.arange(5))
    assert np.shares_memory(windows_table(in_order, index).column("nll_sum").to_numpy(), in_order.nll)


def test_totals_only_keeps_every_total_and_drops_the_windows():
    block = block_result(4, [8, 9], [1.5, 2.5])
    slim = block.totals_only()
    assert (slim.block_id, slim.nll_sum, slim.scored_tokens, slim.windows, slim.device) == (
        4, block.nll_sum, block.scored_tokens, 2, block.device)
    assert slim.window_ids.size == slim.window_nll.size == slim.window_scored.size == 0


def test_the_device_actor_as_a_plain_class():
    worker = DeviceWorker(WorkerSpec(backend="simulated", batch_size=4, seq_len=L, device_ms=1), "cpu:0")
    assert worker.describe().batch_size == 4 and worker.device == "cpu:0" and worker.node_id == "local"
    ids = np.arange(5 * L).reshape(5, L) % 50
    rows = BlockRows(input_ids=ids, score_from=np.ones(5, np.int16), n_valid=np.full(5, L, np.int16),
                     window_ids=np.arange(5))
    result = worker.evaluate(3, rows)
    expected = Evaluator(SimulatedBackend(4, L)).evaluate(3, ids, rows.score_from, rows.n_valid, np.arange(5))
    assert result.window_nll.tolist() == expected.window_nll.tolist() and result.batches == 2
    bench = worker.bench(loop=3, warmup=1)
    assert bench.batches == 3 and bench.device_s == pytest.approx(0.003)
    assert worker.evaluator.pipeline is True
    per_batch = DeviceWorker(WorkerSpec(backend="simulated", batch_size=4, seq_len=L, pipeline=False), "cpu:1")
    with pytest.raises(RunError, match=r"cpu:1: called before describe\(\) opened its backend"):
        per_batch.evaluate(3, rows)
    assert per_batch.evaluator is None and per_batch.describe().batch_size == 4
    assert per_batch.evaluator.pipeline is False
    assert per_batch.evaluate(3, rows).window_nll.tobytes() == result.window_nll.tobytes()


def test_an_actor_that_cannot_start_says_why_on_every_call(tmp_path):
    from npueval.actors.worker import ModelFile

    class Broken:
        def __call__(self, spec, model_path):
            raise UserError("--model m.onnx: onnxruntime cannot load it")

    spec = WorkerSpec(backend="simulated")
    worker = DeviceWorker(spec, "cpu:0", factory=Broken())
    for call in (worker.describe, lambda: worker.evaluate(0, {})):
        with pytest.raises(UserError, match="onnxruntime cannot load it"):
            call()
    with pytest.raises(UserError, match="--backend onnx needs --model"):
        WorkerSpec(backend="onnx")
    assert ModelFile("m", "0" * 64, 1, None).name == "m"


@pytest.fixture
def sick_host(tmp_path, monkeypatch):
    """The 310P3 Duo capture (tests/fakes/npu-smi-info-310p3-duo.txt) with card 1 chip 1 (logic id 1) in Alarm."""
    capture = (FAKES / "npu-smi-info-310p3-duo.txt").read_bytes()
    first = capture.index(b"| OK              |")
    second = capture.index(b"| OK              |", first + 1)
    sick = capture[:second] + b"| Alarm           |" + capture[second + len(b"| OK              |"):]
    (tmp_path / "info.txt").write_bytes(sick)
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NPU_SMI_INFO", str(tmp_path / "info.txt"))


def test_an_actor_on_a_sick_chip_refuses_unless_allowed(sick_host, caplog):
    check_chip_health("0", allow_unhealthy=False)
    with pytest.raises(UserError, match=r"NPU logic id 1 \(card 1 chip 1\) reports health Alarm: .*--allow-unhealthy"):
        check_chip_health("1", allow_unhealthy=False)
    check_chip_health("1", allow_unhealthy=True)
    assert "running on it anyway" in caplog.text


@pytest.mark.parametrize("started, said", [(4, "1 of 4 devices (the others were up after the last block had gone "
                                               "out)"), (1, "1 device"), (None, "1 device")])
def test_the_summary_says_how_many_of_the_devices_started_did_the_work(tmp_path, started, said):
    from run_data import results_folder

    from npueval.eval.driver.results import summary_table
    from npueval.eval.driver.results_file import Results

    results = Results.read(results_folder(tmp_path / "a", [0], [1.0], [1], devices_started=started) / "results.json")
    assert summary_table(results).splitlines()[0].endswith(f"backend onnx, {said}")


@pytest.mark.parametrize("n, said", [(1, ("1 window, 1 scored token", "1 window", "1 window")),
                                     (2, ("2 windows, 2 scored tokens", "2 windows", "2 windows"))])
def test_the_summary_counts_in_the_singular_for_one(tmp_path, n, said):
    from run_data import results_folder

    from npueval.eval.driver.results import summary_table
    from npueval.eval.driver.results_file import Results

    folder = results_folder(tmp_path / "a", list(range(n)), [1.0] * n, [1] * n, windows_dropped=n,
                            windows_nonfinite=n)
    lines = summary_table(Results.read(folder / "results.json")).splitlines()
    assert lines[0] == f"npueval run: {said[0]}, backend onnx, 1 device"
    assert f"  dropped (--drop-last) {said[1]}" in lines
    assert f"  non-finite, skipped  {said[2]} (--on-nonfinite skip)" in lines


@pytest.mark.parametrize("check, said, column", [
    (None, None, None),
    (RunCheck("ref.onnx", 0, 0, None, None),
     "  check                NOT DONE: no batch was compared with ref.onnx (--check-against), so nothing is known of "
     "the devices' numbers against it", "not checked"),
    (RunCheck("ref.onnx", 4, 2044, 3.1e-6, 2.5e-6),
     "  check                4 batches (2044 tokens) against ref.onnx: largest error 3.1e-06 nats, 2.50e-06 relative",
     "2.50e-06"),
])
def test_the_summary_never_claims_a_check_that_was_not_done(tmp_path, check, said, column):
    """A --check-against of which no batch ran used to end with the check column empty and nothing
    said; a run without one shows no check column at all."""
    from run_data import results_folder

    from npueval.eval.driver.results import summary_table
    from npueval.eval.driver.results_file import Check, DeviceRow, Results

    row = DeviceRow(node="n" * 12, device="cpu:0", windows=1, batches=1, device_s=1.0, fps=5.0,
                    check=Check(4, 2044, 3.1e-6, 2.5e-6) if check and check.batches else None)
    lines = summary_table(Results.read(results_folder(tmp_path / "a", [0], [1.0], [1], check=check,
                                                      per_device=(row,)) / "results.json")).splitlines()
    assert [line for line in lines if line.startswith("  check ")] == ([said] if said else [])
    header, device = lines[-2:]
    assert header.endswith("FPS" if column is None else "FPS  check max rel err")
    assert device.endswith("5.0" if column is None else f"5.0  {column}")


def test_a_reference_that_cannot_run_the_data_ends_the_run_naming_the_flag():
    """Its failure used to be retried like a device's, on a device that then checked no more: the
    run ended with no batch checked and nothing said."""
    from npueval.actors.simulated import SimulatedBackend

    class Misfit(SimulatedBackend):  # a reference built for windows of 16
        def nll(self, input_ids):
            raise ValueError(f"a batch must be (1…2, 16) ids, not {input_ids.shape}")

    evaluator = Evaluator(SimulatedBackend(2, L), reference=Misfit(2, 16), check_batches=1)
    ids = np.ones((2, L), np.int64)
    with pytest.raises(UserError, match=r"^--check-against: the reference model cannot run this data's batches "
                                        r"\(ValueError: a batch must be \(1…2, 16\) ids, not \(2, 8\)\); give the "
                                        r"ONNX of the model being evaluated$"):
        evaluator.evaluate(0, ids, np.ones(2, np.int16), np.full(2, L, np.int16), np.arange(2))
