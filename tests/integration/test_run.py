"""`npueval run` on a real local Ray with resources={"NPU": 4} and the simulated backend.

The numbers are checked against a numpy reference written from the simulated backend's documented NLL function alone;
faults (an actor killed, the driver killed, a block that keeps failing) against a call ledger
that the backend keeps in each actor (tests/ledger.py).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest
from ledger import LedgerFactory, read_ledger, row_hash
from run_data import read_shards, simulated_reference
from starting import CannotStart, DiesOnceAtStart
from terminal import run_on_a_terminal

from npueval.core.errors import DatasetError, RunError, UserError
from npueval.eval.driver.run import RunConfig, run

BLOCK = 24  # windows per block: three batches of 8, a dozen blocks


def simulated(data, out, **kw) -> RunConfig:
    kw.setdefault("block_windows", BLOCK)
    return RunConfig.from_flags(data=data, out=out, backend="simulated", batch_size=8, **kw)


@pytest.fixture(scope="module")
def baseline(ray_npu4, seed_data, tmp_path_factory):
    return run(simulated(seed_data, tmp_path_factory.mktemp("baseline") / "out", devices=4, wait_for_devices=True)
               ).results.to_json()


def block_first_rows(data, block: int) -> str:
    return row_hash(read_shards(data)["input_ids"][block * BLOCK])


def test_simulated_run_equals_the_numpy_reference(baseline, seed_data):
    nll_sum, tokens, _per_window = simulated_reference(seed_data)
    manifest = json.loads((seed_data / "manifest.json").read_text())
    assert baseline["tokens"] == tokens == manifest["scored_tokens"]
    assert baseline["windows"] == manifest["windows"] > 10 * BLOCK
    assert baseline["mean_ce"] == pytest.approx(nll_sum / tokens, rel=1e-12)
    assert baseline["ppl"] == pytest.approx(np.exp(nll_sum / tokens), rel=1e-12)
    assert baseline["retries"] == 0 and baseline["fallback"] is None and baseline["backend"] == "simulated"
    assert sorted(d["device"] for d in baseline["per_device"]) == ["npu:0", "npu:1", "npu:2", "npu:3"]
    assert all(d["windows"] > 0 for d in baseline["per_device"])
    assert sum(d["windows"] for d in baseline["per_device"]) == manifest["windows"]


def test_results_say_when_each_device_came_up(baseline):
    """results.json's startup: every device, its actor asked for, its process up, its backend
    open, the driver hearing it, in that order and inside the run's phases."""
    startup = baseline["startup"]
    phases = {p["name"]: p for p in baseline["phases"]}
    assert sorted(d["device"] for d in startup) == [f"npu:{k}" for k in range(4)]
    for d in startup:
        assert phases["ray_start"]["end_s"] <= d["created_s"] <= d["process_s"] <= d["ready_s"] <= d["heard_s"]
        assert 0 <= d["open_s"] <= d["ready_s"] - d["process_s"]
    heard = sorted(d["heard_s"] for d in startup)
    assert [d["heard_s"] for d in startup] == heard  # in the order the driver heard them
    assert heard[0] == pytest.approx(phases["first_device_ready"]["end_s"], abs=0.05)
    assert heard[-1] == pytest.approx(phases["devices_ready"]["end_s"], abs=0.05)
    assert startup[0]["created_s"] == pytest.approx(phases["first_device_ready"]["start_s"], abs=0.05)


