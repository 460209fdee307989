"""Device faults injected through the simulated backend's test hook (actors/simulated.py):
a NaN or Inf loss, a device that hangs, a device 5× slower. Numbers against the numpy reference."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from local_ray import local_ray
from run_data import read_shards, simulated_reference

from npueval.actors.simulated import FAULTS_ENV
from npueval.core.errors import RunError
from npueval.eval.driver.run import RunConfig, run


@pytest.fixture(scope="module")
def faults_file(tmp_path_factory):
    """The hook's file: named before Ray starts (its workers inherit the variable), written per test."""
    path = tmp_path_factory.mktemp("faults") / "faults.json"
    old = os.environ.get(FAULTS_ENV)
    os.environ[FAULTS_ENV] = str(path)
    yield path
    if old is None:
        del os.environ[FAULTS_ENV]
    else:
        os.environ[FAULTS_ENV] = old


@pytest.fixture(scope="module")
def ray_npu4(faults_file):
    with local_ray(num_cpus=2, simulated_npus=4) as session:
        yield session


@pytest.fixture
def inject(faults_file):
    def write(*faults: dict) -> None:
        faults_file.write_text(json.dumps(list(faults)))

    yield write
    faults_file.unlink(missing_ok=True)


def simulated(data, out, **kw) -> RunConfig:
    kw.setdefault("block_windows", 8)  # one batch per block: many blocks
    kw.setdefault("devices", 4)
    kw.setdefault("wait_for_devices", True)  # faults target devices: every one takes part
    kw.setdefault("batch_size", 8)
    return RunConfig.from_flags(data=data, out=out, backend="simulated", **kw)


def scored_per_window(data) -> np.ndarray:
    rows = read_shards(data)
    t = np.arange(1, rows["input_ids"].shape[1])
    return ((t >= rows["score_from"][:, None]) & (t < rows["n_valid"][:, None])).sum(axis=1)


def test_a_nan_ends_the_run_naming_block_and_device(ray_npu4, inject, seed_data, tmp_path):
    # npu:1's 6th block: with two calls in flight per device its first four have come back by
    # then, so there are finished blocks to keep (at its 2nd, the NaN could come back first).
    inject({"device": "npu:1", "kind": "nan", "batch": 6})
    with pytest.raises(RunError) as err:  # 10 ms a batch: every device gets its share of the ~38 blocks
        run(simulated(seed_data, tmp_path / "out", device_ms=10))
    message = str(err.value)
    assert " on npu:1 of node " in message and "1 window(s) with a non-finite loss" in message and ", nan)" in message
    assert "--on-nonfinite skip" in message and "continue with --resume" in message
    saved = list((tmp_path / "out" / "blocks").glob("block-*.parquet"))
    assert saved and not (tmp_path / "out" / "results.json").exists()  # the finished blocks are kept, no mean of NaN


def test_skip_leaves_the_bad_windows_out_and_counts_them(ray_npu4, inject, seed_data, tmp_path):
    inject({"device": "npu:1", "kind": "nan", "batch": 2}, {"device": "npu:2", "kind": "inf", "batch": 1})
    results = run(simulated(seed_data, tmp_path / "out", on_nonfinite="skip")).results.to_json()
    assert results["windows_nonfinite"] == 2
    assert sorted(w["device"] for w in results["nonfinite"]) == ["npu:1", "npu:2"]
    bad = [w["window_id"] for w in results["nonfinite"]]
    nll_sum, tokens, per_window = simulated_reference(seed_data)
    scored = scored_per_window(seed_data)
    assert results["windows"] == len(per_window) - 2
    assert results["tokens"] == tokens - scored[bad].sum()
    assert results["mean_ce"] == pytest.approx((nll_sum - per_window[bad].sum()) / (tokens - scored[bad].sum()),
                                               rel=1e-12)


def test_a_hung_device_is_restarted_and_its_block_done_elsewhere(ray_npu4, inject, seed_data, tmp_path):
    inject({"device": "npu:3", "kind": "hang", "batch": 2})
    results = run(simulated(seed_data, tmp_path / "out", block_timeout=2.0)).results.to_json()
    nll_sum, tokens, _ = simulated_reference(seed_data)
    assert results["mean_ce"] == pytest.approx(nll_sum / tokens, rel=1e-12) and results["tokens"] == tokens
    (timeout,) = results["timeouts"]
    assert timeout["device"].startswith("npu:3 on node ")
    assert results["retries"] >= 1  # the hung block, and any queued behind it on that device
    assert results["windows_nonfinite"] == 0


def test_a_block_timeout_no_call_can_meet_names_the_flag_not_the_devices(ray_npu4, seed_data, tmp_path):
    """--block-timeout 0.001: every call runs past it, every device is restarted and none comes
    back within it. The run ends naming the flag; it used to blame the last device."""
    with pytest.raises(RunError) as err:
        run(simulated(seed_data, tmp_path / "out", block_timeout=0.001, device_ms=20))
    message = str(err.value)
    assert message.startswith("every device failed: each had a call run past --block-timeout 0.001 s, was "
                              "restarted and did not come back within it; ")
    assert message.endswith("give a --block-timeout well above the time a block takes on these devices (or none), "
                            "then continue with --resume")


