"""The dispatcher on a real local Ray, with stand-in devices that say when each call entered and
left them (tests/timed_actor.py): the second round of calls is held back at the start."""

from __future__ import annotations

import json
import time

import pytest
from local_ray import local_ray
from timed_actor import TimedDevice

from npueval.eval.driver.blocks import Block
from npueval.eval.driver.dispatch import Dispatcher, first_round_hold


@pytest.fixture(scope="module")
def ray_local():
    with local_ray(num_cpus=2) as session:
        yield session


def dispatch(devices: int, blocks: int, device_s: float, hold_s: float) -> tuple[dict, float]:
    """{block_id: (entered, left)} of every block, and the seconds the whole dispatch took."""
    import ray

    actor = ray.remote(TimedDevice).options(num_cpus=0, max_concurrency=2)
    actors = [actor.remote(device_s) for _ in range(devices)]
    ray.get([a.__ray_ready__.remote() for a in actors])
    seen: dict[int, tuple[float, float]] = {}
    started = time.monotonic()
    Dispatcher(actors, [f"dev:{k}" for k in range(devices)], max_retries=0, hold_s=hold_s).run(
        ((Block(b, b, b + 1), None) for b in range(blocks)), lambda r: seen.update({r[0]: r[1:]}))
    for a in actors:
        ray.kill(a)
    return seen, time.monotonic() - started


def test_the_second_round_waits_for_a_result_when_the_hold_is_long(ray_local):
    seen, took = dispatch(devices=2, blocks=6, device_s=0.3, hold_s=60.0)
    assert sorted(seen) == list(range(6))
    first_done = min(seen[b][1] for b in (0, 1))
    # Blocks 2 and 3 were sent only once a result had come back, not after the 60 s hold.
    assert min(seen[b][0] for b in (2, 3)) >= first_done
    assert took < 30


def test_the_second_round_goes_out_when_the_hold_ends(ray_local):
    seen, _ = dispatch(devices=2, blocks=4, device_s=2.0, hold_s=0.2)
    # Sent at 0.2 s, they reached their actors while the first blocks (2 s) still ran.
    assert max(seen[b][0] for b in (2, 3)) < min(seen[b][1] for b in (0, 1))
    assert min(seen[b][0] for b in (2, 3)) >= max(seen[b][0] for b in (0, 1))


def dispatch_as_they_come_up(start_s: list[float], blocks: int, device_s: float,
                             wait_for_all: bool = False) -> tuple[dict, float, Dispatcher]:
    """Devices that come up after START_S seconds each, handed work as each answers."""
    import ray

    actor = ray.remote(TimedDevice).options(num_cpus=0, max_concurrency=2)
    actors = [actor.remote(device_s, f"dev:{k}", s) for k, s in enumerate(start_s)]
    seen: dict[int, tuple] = {}
    started = time.monotonic()
    dispatcher = Dispatcher(actors, [f"actor {k}" for k in range(len(actors))], max_retries=0,
                            starting=[a.describe.remote() for a in actors], accept=lambda k, ref: ray.get(ref),
                            wait_for_all=wait_for_all)
    dispatcher.run(((Block(b, b, b + 1), None) for b in range(blocks)), lambda r: seen.update({r[0]: r[1:]}))
    took = time.monotonic() - started
    for a in actors:
        ray.kill(a)
    return seen, took, dispatcher


def test_a_device_gets_work_as_soon_as_it_is_up_not_when_all_are(ray_local):
    # dev:0 alone, two calls at once, would need 3 s for the 20 blocks; dev:1 is up after 1 s.
    seen, _, dispatcher = dispatch_as_they_come_up([0.0, 1.0], blocks=20, device_s=0.3)
    assert sorted(seen) == list(range(20))
    by = {name: sorted(entered for entered, _, n, _ in seen.values() if n == name) for name in ("dev:0", "dev:1")}
    late_up = next(up for _, _, n, up in seen.values() if n == "dev:1")
    assert by["dev:0"][0] < late_up - 0.5  # dev:0 worked while dev:1 was still starting
    assert by["dev:1"] and by["dev:1"][0] >= late_up  # and dev:1 took its share once up
    assert [s.name for s in dispatcher.slots] == ["dev:0 on node n", "dev:1 on node n"]  # named by their answers


def test_a_run_is_done_without_a_device_that_comes_up_after_the_last_block(ray_local):
    seen, took, dispatcher = dispatch_as_they_come_up([0.0, 60.0], blocks=4, device_s=0.1)
    assert sorted(seen) == list(range(4)) and {n for _, _, n, _ in seen.values()} == {"dev:0"}
    assert took < 30  # not waiting for the late one
    assert [s.state.value for s in dispatcher.slots] == ["ready", "starting"]


def test_waiting_for_every_device_holds_the_work_until_the_last_is_up(ray_local):
    seen, _, _ = dispatch_as_they_come_up([0.0, 1.0], blocks=6, device_s=0.2, wait_for_all=True)
    late_up = next(up for _, _, n, up in seen.values() if n == "dev:1")
    assert min(entered for entered, _, _, _ in seen.values()) >= late_up
    assert {n for _, _, n, _ in seen.values()} == {"dev:0", "dev:1"}


def test_the_hold_grows_with_the_devices_and_is_none_for_none():
    assert first_round_hold(0) == 0.0
    assert first_round_hold(32) == pytest.approx(32 * first_round_hold(1))
    assert 0.0 < first_round_hold(32) < 1.0  # shorter than a 32-batch block of a 310P3 (1.34 s)


def poisoned_dispatch(tmp_path, hang: bool, block_timeout: float | None):
    """Two stand-in devices that may end their process in a call (may_abort), block 3 poisoned."""
    import json

    import ray
    from timed_actor import PoisonedDevice

    actor = ray.remote(PoisonedDevice).options(num_cpus=0, max_concurrency=2, max_restarts=2, max_task_retries=0)
    actors = [actor.remote(str(tmp_path), poison=3, hang=hang) for _ in range(2)]
    ray.get([a.__ray_ready__.remote() for a in actors])
    dispatcher = Dispatcher(actors, ["dev:0", "dev:1"], max_retries=3, block_timeout=block_timeout,
                            may_abort=[True, True])
    done: list[int] = []
    try:
        dispatcher.run(((Block(b, b, b + 1), None) for b in range(8)), done.append)
    finally:
        calls = [json.loads(line) for line in (tmp_path / "calls").read_text().splitlines()]
        for a in actors:
            ray.kill(a)
    return dispatcher, done, calls


def test_a_device_that_dies_inside_its_call_ends_the_run_without_feeding_the_block_on(ray_local, tmp_path):
    from npueval.core.errors import RunError

    with pytest.raises(RunError, match=r"^dev:\d died inside ais_bench infer_pipeline on block 3 \(windows 3–3\): "
                                       r".*--resume --no-pipeline"):
        poisoned_dispatch(tmp_path, hang=False, block_timeout=None)
    calls = [json.loads(line) for line in (tmp_path / "calls").read_text().splitlines()]
    assert [c["block"] for c in calls].count(3) == 1  # held back until the restarted device answered


def test_a_hung_call_killed_here_is_not_taken_for_such_a_death(ray_local, tmp_path):
    dispatcher, done, calls = poisoned_dispatch(tmp_path, hang=True, block_timeout=1.0)
    assert sorted(done) == list(range(8))
    assert [t.block for t in dispatcher.timeouts] == [3]
    assert [c["block"] for c in calls].count(3) == 2  # the hung call, and the block again after the restart