def test_results_folder_holds_every_window_once(baseline, seed_data, tmp_path):
    out = tmp_path / "out"
    results = run(simulated(seed_data, out, devices=2, wait_for_devices=True)).results.to_json()
    _, _, per_window = simulated_reference(seed_data)
    windows = pq.read_table(out / "windows.parquet").to_pydict()
    assert windows["window_id"] == list(range(len(per_window)))
    np.testing.assert_allclose(windows["nll_sum"], per_window, rtol=1e-12)
    shards = read_shards(seed_data)
    assert windows["piece"] == shards["piece"].tolist() and windows["doc_id"] == shards["doc_id"].tolist()
    assert set(windows["device"]) == {"npu:0", "npu:1"}
    on_disk = json.loads((out / "results.json").read_text())
    for key in ("mean_ce", "ppl", "seed_ppl", "tokens", "windows", "windows_dropped", "backend", "fallback",
                "retries", "wall_s", "eval_s", "samples_per_s", "tokens_per_s", "device_fps_sum", "per_device",
                "model_manifest_sha256", "data_manifest_sha256", "started_at", "ended_at", "provenance"):
        assert key in on_disk, key
    assert on_disk["mean_ce"] == results["mean_ce"] == baseline["mean_ce"]  # devices and blocks change no bit
    assert on_disk["seed_ppl"] == baseline["seed_ppl"]
    assert on_disk["provenance"]["ray"] and on_disk["provenance"]["hosts"]
    assert (out / "result.txt").read_text().startswith(f"seed_ppl {results['seed_ppl']:.4f}\n")


def test_a_watcher_hears_every_block_read_sent_and_handled_inside_eval_s(baseline, seed_data, tmp_path):
    from npueval.eval.driver.events import RunEvents

    heard = []

    class Watcher(RunEvents):
        def evaluation_started(self, at):
            heard.append(("started", None, at))

        def block_read(self, block, seconds):
            heard.append(("read", block.block_id, seconds))

        def block_sent(self, block, device, at):
            heard.append(("sent", (block.block_id, device.split(" on node ")[0]), at))

        def result_handled(self, result, returned_at, seconds):
            heard.append(("handled", (result.block_id, result.device), returned_at))

        def evaluation_ended(self, at):
            heard.append(("ended", None, at))

    results = run(simulated(seed_data, tmp_path / "out", devices=4, wait_for_devices=True), events=Watcher()).results
    blocks = list(range(results.blocks))
    by_kind = {kind: [what for k, what, _ in heard if k == kind] for kind in ("read", "sent", "handled")}
    assert sorted(by_kind["read"]) == blocks  # read ahead, in block order, once each
    assert by_kind["read"] == blocks
    assert sorted(b for b, _ in by_kind["sent"]) == blocks and sorted(b for b, _ in by_kind["handled"]) == blocks
    assert dict(by_kind["sent"]) == dict(by_kind["handled"])  # each block came back from the device it went to
    assert {d for _, d in by_kind["sent"]} == {"npu:0", "npu:1", "npu:2", "npu:3"}
    timed = [(k, at) for k, _, at in heard if k != "read"]
    assert timed[0][0] == "started" and timed[-1][0] == "ended"
    assert [at for _, at in timed] == sorted(at for _, at in timed)
    assert timed[-1][1] - timed[0][1] == pytest.approx(results.speed.eval_s, abs=0.05)
    assert results.mean_ce == baseline["mean_ce"]


def test_an_actor_unpacks_its_next_block_while_the_device_runs_one(ray_npu4, seed_data, tmp_path):
    """Each actor takes two calls at once: the second waits for the device (device_wait_s) instead
    of in Ray's queue, and the numbers stay the reference's bits."""
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    results = run(simulated(seed_data, out, devices=2, device_ms=20)).results.to_json()
    waits = [json.loads(pq.read_schema(p).metadata[b"npueval"])["device_wait_s"]
             for p in sorted((out / "blocks").glob("block-*.parquet"))]
    assert len(waits) == results["blocks"] > 4
    # A block arrives while the device runs the one before it (3 batches, 60 ms) and waits for it;
    # one call at a time, no block would wait more than the hand-over to the device thread.
    assert sum(w > 0.01 for w in waits) >= len(waits) // 2
    nll_sum, tokens, _ = simulated_reference(seed_data)
    assert results["mean_ce"] == pytest.approx(nll_sum / tokens, rel=1e-12)
    assert results["host_overhead"] is not None


