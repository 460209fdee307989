"""Several nodes on one machine (ray.cluster_utils.Cluster, two nodes with 2 NPUs each, all on
127.0.0.1): the same command spreads over both nodes, through the driver API and through
`ray job submit`, and the model reaches each node through the object store."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from run_data import FAKES, build_tiny, prepare_data, simulated_reference
from starting import SlowToAnswerOn

from npueval.eval.driver.run import RunConfig, run

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    # The nodes' processes inherit this environment: the fake ais_bench for the om actors, and the
    # venv's bin first on PATH for the entrypoint of `ray job submit` (the job's entrypoint runs `npueval` from PATH).
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "PATH")}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(FAKES), os.environ["PYTHONPATH"]])
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    dashboard_port = free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"NPU": 2}, "node_ip_address": "127.0.0.1", "include_dashboard": True,
        "dashboard_host": "127.0.0.1", "dashboard_port": dashboard_port})
    cluster.add_node(num_cpus=1, resources={"NPU": 2}, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    for k, v in saved.items():
        os.environ[k] = v
    cluster.dashboard_url = f"http://127.0.0.1:{dashboard_port}"
    yield cluster
    cluster.shutdown()


def test_four_devices_on_two_nodes_give_the_reference_numbers(cluster, seed_data, tmp_path):
    results = run(RunConfig.from_flags(data=seed_data, out=tmp_path / "out", backend="simulated", batch_size=8,
                                       block_windows=24, address=cluster.address, wait_for_devices=True)
                  ).results.to_json()
    nll_sum, tokens, _ = simulated_reference(seed_data)
    assert results["tokens"] == tokens and results["mean_ce"] == pytest.approx(nll_sum / tokens, rel=1e-12)
    nodes = {d["node"] for d in results["per_device"]}
    assert len(nodes) == 2 and len(results["per_device"]) == 4
    assert all(d["windows"] > 0 for d in results["per_device"])


def test_the_om_reaches_every_node_through_the_object_store(cluster, tmp_path):
    """The build folder's .om is made group-writable, which ais_bench refuses: the actors can only
    have run the 0o644 copies that each node wrote from the object store."""
    model = build_tiny(tmp_path / "model", 4, 64)
    om = model / "build" / "model.om"
    om.chmod(0o664)
    data = prepare_data(tmp_path / "d", model / "ckpt" / "vocab.txt", 30_000, mode="sliding", n_ctx=64)
    results = run(RunConfig.from_flags(data=data, out=tmp_path / "out", model=model / "build", block_windows=16,
                                       address=cluster.address, wait_for_devices=True)).results.to_json()
    assert results["backend"] == "om" and len({d["node"] for d in results["per_device"]}) == 2
    copies = list((Path(tempfile.gettempdir()) / f"npueval-{os.getuid()}").glob("*/model.om"))
    assert copies and all(stat.S_IMODE(c.stat().st_mode) == 0o644 for c in copies)


def test_ray_job_submit_runs_the_same_command(cluster, seed_data, tmp_path):
    working_dir = tmp_path / "job"
    working_dir.mkdir()
    out = tmp_path / "out"
    deadline = time.monotonic() + 120
    while True:  # the head's job agent comes up a few seconds after the cluster
        job = subprocess.run(
            [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", cluster.dashboard_url,
             "--working-dir", str(working_dir), "--", "npueval", "run", "--data", str(seed_data), "--out", str(out),
             "--backend", "simulated", "--batch-size", "8", "--block-windows", "24"],
            capture_output=True, text=True, timeout=300,
        )
        log = job.stdout + job.stderr
        if "No available agent to submit job" not in log or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert job.returncode == 0, log[-3000:]
    nll_sum, tokens, _ = simulated_reference(seed_data)
    assert "mean cross-entropy" in log and f"{nll_sum / tokens:.4f}" in log
    assert re.search(r"backend simulated, (\d of )?4 devices", log)  # those up in time, of the four started
    assert (out / "results.json").is_file()


def run_and_lose_a_node(data, out, head_npus: int, block_timeout: float, after_blocks: int,
                        wait_for_devices: bool = True, worker_start_s: float = 0.0, device_ms: float = 150) -> dict:
    """A two-node Cluster (the head with HEAD_NPUS simulated NPUs, the other with 2, whose devices
    take WORKER_START_S to start); a run in a thread; once AFTER_BLOCKS blocks are saved, the second
    node (its raylet and actors) goes. Returns {"results": …} or {"error": …}."""
    import threading

    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"NPU": head_npus} if head_npus else {}, "node_ip_address": "127.0.0.1",
        "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1, resources={"NPU": 2}, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    config = RunConfig.from_flags(data=data, out=out, backend="simulated", batch_size=8, block_windows=8,
                                  device_ms=device_ms,
                                  address=cluster.address, block_timeout=block_timeout,
                                  wait_for_devices=wait_for_devices)
    factory = SlowToAnswerOn(worker.node_id, worker_start_s) if worker_start_s else None
    outcome: dict = {}

    def target():
        try:
            outcome["results"] = run(config, factory=factory).results.to_json()
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    try:
        thread.start()
        deadline = time.monotonic() + 120
        while len(list((out / "blocks").glob("block-*.parquet"))) < after_blocks:
            assert thread.is_alive() and time.monotonic() < deadline, outcome
            time.sleep(0.05)
        cluster.remove_node(worker)
        thread.join(timeout=300)
        assert not thread.is_alive()
    finally:
        cluster.shutdown()
    return outcome


def test_a_lost_node_has_its_blocks_redone_elsewhere(seed_data, tmp_path):
    outcome = run_and_lose_a_node(seed_data, tmp_path / "out", head_npus=2, block_timeout=20, after_blocks=4)
    assert "results" in outcome, outcome
    results = outcome["results"]
    nll_sum, tokens, _ = simulated_reference(seed_data)
    assert results["tokens"] == tokens and results["mean_ce"] == pytest.approx(nll_sum / tokens, rel=1e-12)
    assert results["retries"] >= 1 and len(results["per_device"]) == 4
    assert len({d["node"] for d in results["per_device"] if d["windows"]}) == 2  # both worked before the loss


def test_a_node_lost_while_its_devices_start_leaves_the_run_to_the_others(seed_data, tmp_path):
    outcome = run_and_lose_a_node(seed_data, tmp_path / "out", head_npus=2, block_timeout=20, after_blocks=2,
                                  wait_for_devices=False, worker_start_s=120, device_ms=800)
    assert "results" in outcome, outcome
    results = outcome["results"]
    nll_sum, tokens, _ = simulated_reference(seed_data)
    assert results["tokens"] == tokens and results["mean_ce"] == pytest.approx(nll_sum / tokens, rel=1e-12)
    assert results["devices_started"] == 4 and len(results["per_device"]) == 2
    assert len({d["node"] for d in results["per_device"]}) == 1


def test_losing_the_only_node_with_devices_ends_the_run_with_the_blocks_saved(seed_data, tmp_path):
    from npueval.core.errors import RunError

    error = run_and_lose_a_node(seed_data, tmp_path / "out", head_npus=0, block_timeout=5, after_blocks=3)["error"]
    assert isinstance(error, RunError) and "the finished blocks are saved, continue with --resume" in str(error)
    assert len(list((tmp_path / "out" / "blocks").glob("block-*.parquet"))) >= 3
    assert not (tmp_path / "out" / "results.json").exists()
