"""`npueval run` on an NPU host as the fakes make one: Ray detects the chips itself through a fake
pyACL (tests/fakes/pyacl), npu-smi is the fake script over real captures, and the om backend runs
through the fake ais_bench, which records the ACL device id and the chip each session opened.

Each run is a real `npueval run` in a process of its own, starting and stopping its own local Ray,
under the visibility settings a user may have: none, their own ASCEND_RT_VISIBLE_DEVICES,
RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES (vllm-ascend and verl set it), both, sick chips,
an npu-smi that DCMI refuses, and the pre-2024 ais_bench.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from run_data import FAKES, build_tiny, prepare_data, read_shards

pytestmark = pytest.mark.slow
B, L = 4, 64
VISIBILITY = ("ASCEND_RT_VISIBLE_DEVICES", "RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("model"), B, L) / "build"


@pytest.fixture(scope="module")
def data(model, tmp_path_factory):
    prepared = prepare_data(tmp_path_factory.mktemp("data"), model.parent / "ckpt" / "vocab.txt", 40_000,
                            mode="sliding", n_ctx=L, stride=L // 2)
    assert len(read_shards(prepared)["window_id"]) >= 64  # blocks of 16 windows: work for every device
    return prepared


@pytest.fixture(scope="module")
def onnx_mean_ce(model, data) -> float:
    """The mean CE of the onnx backend on the host, over every window: what every om run must give."""
    from npueval.actors.evaluator import Evaluator
    from npueval.actors.onnx_backend import OnnxBackend

    rows = read_shards(data)
    result = Evaluator(OnnxBackend(model / "model.onnx")).evaluate(
        0, rows["input_ids"], rows["score_from"], rows["n_valid"], rows["window_id"])
    return math.fsum(result.window_nll) / result.scored_tokens


def npueval_run(tmp_path: Path, model: Path, data: Path, *flags: str, **env_extra: str):
    """One `npueval run` on the fake host; (the process, results.json, the sessions ais_bench opened)."""
    record = tmp_path / "sessions.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in VISIBILITY and k != "RAY_ADDRESS"}
    env.update(PATH=os.pathsep.join([str(FAKES), str(Path(sys.executable).parent), env["PATH"]]),
               PYTHONPATH=os.pathsep.join([str(FAKES / "pyacl"), str(FAKES), env.get("PYTHONPATH", "")]),
               FAKE_AIS_BENCH_RECORD=str(record), **env_extra)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "npueval.eval", "run", "--model", str(model), "--data", str(data),
                           # Every chip up before any work: these tests assert which chips ran.
                           "--out", str(out), "--block-windows", "16", "--wait-for-devices", *flags],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    sessions = [json.loads(line) for line in record.read_text().splitlines()]
    return done, results, sessions


def opened(sessions: list[dict]) -> list[tuple[int, int]]:
    """(ACL device id, chip's logic id) of each session, sorted by chip."""
    return sorted((s["device_id"], s["logic_id"]) for s in sessions)


def devices(results: dict) -> list[str]:
    return sorted(d["device"] for d in results["per_device"])


def test_every_chip_ray_finds_runs_the_om_and_gives_the_onnx_numbers(model, data, onnx_mean_ce, tmp_path):
    _done, results, sessions = npueval_run(tmp_path, model, data)
    assert results["backend"] == "om" and results["fallback"] is None and results["ais_bench_api"] == "pipeline"
    assert devices(results) == ["npu:0", "npu:1", "npu:2", "npu:3"]
    assert all(d["ais_bench_api"] == "pipeline" and d["windows"] > 0 for d in results["per_device"])
    assert opened(sessions) == [(0, 0), (0, 1), (0, 2), (0, 3)]  # Ray narrowed each actor to its chip
    assert sorted(s["visible"] for s in sessions) == ["0", "1", "2", "3"]
    assert results["mean_ce"] == onnx_mean_ce


def test_the_pre_2024_ais_bench_runs_batch_by_batch_with_the_same_numbers(model, data, onnx_mean_ce, tmp_path):
    done, results, _ = npueval_run(tmp_path, model, data, FAKE_AIS_BENCH_OLD="1")
    assert results["ais_bench_api"] == "infer" and results["pipeline"] is True
    assert results["mean_ce"] == onnx_mean_ce
    assert "this ais_bench has no infer_pipeline (the pre-2024 package" in done.stderr


def test_a_list_the_user_set_is_kept(model, data, tmp_path):
    _, results, sessions = npueval_run(tmp_path, model, data, ASCEND_RT_VISIBLE_DEVICES="1,3")
    assert devices(results) == ["npu:1", "npu:3"]
    assert opened(sessions) == [(0, 1), (0, 3)]


def test_under_noset_each_actor_opens_its_own_chip(model, data, tmp_path):
    _, results, sessions = npueval_run(tmp_path, model, data, RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES="1")
    assert devices(results) == ["npu:0", "npu:1", "npu:2", "npu:3"]
    assert opened(sessions) == [(0, 0), (1, 1), (2, 2), (3, 3)]  # every chip visible: the id is the logic id
    assert {s["visible"] for s in sessions} == {"0,1,2,3"}  # npueval's health filter, left as it is by Ray


def test_under_noset_with_the_users_list_each_actor_opens_its_index_there(model, data, tmp_path):
    _, results, sessions = npueval_run(tmp_path, model, data, ASCEND_RT_VISIBLE_DEVICES="1,3",
                                       RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES="1")
    assert devices(results) == ["npu:1", "npu:3"]
    assert opened(sessions) == [(0, 1), (1, 3)]
    assert {s["visible"] for s in sessions} == {"1,3"}


def test_sick_chips_are_left_out_of_the_users_list(model, data, tmp_path):
    """npu-smi shows logic id 1 at Warning and 3 UNKNOWN with NA fields; the user allowed 0, 1, 3."""
    done, results, sessions = npueval_run(tmp_path, model, data, ASCEND_RT_VISIBLE_DEVICES="0,1,3",
                                          FAKE_NPU_SMI_INFO=str(FAKES / "npu-smi-info-310p3-duo-sick.txt"))
    assert devices(results) == ["npu:0"] and opened(sessions) == [(0, 0)]
    assert "leaving out NPU logic id 1 (card 1 chip 1): health Warning" in done.stderr
    assert "leaving out NPU logic id 3 (card 2 chip 1): health UNKNOWN" in done.stderr


def test_an_npu_smi_that_dcmi_refuses_is_a_warning_and_rays_count_stands(model, data, onnx_mean_ce, tmp_path):
    done, results, sessions = npueval_run(tmp_path, model, data, FAKE_NPU_SMI_INFO=str(FAKES / "npu-smi-dcmi-8005.txt"),
                                          FAKE_NPU_SMI_EXIT="187")
    assert devices(results) == ["npu:0", "npu:1", "npu:2", "npu:3"] and results["mean_ce"] == onnx_mean_ce
    (warning,) = [line for line in done.stderr.splitlines() if "exit 187" in line]
    assert "dcmi module initialize failed. ret is -8005" in warning and "Ray's own count of the NPUs stands" in warning
    assert len(sessions) == 4


def test_a_users_list_acl_would_cut_short_is_refused_before_ray_starts(model, data, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in VISIBILITY}
    env.update(PATH=os.pathsep.join([str(FAKES), env["PATH"]]), ASCEND_RT_VISIBLE_DEVICES="0, 1")
    done = subprocess.run([sys.executable, "-m", "npueval.eval", "run", "--model", str(model), "--data", str(data),
                           "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "ASCEND_RT_VISIBLE_DEVICES='0, 1': ACL takes ascending logic ids" in done.stderr
    assert not (tmp_path / "out").exists()



def test_the_chip_check_script_on_the_fake_host(tmp_path):
    """tests/hardware/check_chips.py, as a user runs it on a new host: here against the fakes."""
    env = {k: v for k, v in os.environ.items() if k not in VISIBILITY and k != "RAY_ADDRESS"}
    env.update(PATH=os.pathsep.join([str(FAKES), str(Path(sys.executable).parent), env["PATH"]]),
               PYTHONPATH=os.pathsep.join([str(FAKES / "pyacl"), str(FAKES), env.get("PYTHONPATH", "")]))
    script = Path(__file__).parents[1] / "hardware" / "check_chips.py"
    done = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "check")], env=env,
                          capture_output=True, text=True, timeout=600)
    report = (tmp_path / "check" / "report.txt").read_text()
    assert done.returncode == 0, report
    assert "== npueval doctor" in report and "npueval run here: om (om ready)" in report
    chips = [line for line in report.splitlines() if line.startswith("npu:")]
    assert len(chips) == 4 and all(line.endswith(": ok") for line in chips)
    assert report.rstrip().splitlines()[-1].startswith("every chip ok (4 chip(s))")


def test_a_ray_that_cannot_start_is_one_line(model, data, tmp_path):
    """Ray keeps its sockets under TMPDIR; a long one breaks the 107-byte limit of a Unix socket:
    refused before Ray starts."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in VISIBILITY and k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
    env.update(TMPDIR=str(deep))
    done = subprocess.run([sys.executable, "-m", "npueval.eval", "run", "--model", str(model), "--data", str(data),
                           "--out", str(tmp_path / "out"), "--backend", "onnx"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = [ln for ln in done.stderr.splitlines() if "error:" in ln]
    assert line.startswith(f"npueval run: error: TMPDIR={deep}: a local Ray cannot start there: the paths of its "
                           "sockets would be ") and "set TMPDIR to a folder of at most " in line
    assert not (deep / "ray").exists() and not (tmp_path / "out").exists()