def test_a_device_actor_keeps_its_start_up_objects_out_of_the_garbage_collector(ray_npu4):
    """Ray makes every worker run gc.collect() at once when an object store passes 70% full: with
    the imports and the backend frozen, that collection sees only what the calls allocated."""
    import ray

    from npueval.actors.worker import WorkerSpec, remote_workers

    (actor,) = remote_workers(WorkerSpec("simulated"), 1, max_restarts=0)
    try:
        # A lambda, so that cloudpickle sends it by value (the actor cannot import this module).
        frozen, tracked = ray.get(actor.__ray_call__.remote(lambda worker: (gc.get_freeze_count(),
                                                                            len(gc.get_objects()))))
    finally:
        ray.kill(actor)
    assert frozen > 50_000  # Ray, numpy and npueval's modules: what a full collection used to walk
    assert tracked < frozen / 10


def test_seed_ppl_and_drop_last_follow_the_port(ray_npu4, seed_data, tmp_path):
    """The port's number: per piece, batches of B consecutive windows; --drop-last drops each
    piece's incomplete last batch (the port's protocol, step 9)."""
    shards = read_shards(seed_data)
    _, _, per_window = simulated_reference(seed_data)
    scored = (shards["n_valid"] - shards["score_from"]).astype(np.int64)
    for drop_last in (False, True):
        batch_means, kept = [], np.zeros(len(per_window), bool)
        for piece in np.unique(shards["piece"]):
            rows = np.flatnonzero(shards["piece"] == piece)
            for lo in range(0, len(rows), 8):
                batch = rows[lo: lo + 8]
                if drop_last and len(batch) < 8:
                    continue
                kept[batch] = True
                batch_means.append(per_window[batch].sum() / scored[batch].sum())
        results = run(simulated(seed_data, tmp_path / str(drop_last), devices=3, drop_last=drop_last)).results.to_json()
        assert results["seed_ppl"] == pytest.approx(np.exp(np.mean(batch_means)), rel=1e-12)
        assert results["windows"] == kept.sum()
        assert results["windows_dropped"] == (len(per_window) - kept.sum() if drop_last else 0)
        assert results["mean_ce"] == pytest.approx(per_window[kept].sum() / scored[kept].sum(), rel=1e-12)
    assert results["windows_dropped"] > 0


def test_limit_evaluates_the_first_windows(ray_npu4, seed_data, tmp_path):
    results = run(simulated(seed_data, tmp_path / "out", devices=2, limit=50)).results.to_json()
    keep = np.arange(len(read_shards(seed_data)["piece"])) < 50
    nll_sum, tokens, _ = simulated_reference(seed_data, keep)
    assert results["windows"] == 50 and results["tokens"] == tokens
    assert results["mean_ce"] == pytest.approx(nll_sum / tokens, rel=1e-12)


def test_an_actor_killed_mid_block_changes_no_number(baseline, seed_data, tmp_path):
    ledger = tmp_path / "ledger"
    killed_block = 5
    factory = LedgerFactory(str(ledger), kill_self_at=block_first_rows(seed_data, killed_block))
    results = run(simulated(seed_data, tmp_path / "out", devices=4), factory=factory).results.to_json()
    assert results["retries"] > 0
    assert (results["mean_ce"], results["seed_ppl"], results["tokens"]) == (
        baseline["mean_ce"], baseline["seed_ppl"], baseline["tokens"])
    calls = read_ledger(ledger)
    first = block_first_rows(seed_data, killed_block)
    ran_it = [pid for pid, batches in calls.items() if any(first in b for b in batches)]
    assert len(ran_it) == 2, "the killed process started the block, a restarted one ran it again"
    windows = pq.read_table(tmp_path / "out" / "windows.parquet").column("window_id").to_pylist()
    assert windows == list(range(baseline["windows"]))


