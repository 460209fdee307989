"""A real local Ray that npueval starts: loopback only, NPU resources, fail-fast requests."""

import json
import os
import subprocess
import sys

import pytest

from npueval.cluster.devices import Device
from npueval.cluster.ray_cluster import connect, require, visible_devices
from npueval.core.errors import UserError


@pytest.fixture(scope="module")
def session(ray_npu4):
    return ray_npu4


def test_local_ray_listens_on_loopback_and_sends_no_usage_reports(session):
    import ray

    assert session.started_here and session.address == "local"
    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"


def test_each_npu_actor_sees_its_own_device(session):
    import ray

    @ray.remote(resources={"NPU": 1}, num_cpus=0)
    class Probe:
        def visible(self):
            return os.environ.get("ASCEND_RT_VISIBLE_DEVICES")

    actors = [Probe.remote() for _ in range(4)]
    assert sorted(ray.get([a.visible.remote() for a in actors])) == ["0", "1", "2", "3"]
    for a in actors:
        ray.kill(a)


def test_the_device_actors_run_at_the_drivers_priority(session):
    """Ray starts its workers at nice 15; a Ray npueval starts, at 0 (the workers are the devices)."""
    import ray

    @ray.remote(resources={"NPU": 1}, num_cpus=0)
    class Probe:
        def nice(self):
            return os.nice(0)

    actor = Probe.remote()
    assert ray.get(actor.nice.remote()) == os.nice(0) == 0
    ray.kill(actor)


def test_a_request_the_cluster_cannot_meet_fails_at_once(session):
    assert session.resources["NPU"] == 4
    require(session.resources, {"NPU": 4})
    with pytest.raises(UserError, match=r"asks for NPU 8 but the Ray cluster has NPU 4"):
        require(session.resources, {"NPU": 8})


def test_connect_again_reuses_the_running_ray(session):
    again = connect()
    assert not again.started_here and again.resources == session.resources


def test_only_healthy_chips_are_made_visible():
    chips = [Device(1, 0, 1, "310P3", "Ascend310P3", "OK", 0, 1, "0000:01:00.0"),
             Device(1, 1, 0, "310P3", "Ascend310P3", "Alarm", 0, 1, "0000:01:00.0"),
             Device(2, 0, 3, "310P3", "Ascend310P3", "OK", 0, 1, "0000:02:00.0")]
    assert visible_devices(chips) == "1,3"
    assert visible_devices(chips, allow_unhealthy=True) == "0,1,3"


STOP_SCRIPT = """
import json
from ray._private import node, worker
from npueval.cluster.ray_cluster import connect, disconnect

kills = []
kill = node.Node._kill_process_impl
def recorded(self, process_type, allow_graceful=False, **kw):
    kills.append([process_type, allow_graceful])
    return kill(self, process_type, allow_graceful=allow_graceful, **kw)
node.Node._kill_process_impl = recorded

session = connect()
processes = {kind: [info.process for info in infos] for kind, infos in worker._global_node.all_processes.items()}
disconnect(session)
print(json.dumps({"kills": kills, "codes": {kind: [p.poll() for p in ps] for kind, ps in processes.items()}}))
"""


def test_a_local_ray_stops_with_its_autoscaler_monitor_killed_first():
    """Ray's own shutdown stops the GCS first, then gives the monitor a second's grace, which it
    spends trying to tell the gone GCS that it was terminated: npueval kills the monitor first."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", STOP_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    stopped = json.loads(done.stdout.strip().splitlines()[-1])
    assert stopped["kills"][0] == ["monitor", False] and ["gcs_server", True] in stopped["kills"]
    assert stopped["codes"]["monitor"] == [-9]
    assert all(code is not None for kind in ("gcs_server", "raylet") for code in stopped["codes"][kind])
