"""What the benchmarks share: a quiet Ray on 127.0.0.1, one Ray per configuration, and a
synthetic prepared data set.

Importing this module sets Ray's switches for a loopback-only Ray that sends no usage reports
(they must be set before `import ray`), so import it before Ray.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
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
    DataManifest(inputs=inputs, dataset_key=f"bench_scaling-synthetic-{windows}", corpus_dir="synthetic",
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