def test_a_slow_device_takes_proportionally_fewer_blocks(ray_npu4, inject, seed_data, tmp_path):
    inject({"device": "npu:0", "kind": "slow", "factor": 20})
    # 60 ms a batch, so that the device's time and not the driver's per-block work on two busy cores
    # sets the pace, and blocks of 2 windows (124), so that the two blocks the slow device still holds
    # when the others run dry weigh little. 20× slower (1.2 s a block): about a twentieth of a fast
    # device's share in the long run, two or three of its blocks here; the bound leaves room for a
    # loaded machine, where the driver's own time per block narrows the gap.
    config = simulated(seed_data, tmp_path / "out", device_ms=60, batch_size=2, block_windows=2)
    results = run(config).results.to_json()
    share = {d["device"]: d["windows"] / results["windows"] for d in results["per_device"]}
    fast = [share[f"npu:{i}"] for i in (1, 2, 3)]
    assert 0 < share["npu:0"] < 0.25 * min(fast)
    assert max(fast) < 1.5 * min(fast)
    nll_sum, tokens, _ = simulated_reference(seed_data)
    assert results["mean_ce"] == pytest.approx(nll_sum / tokens, rel=1e-12)


def test_a_full_disk_is_a_one_line_error_and_leaves_nothing_half_written(ray_npu4, seed_data, tmp_path):
    """RLIMIT_FSIZE on the driver (Ray's processes started before, unlimited): writes past 2 KiB
    fail with EFBIG, as on a full disk (CPython ignores SIGXFSZ, so it is an OSError)."""
    import resource

    from npueval.core.errors import UserError

    out = tmp_path / "out"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, hard))
    try:
        with pytest.raises(UserError) as err:
            run(simulated(seed_data, out, block_windows=64))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    message = str(err.value)
    assert message.startswith(f"--out {out / 'blocks'}: cannot write block-") and "File too large" in message
    assert "then continue with --resume" in message and "\n" not in message
    assert (out / "run.json").is_file()  # small enough to be written
    assert not [p.name for p in out.rglob("*") if p.name.endswith(".tmp")]  # no half-written file
    assert not (out / "results.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("after_blocks, sig", [(1, "SIGINT"), (6, "SIGINT"), (1, "SIGTERM")])
def test_ctrl_c_keeps_the_finished_blocks_and_resume_completes_them(ray_npu4, seed_data, tmp_path, after_blocks, sig):
    """SIGINT to a CLI run (its own local Ray) once AFTER_BLOCKS blocks are saved: exit 130, one line,
    no half-written file; --resume (here, in this process) evaluates only the rest. SIGTERM (what
    `ray job stop` and schedulers send) the same, exit 143: it used to end the run at once, with
    only Ray's own lines."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    argv = [sys.executable, "-m", "npueval.eval", "run", "--data", str(seed_data), "--out", str(out),
            "--backend", "simulated", "--devices", "2", "--batch-size", "8", "--block-windows", "8",
            "--device-ms", "150"]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", FAULTS_ENV)}
    # SIGINT as a terminal delivers it, even where this test runs in the background (a shell leaves
    # SIGINT ignored for background jobs, and Python then never raises KeyboardInterrupt).
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while len(list((out / "blocks").glob("block-*.parquet"))) < after_blocks:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(getattr(signal, sig))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == {"SIGINT": 130, "SIGTERM": 143}[sig], stderr
    last = stderr.strip().splitlines()[-1]
    saved = len(list((out / "blocks").glob("block-*.parquet")))
    blocks = -(-json.loads((seed_data / "manifest.json").read_text())["windows"] // 8)
    why = {"SIGINT": "interrupted", "SIGTERM": "interrupted (SIGTERM)"}[sig]
    assert last == (f"npueval run: error: {why}: {saved} of {blocks} blocks are saved in {out}; "
                    "continue with --resume")
    assert after_blocks <= saved and not (out / "results.json").exists()
    assert not [p.name for p in out.rglob("*") if p.name.endswith(".tmp")]
    results = run(simulated(seed_data, out, resume=True)).results.to_json()  # on 4 devices, not 2
    assert results["blocks_resumed"] == saved and results["blocks"] > saved
    nll_sum, tokens, _ = simulated_reference(seed_data)
    assert results["mean_ce"] == pytest.approx(nll_sum / tokens, rel=1e-12) and results["tokens"] == tokens


def test_a_device_error_reaches_the_driver_as_its_root_cause(ray_npu4, inject, seed_data, tmp_path, caplog):
    """The actor's own exception, type and message on one line, in the warning and in the final
    error: never Ray's wrapper with the actor's repr and a traceback."""
    inject({"device": "npu:2", "kind": "error", "batch": 3})
    with caplog.at_level("WARNING", logger="npueval.eval.driver.dispatch"):
        results = run(simulated(seed_data, tmp_path / "retried", device_ms=10)).results.to_json()
    nll_sum, tokens, _ = simulated_reference(seed_data)
    assert results["retries"] == 1 and results["mean_ce"] == pytest.approx(nll_sum / tokens, rel=1e-12)
    (warning,) = [r.getMessage() for r in caplog.records if "failed on npu:2" in r.getMessage()]
    assert warning.endswith(": RuntimeError: simulated device error on batch 3") and "ray::" not in warning
    inject({"device": "npu:2", "kind": "error", "batch": 3})
    with pytest.raises(RunError) as err:
        run(simulated(seed_data, tmp_path / "final", max_retries=0, device_ms=10))
    message = str(err.value)
    assert "failed 1 time, last on npu:2" in message
    assert ": RuntimeError: simulated device error on batch 3; " in message
    assert "\n" not in message and "ray::" not in message and "repr=" not in message