def test_an_actor_killed_every_fourth_block_changes_no_number(baseline, seed_data, tmp_path):
    blocks = baseline["blocks"]
    killed = list(range(3, blocks, 4))
    ledger = tmp_path / "ledger"
    factory = LedgerFactory(str(ledger), kill_self_at=tuple(block_first_rows(seed_data, b) for b in killed))
    # Every device takes part (the process count below assumes it), however late one comes up.
    results = run(simulated(seed_data, tmp_path / "out", devices=4, max_retries=len(killed) + 1,
                            wait_for_devices=True), factory=factory).results.to_json()
    assert len(killed) >= 2 and results["retries"] >= len(killed)  # each kill fails its calls in flight
    assert (results["nll_sum"], results["seed_ppl"], results["tokens"]) == (
        baseline["nll_sum"], baseline["seed_ppl"], baseline["tokens"])
    calls = read_ledger(ledger)
    for b in killed:
        first = block_first_rows(seed_data, b)
        assert len([pid for pid, batches in calls.items() if any(first in x for x in batches)]) == 2
    assert len(calls) == 4 + len(killed)  # every kill took one process; Ray started one in its place
    windows = pq.read_table(tmp_path / "out" / "windows.parquet").column("window_id").to_pylist()
    assert windows == list(range(baseline["windows"]))


def test_a_block_that_keeps_failing_ends_the_run_and_keeps_the_rest(ray_npu4, seed_data, tmp_path):
    out = tmp_path / "out"
    factory = LedgerFactory(str(tmp_path / "ledger"), fail_at=block_first_rows(seed_data, 3))
    with pytest.raises(RunError, match=r"block 3 \(windows 72–95\) failed 3 times, last on npu:\d on node"):
        run(simulated(seed_data, out, devices=2, max_retries=2), factory=factory)
    finished = {p.name for p in (out / "blocks").iterdir()}
    assert "block-000000.parquet" in finished and "block-000003.parquet" not in finished
    assert not (out / "results.json").exists()
    with pytest.raises(DatasetError, match=r"already holds \d+ finished blocks.*--resume.*--force"):
        run(simulated(seed_data, out, devices=2))


#: Where the driver is SIGKILLed, and on how many devices it runs: when that block's first row
#: reaches a device (-1: the last block; on one device, block 0 arrives before any block has been
#: evaluated), or (None) once every block is saved and windows.parquet and result.txt are written,
#: with results.json's temporary complete but not yet renamed (os.replace patched in the driver).
KILL_POINTS = {"first block": (0, 1), "block 6": (6, 2), "last block": (-1, 2), "before results.json": (None, 2)}


def kill_the_driver(seed_data, out, ledger, block: int | None, devices: int) -> subprocess.CompletedProcess:
    """Run the driver in a separate process joined to this Ray, and SIGKILL it at a seeded point."""
    import ray

    kill = f"kill_pid_at=({block_first_rows(seed_data, block)!r}, os.getpid())" if block is not None else ""
    script = textwrap.dedent(f"""
        import os, signal
        from ledger import LedgerFactory
        from npueval.eval.driver.run import RunConfig, run
        if {block is None!r}:
            real_replace = os.replace
            def replace(src, dst, *a, **kw):
                if os.path.basename(dst) == "results.json":
                    os.kill(os.getpid(), signal.SIGKILL)
                return real_replace(src, dst, *a, **kw)
            os.replace = replace
        factory = LedgerFactory({str(ledger)!r}, {kill})
        run(RunConfig.from_flags(data={str(seed_data)!r}, out={str(out)!r}, backend="simulated", batch_size=8,
                                 devices={devices},
                      block_windows={BLOCK}, address={ray.get_runtime_context().gcs_address!r}), factory=factory)
    """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)


def files_in(out) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*")}


