"""Two calls at once in a device actor: the device used from one thread, one call at a time."""

import os
import sys
import threading

import numpy as np
import pytest

from npueval.actors.device_thread import DeviceThread
from npueval.actors.evaluator import BlockRows, Evaluator
from npueval.actors.simulated import SimulatedBackend
from npueval.actors.worker import DeviceWorker, WorkerSpec
from npueval.eval.driver.background import BACKGROUND_NICE, lower_this_thread

L = 16


def rows_of(block: int, n: int = 8) -> BlockRows:
    ids = np.random.default_rng(block).integers(0, 21128, (n, L))
    return BlockRows(input_ids=ids, score_from=np.ones(n, np.int16), n_valid=np.full(n, L, np.int16),
                     window_ids=np.arange(block * n, (block + 1) * n))


def test_jobs_run_in_order_on_one_thread_and_errors_reach_the_caller():
    device = DeviceThread()
    seen = []

    def job(k):
        seen.append((k, threading.get_ident()))
        return k * k

    callers = [threading.Thread(target=lambda k=k: device.run(job, k)) for k in range(4)]
    assert device.run(job, 7) == 49
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    assert len(seen) == 5 and len({ident for _, ident in seen}) == 1 and seen[0][1] != threading.get_ident()
    with pytest.raises(ZeroDivisionError):
        device.run(lambda: 1 / 0)
    assert device.run(job, 3) == 9  # an error does not end the thread
    device.stop()
    device._thread.join(timeout=5)
    assert not device._thread.is_alive()


def test_two_blocks_at_once_give_the_bits_and_device_time_of_one_at_a_time():
    """The second call waits for the device while the first runs on it; each block's device
    time is its own batches' (measured on the device thread), and its wait is reported apart."""
    device = DeviceThread()
    backend = device.run(SimulatedBackend, 4, L, 30.0)
    evaluator = Evaluator(backend, device_thread=device)
    results = {}

    def evaluate(block):
        results[block] = evaluator.evaluate(block, **vars(rows_of(block)))

    calls = [threading.Thread(target=evaluate, args=(k,)) for k in (0, 1)]
    for t in calls:
        t.start()
    for t in calls:
        t.join()
    alone = Evaluator(SimulatedBackend(4, L))
    for block in (0, 1):
        expected = alone.evaluate(block, **vars(rows_of(block)))
        assert results[block].window_nll.tobytes() == expected.window_nll.tobytes()
        assert results[block].device_s == pytest.approx(2 * 0.030)  # 2 batches of 30 ms, not the other's too
    waits = sorted(r.device_wait_s for r in results.values())
    assert waits[0] < 0.03 and waits[1] > 0.03  # one ran first, the other waited for its 60 ms
    assert results[0].wall_s >= results[0].device_s + results[0].device_wait_s - 1e-3
    evaluator.close()


def test_the_check_covers_exactly_the_first_batches_with_two_calls_at_once():
    device = DeviceThread()
    evaluator = Evaluator(device.run(SimulatedBackend, 4, L), reference=SimulatedBackend(4, L), check_batches=3,
                          device_thread=device)
    out = []
    calls = [threading.Thread(target=lambda k=k: out.append(evaluator.evaluate(k, **vars(rows_of(k)))))
             for k in range(3)]
    for t in calls:
        t.start()
    for t in calls:
        t.join()
    assert sum(r.check.batches for r in out if r.check) == 3  # of the 6 batches, counted across threads
    assert all(r.check.max_abs == 0.0 for r in out if r.check)


def test_the_worker_makes_calls_and_closes_its_backend_on_its_device_thread():
    threads = {}

    class Recording(SimulatedBackend):
        def __init__(self, *args):
            threads["made"] = threading.get_ident()
            super().__init__(*args)

        def nll_many(self, batches):
            threads.setdefault("called", set()).add(threading.get_ident())
            return super().nll_many(batches)

        def close(self):
            threads["closed"] = threading.get_ident()

    worker = DeviceWorker(WorkerSpec(backend="simulated", batch_size=4, seq_len=L), "cpu:0",
                          factory=lambda spec, path: Recording(spec.batch_size, spec.seq_len))
    worker.describe()  # opens the backend, as the driver's first call does
    worker.evaluate(0, rows_of(0))
    worker.bench(loop=2, warmup=1)
    worker.close()
    assert threads["called"] == {threads["made"]} == {threads["closed"]}
    assert threads["made"] != threading.get_ident()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a per-thread nice value is Linux's")
def test_a_background_thread_runs_at_a_lower_priority_and_the_caller_keeps_its_own():
    seen = {}

    def background():
        lower_this_thread()
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    t = threading.Thread(target=background)
    t.start()
    t.join()
    assert seen["nice"] == BACKGROUND_NICE == 19
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before
