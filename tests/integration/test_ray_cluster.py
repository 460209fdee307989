"""A real local Ray that npueval starts: loopback only, NPU resources, fail-fast requests."""

import os

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