def saved(blocks) -> set[str]:
    return {f"blocks/block-{b:06d}.parquet" for b in blocks}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_driver_killed_then_resume_gives_the_same_numbers(ray_npu4, baseline, seed_data, tmp_path, point):
    """The driver (a separate process joined to this Ray) is killed at a seeded point: no file in OUT
    is half-written, and --resume finishes the run without running any finished block again."""
    out, first_ledger, second_ledger = tmp_path / "out", tmp_path / "ledger1", tmp_path / "ledger2"
    block, devices = KILL_POINTS[point]
    killed = None if block is None else block % baseline["blocks"]
    driver = kill_the_driver(seed_data, out, first_ledger, killed, devices)
    assert driver.returncode == -9, driver.stderr[-2000:]
    finished = sorted(int(p.stem.split("-")[1]) for p in (out / "blocks").glob("block-*.parquet"))
    left = files_in(out)
    for b in finished:  # every block saved under its name is whole
        assert pq.read_table(out / "blocks" / f"block-{b:06d}.parquet").num_rows == min(
            BLOCK, baseline["windows"] - b * BLOCK)
    if killed is None:  # all saved; windows.parquet and result.txt written; results.json not
        assert finished == list(range(baseline["blocks"]))
        assert left == {"run.json", "plan.json", "blocks", *saved(finished), "windows.parquet", "result.txt",
                        ".results.json.tmp"}
    elif killed == 0:  # on one device block 0 is the first call: nothing was evaluated, nothing saved
        assert finished == [] and left == {"run.json", "plan.json", "blocks"}
    else:  # mid-run: never the block killed. Results came back before it was sent, but their saving is
        # a background thread's (nice 19), which on a loaded machine may not have written one yet.
        assert killed not in finished and len(finished) < baseline["blocks"]
        # A kill that lands while the saver writes a block leaves that block's temporary, never the block.
        temporaries = left - {"run.json", "plan.json", "blocks", *saved(finished)}
        assert len(temporaries) <= 1 and temporaries <= {f"blocks/.block-{b:06d}.parquet.tmp"
                                                          for b in range(baseline["blocks"]) if b not in finished}

    if finished:
        with pytest.raises(DatasetError, match="--resume"):
            run(simulated(seed_data, out, devices=2), factory=LedgerFactory(str(second_ledger)))
    # Resumed on three devices: blocks are ranges of window_id, whatever device runs them.
    resumed = run(simulated(seed_data, out, devices=3, resume=True),
                  factory=LedgerFactory(str(second_ledger))).results.to_json()
    assert (resumed["mean_ce"], resumed["seed_ppl"], resumed["tokens"], resumed["windows"]) == (
        baseline["mean_ce"], baseline["seed_ppl"], baseline["tokens"], baseline["windows"])
    assert resumed["blocks_resumed"] == len(finished)
    ran_again = {h for batches in read_ledger(second_ledger).values() for b in batches for h in b}
    shards = read_shards(seed_data)
    for b in range(baseline["blocks"]):
        rows = {row_hash(r) for r in shards["input_ids"][b * BLOCK: (b + 1) * BLOCK]}
        if b in finished:
            assert not ran_again & rows, f"finished block {b} was run again"
        else:
            assert rows <= ran_again, f"block {b} was not evaluated by --resume"
    assert files_in(out) == {"run.json", "plan.json", "blocks", *saved(range(baseline["blocks"])), "windows.parquet",
                             "result.txt", "results.json", "timeline.parquet"}  # no temporary left


