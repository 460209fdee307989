"""What the benchmarks share: a quiet Ray on 127.0.0.1, one Ray per configuration, a synthetic
prepared data set, what a run's blocks say, and the host's CPU and memory as /proc and Ray
report them.

Importing this module sets Ray's switches for a loopback-only Ray that sends no usage reports
(they must be set before `import ray`), so import it before Ray.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

for _k, _v in {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
               "RAY_AUTH_MODE": "disabled"}.items():
    os.environ.setdefault(_k, _v)

import numpy as np  # noqa: E402
import ray  # noqa: E402

from npueval.eval.data.dataset import ShardWriter  # noqa: E402
from npueval.eval.data.manifest import FORMAT_VERSION, DataInputs, DataManifest  # noqa: E402
from npueval.eval.data.windows import Windows  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "out"
N_CTX = 512
VOCAB = 21128


# -- an earlier version, side by side ---------------------------------------------------------------

def install_before(rev: str) -> Path:
    """npueval at `rev`, installed (without its dependencies: this venv's are used) into a folder
    of its own; returns the folder to put on PYTHONPATH."""
    target = OUT / f"npueval-{rev}"
    if (target / ".complete").is_file():
        return target
    shutil.rmtree(target, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="bench-before-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(target), str(src)], check=True)
    (target / ".complete").touch()
    return target


# -- the data set ------------------------------------------------------------------------------

def make_data(folder: Path, windows: int, rows_per_shard: int = 4096, num_pieces: int = 100) -> Path:
    """A prepared data set of `windows` full seed-mode windows of random ids (seeded), reused if present."""
    manifest = DataManifest.read(folder) if folder.is_dir() else None
    if manifest is not None and manifest.windows == windows:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    writer = ShardWriter(folder, N_CTX, rows_per_shard)
    per_piece = -(-windows // num_pieces)

    def pieces():
        for piece, lo in enumerate(range(0, windows, per_piece)):
            k = min(per_piece, windows - lo)
            yield Windows(piece, rng.integers(104, VOCAB, size=(k, N_CTX), dtype=np.int32),
                          np.full(k, N_CTX, np.int64), np.ones(k, np.int64), np.arange(lo, lo + k, dtype=np.int64))

    writer.write(pieces())
    shards = writer.close()
    inputs = DataInputs(format_version=FORMAT_VERSION, mode="seed", n_ctx=N_CTX, stride=768, num_pieces=num_pieces,
                        min_length=128, shuffle=False, files_mode="first", skip_bad_lines=False,
                        rows_per_shard=rows_per_shard, vocab_sha256="synthetic", files=())
    DataManifest(inputs=inputs, dataset_key=f"synthetic-{windows}", corpus_dir="synthetic",
                 vocab_path="synthetic", vocab_size=VOCAB, pad_id=0, articles_total=windows, articles_kept=windows,
                 articles_dropped=0, bad_lines=0, stream_tokens=windows * N_CTX, windows=writer.windows,
                 tokens=writer.tokens, scored_tokens=writer.scored_tokens, shards=tuple(shards)).write(folder)
    return folder


# -- Ray per configuration ---------------------------------------------------------------------

def start_ray(nodes: int, per_node: int):
    """One node: ray.init; several: a Cluster on 127.0.0.1 that this driver joins. Returns the Cluster or None."""
    logging.getLogger("ray._private.accelerators.npu").setLevel(logging.CRITICAL)
    if nodes == 1:
        ray.init(address="local", resources={"NPU": per_node}, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False, configure_logging=False)
        return None
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"NPU": per_node}, "node_ip_address": "127.0.0.1", "include_dashboard": False})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=1, resources={"NPU": per_node}, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    return cluster


def stop_ray(cluster) -> None:
    ray.shutdown()
    if cluster is not None:
        cluster.shutdown()


# -- what a run's blocks say ---------------------------------------------------------------------

def block_host_s(out: Path) -> list[float]:
    """Each block's actor-side host time inside the call: wall_s − device_s − device_wait_s (NLL,
    masking, sleep overshoot; not the wait for the device to finish the actor's other block)."""
    import pyarrow.parquet as pq

    host = []
    for path in sorted((out / "blocks").glob("block-*.parquet")):
        meta = json.loads(pq.read_schema(path).metadata[b"npueval"])
        host.append(meta["wall_s"] - meta["device_s"] - meta.get("device_wait_s", 0.0))
    return host


# -- CPU and memory of the host --------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _category(pid: int, cmdline: bytes) -> str:
    if pid == os.getpid():
        return "driver"
    if b"DeviceWorker" in cmdline:
        return "actors"
    if b"raylet" in cmdline or b"gcs_server" in cmdline:
        return "raylet+gcs"
    if b"ray" in cmdline:
        return "ray other"
    return "other"


def cpu_snapshot() -> dict:
    """CPU seconds so far of every process (by pid, with its category), and the machine's busy total."""
    procs = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        pid = int(name)
        procs[pid] = (_category(pid, cmdline), (int(fields[11]) + int(fields[12])) / _TICK)
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    busy = (sum(cpu[:8]) - cpu[3] - cpu[4]) / _TICK  # all but idle and iowait
    return {"procs": procs, "busy": busy}


def cpu_delta(before: dict, after: dict) -> dict:
    """CPU seconds between two snapshots: the machine's, and per category of process."""
    out = {"machine": after["busy"] - before["busy"]}
    for pid, (category, seconds) in after["procs"].items():
        start = before["procs"].get(pid, (category, 0.0))[1]
        out[category] = out.get(category, 0.0) + max(0.0, seconds - start)
    return out


class RssSampler:
    """Peaks of this process's RssAnon and RssShmem (KiB in /proc/self/status), every 10 ms."""

    FIELDS = ("RssAnon", "RssShmem")

    def __init__(self):
        self.peak = dict.fromkeys(self.FIELDS, 0)
        threading.Thread(target=self._work, daemon=True, name="rss-sampler").start()

    def _work(self) -> None:
        while True:
            with open("/proc/self/status") as f:
                for line in f:
                    key = line.split(":", 1)[0]
                    if key in self.peak:
                        self.peak[key] = max(self.peak[key], int(line.split()[1]) * 1024)
            time.sleep(0.01)


class StorePoller:
    """The object store's bytes in use, summed over the nodes, every `poll_s`: its high-water mark,
    and the bytes spilled (Ray's global memory info, the call behind `ray memory --stats-only`)."""

    def __init__(self, address: str, poll_s: float = 0.05):
        from ray._private.internal_api import get_state_from_address

        self.state, self.poll_s = get_state_from_address(address), poll_s
        self.high = self.spilled = self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, daemon=True, name="store-poller")

    def _work(self) -> None:
        from ray._private.internal_api import get_memory_info_reply

        while not self._stop.is_set():
            stats = get_memory_info_reply(self.state).store_stats
            self.high = max(self.high, stats.object_store_bytes_used)
            self.spilled = max(self.spilled, stats.spilled_bytes_total)
            self.polls += 1
            self._stop.wait(self.poll_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def header() -> dict:
    """What a benchmark's JSON opens with: the command, the machine, the commit and the time."""
    return {"command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__,
                        "platform": platform.platform()},
            "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True).stdout.strip(),
            "started_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