def test_resume_on_other_devices_keeps_the_balanced_plan_of_the_start(ray_npu4, baseline, seed_data, tmp_path):
    """Balanced blocks depend on the devices; a run begun on four and resumed on two evaluates the
    four-device blocks it began with, runs no finished one again, and gives the same numbers."""
    from npueval.eval.driver.blocks import BlockPlan, balanced_blocks
    from npueval.eval.driver.dispatch import PER_ACTOR
    from npueval.eval.driver.run import BATCHES_PER_BLOCK

    windows = baseline["windows"]
    on_four = balanced_blocks(windows, 4 * PER_ACTOR, 8, BATCHES_PER_BLOCK)
    assert on_four != balanced_blocks(windows, 2 * PER_ACTOR, 8, BATCHES_PER_BLOCK)  # the test means something
    shards = read_shards(seed_data)["input_ids"]
    out, failing = tmp_path / "out", on_four[len(on_four) // 2]
    with pytest.raises(RunError, match=rf"block {failing.block_id} \(windows {failing.first}–"):
        run(simulated(seed_data, out, devices=4, block_windows=None, max_retries=0),
            factory=LedgerFactory(str(tmp_path / "ledger1"), fail_at=row_hash(shards[failing.first])))
    plan = (out / "plan.json").read_text()
    assert BlockPlan(**json.loads(plan)).blocks() == on_four
    finished = {int(p.stem.split("-")[1]) for p in (out / "blocks").glob("block-*.parquet")}
    assert finished and failing.block_id not in finished

    resumed = run(simulated(seed_data, out, devices=2, block_windows=None, resume=True),
                  factory=LedgerFactory(str(tmp_path / "ledger2"))).results.to_json()
    assert (resumed["mean_ce"], resumed["seed_ppl"], resumed["tokens"], resumed["windows"]) == (
        baseline["mean_ce"], baseline["seed_ppl"], baseline["tokens"], baseline["windows"])
    assert (resumed["blocks"], resumed["blocks_resumed"]) == (len(on_four), len(finished))
    assert (out / "plan.json").read_text() == plan
    ran_again = {h for batches in read_ledger(tmp_path / "ledger2").values() for b in batches for h in b}
    for block in on_four:
        rows = {row_hash(r) for r in shards[block.first: block.stop]}
        assert (rows & ran_again == set()) if block.block_id in finished else rows <= ran_again


def test_resume_refuses_blocks_of_another_run(ray_npu4, seed_data, tmp_path):
    out = tmp_path / "out"
    run(simulated(seed_data, out, devices=2, limit=48))
    with pytest.raises(DatasetError,
                       match=r"--resume: the blocks in .* are of another run \(limit: 48 there, 96 now\)"):
        run(simulated(seed_data, out, devices=2, limit=96, resume=True))
    again = run(simulated(seed_data, out, devices=2, limit=96, force=True)).results.to_json()
    assert again["windows"] == 96


def test_force_deletes_nothing_when_no_device_comes_up(ray_npu4, seed_data, tmp_path):
    """--force clears OUT only once a device is up: a run that cannot start leaves the last one whole."""
    out = tmp_path / "out"
    run(simulated(seed_data, out, devices=2, limit=48))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(RunError, match="could not start: RuntimeError: the model does not load on this device"):
        run(simulated(seed_data, out, devices=2, limit=96, force=True), factory=CannotStart())
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_device_whose_process_dies_while_starting_is_restarted_and_works(ray_npu4, seed_data, tmp_path, caplog):
    marker = tmp_path / "died"
    results = run(simulated(seed_data, tmp_path / "out", devices=2, wait_for_devices=True),
                  factory=DiesOnceAtStart(str(marker))).results.to_json()
    nll_sum, tokens, _ = simulated_reference(seed_data)
    assert marker.exists() and results["tokens"] == tokens
    assert results["mean_ce"] == pytest.approx(nll_sum / tokens, rel=1e-12)
    assert results["devices_started"] == 2 and all(d["windows"] for d in results["per_device"])
    assert any("died while starting: waiting for Ray to restart it" in r.message for r in caplog.records)


def test_a_request_for_more_devices_than_the_cluster_has_fails_at_once(ray_npu4, seed_data, tmp_path):
    with pytest.raises(UserError, match=r"asks for NPU 8 but the Ray cluster has NPU 4"):
        run(simulated(seed_data, tmp_path / "out", devices=8))


def test_a_run_that_fails_while_the_shards_are_checked_leaves_no_thread_behind(ray_npu4, seed_data, tmp_path,
                                                                                monkeypatch):
    """A daemon thread still inside pyarrow when the process exits aborts it after the one-line error
    (exit -6): the shards' check stops at the next shard and is joined before the error goes up."""
    import threading
    import time

    from npueval.eval.driver import blocks

    read_shard, reads = blocks.read_shard, []

    def slow_read_shard(*args, **kw):
        reads.append(time.perf_counter())
        time.sleep(0.5)
        return read_shard(*args, **kw)

    monkeypatch.setattr(blocks, "read_shard", slow_read_shard)
    with pytest.raises(UserError, match=r"asks for NPU 8 but the Ray cluster has NPU 4"):
        run(simulated(seed_data, tmp_path / "out", devices=8))
    assert [t.name for t in threading.enumerate() if t.name == "npueval-verify"] == []
    assert 1 <= len(reads) < len(json.loads((seed_data / "manifest.json").read_text())["shards"])


def test_the_cli_prints_the_summary(ray_npu4, seed_data, tmp_path, capsys):
    from npueval.eval.cli import main

    code = main(["run", "--data", str(seed_data), "--out", str(tmp_path / "out"), "--backend", "simulated",
                 "--devices", "2", "--limit", "40", "--block-windows", "8", "--wait-for-devices"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "mean cross-entropy" in printed and "seed_ppl (the port)" in printed
    assert "backend simulated, 2 devices\n" in printed and "npu:0" in printed and "npu:1" in printed
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert f"{results['mean_ce']:.4f}" in printed
    assert results["provenance"]["command"][0] == "npueval"


def test_no_pipeline_gives_the_same_numbers_and_says_so(baseline, seed_data, tmp_path, capsys):
    """--no-pipeline (one model batch per call) changes no bit, is recorded, and a run may be resumed either way."""
    from npueval.eval.cli import main

    out = tmp_path / "out"
    code = main(["run", "--data", str(seed_data), "--out", str(out), "--backend", "simulated", "--devices", "4",
                 "--batch-size", "8", "--block-windows", str(BLOCK), "--no-pipeline"])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["pipeline"] is False and baseline["pipeline"] is True
    keys = ("mean_ce", "nll_sum", "seed_ppl", "ppl", "tokens", "windows")
    assert [results[k] for k in keys] == [baseline[k] for k in keys]
    resumed = run(simulated(seed_data, out, devices=4, resume=True)).results.to_json()  # with the pipeline this time
    assert resumed["pipeline"] is True and resumed["blocks_resumed"] == resumed["blocks"]
    assert [resumed[k] for k in keys] == [baseline[k] for k in keys]


@pytest.mark.parametrize("argv, message", [
    (["--backend", "simulated", "--devices", "0"], "--devices 0: must be at least 1"),
    (["--backend", "onnx", "--device-ms", "5"], "--device-ms is the simulated backend's"),
    (["--resume", "--force", "--backend", "simulated"], "--resume and --force contradict"),
    (["--backend", "onnx"], "--backend onnx needs --model"),
    (["--backend", "simulated", "--block-timeout", "0"], "--block-timeout 0.0: must be a positive number of seconds"),
])
def test_bad_flags_are_one_line_errors(seed_data, tmp_path, capsys, argv, message):
    from npueval.eval.cli import main

    code = main(["run", "--data", str(seed_data), "--out", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_missing_data_is_a_one_line_error(tmp_path, capsys):
    from npueval.eval.cli import main

    assert main(["run", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--backend", "simulated"]) == 2
    assert "--data" in capsys.readouterr().err
    os.makedirs(tmp_path / "empty")
    assert main(["run", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--backend", "simulated"]) == 2


def test_bench_gives_the_device_fps_of_every_device_and_their_sum(ray_npu4, seed_data):
    from npueval.eval.bench import BenchConfig, bench
    from npueval.eval.driver.fleet import DeviceConfig

    rows = bench(BenchConfig(batch_sizes=(1, 8), loop=4, warmup=1, data=seed_data, limit=64,
                             devices=DeviceConfig(backend="simulated", devices=4, device_ms=5)))
    assert [r.batch_size for r in rows] == [1, 8]
    for r in rows:
        assert len(r.per_device) == 4 and all(d.figures.batches == 4 for d in r.per_device)
        assert all(d.fps == pytest.approx(1000 * r.batch_size / 5) for d in r.per_device)
        assert r.device_fps_sum == pytest.approx(4 * 1000 * r.batch_size / 5)
        assert 0 < r.host_fps_sum <= r.device_fps_sum * 1.01  # the loop cannot beat the device's clock
        assert r.end_to_end > 0


def test_bench_cli_prints_the_table_and_writes_json(ray_npu4, tmp_path, capsys):
    from npueval.eval.cli import main

    assert main(["bench", "--backend", "simulated", "--devices", "2", "--batch-sizes", "4", "--loop", "2",
                 "--device-ms", "2", "--json", str(tmp_path / "b.json")]) == 0
    printed = capsys.readouterr().out
    assert "device FPS sum" in printed and "4000.0" in printed  # 2 devices × 1000·4/2
    (row,) = json.loads((tmp_path / "b.json").read_text())
    assert row["device_fps_sum"] == pytest.approx(4000) and row["backend"] == "simulated"
    assert [list(d) for d in row["per_device"]] == [
        ["node", "device", "batch_size", "batches", "device_s", "wall_s", "fps", "host_fps"]] * 2
    assert main(["bench", "--backend", "simulated", "--batch-sizes", "4,x"]) == 2
    assert "--batch-sizes '4,x'" in capsys.readouterr().err


@pytest.mark.slow
def test_progress_is_a_bar_on_a_terminal_and_log_lines_otherwise(seed_data, tmp_path):
    """A separate process with its own local Ray (address "local": not this module's)."""
    base = ["npueval", "run", "--data", str(seed_data), "--backend", "simulated", "--devices", "2",
            "--block-windows", "24", "--limit", "120"]
    r, shown = run_on_a_terminal([*base, "--out", str(tmp_path / "tty")])
    assert r.returncode == 0, shown[-2000:]
    assert b"run:" in shown and b"win" in shown and b"tok/s" in shown
    piped = subprocess.run([*base, "--out", str(tmp_path / "pipe")], capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0, piped.stderr[-2000:]
    assert "INFO npueval: 120 of 120 windows (100%)" in piped.stderr and "%|" not in piped.stderr
    assert "mean cross-entropy" in piped.stdout


def test_three_runs_back_to_back_leave_nothing_behind(ray_npu4, seed_data, tmp_path):
    """No actor alive, no object in the store, no temporary file, after three runs in one Ray."""
    import re
    import time

    import ray
    from ray._private import state
    from ray._private.internal_api import memory_summary

    outs = [tmp_path / f"out{i}" for i in range(3)]
    results = [run(simulated(seed_data, out, devices=4, limit=120)).results.to_json() for out in outs]
    assert len({r["nll_sum"] for r in results}) == 1
    assert not [a for a in state.actors().values() if a["State"] != "DEAD"]
    deadline = time.monotonic() + 20
    while True:  # the store frees an object once the last reference has gone, asynchronously
        summary = memory_summary(ray.get_runtime_context().gcs_address, stats_only=True)  # this Ray, not another
        objects = int(re.search(r"Plasma memory usage \d+ MiB, (\d+) objects", summary)[1])
        if objects == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert objects == 0
    for out in outs:
        assert sorted(p.name for p in out.iterdir()) == ["blocks", "plan.json", "result.txt", "results.json",
                                                         "run.json", "timeline.parquet", "windows.parquet"]
        assert all(p.name.startswith("block-") and p.suffix == ".parquet" for p in (out / "blocks").iterdir())
