"""What an actor keeps on its node's disk: a model copy ais_bench takes, and the note of a call
that ends the process on error (actors/node_files.py)."""

import hashlib
import os
import stat

import pytest

from npueval.actors.node_files import (
    CallInProgress,
    CallMarker,
    ModelFile,
    check_model_folder,
    local_model_file,
    unsafe_chars,
)
from npueval.core.errors import UserError

STORE: dict[str, bytes] = {}  # stands in for Ray's object store: sha256 → bytes


def model_file(name: str, data: bytes, weights: ModelFile | None = None) -> ModelFile:
    sha256 = hashlib.sha256(data).hexdigest()
    STORE[sha256] = data
    return ModelFile(name, sha256, len(data), weights)


def fetch_counting(fetched: list):
    return lambda file: fetched.append(STORE[file.sha256]) or STORE[file.sha256]


def test_the_copy_is_named_after_its_bytes_whatever_the_file_was_called(tmp_path):
    data = b"model bytes"
    sha = hashlib.sha256(data).hexdigest()
    fetched = []
    path = local_model_file(model_file("my model (final v2)!.om", data), fetch_counting(fetched), tmp_path)
    assert path == tmp_path / sha[:16] / "model.om" and path.read_bytes() == data
    assert unsafe_chars(path) == ""
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = local_model_file(model_file("other name.om", data), fetch_counting(fetched), tmp_path)
    assert again == path and fetched == [data]  # written once per node


def test_external_weights_go_beside_the_model_under_the_name_it_gives_them(tmp_path):
    """An ONNX model over 2 GiB names its weights file; the copy is named after both files' bytes, so
    the same graph with other weights (a fine-tune built the same way) gets a copy of its own."""
    graph = b"graph that names big.onnx.data"
    fetched = []
    first = model_file("big.onnx", graph, model_file("big.onnx.data", b"weights one"))
    path = local_model_file(first, fetch_counting(fetched), tmp_path)
    assert path.name == "model.onnx" and (path.parent / "big.onnx.data").read_bytes() == b"weights one"
    assert path.parent.name == first.key[:16] != first.sha256[:16]
    second = model_file("big.onnx", graph, model_file("big.onnx.data", b"weights two"))
    other = local_model_file(second, fetch_counting(fetched), tmp_path)
    assert other.parent != path.parent and (other.parent / "big.onnx.data").read_bytes() == b"weights two"
    assert (path.parent / "big.onnx.data").read_bytes() == b"weights one"
    local_model_file(first, fetch_counting(fetched), tmp_path)
    assert len(fetched) == 4  # each file written once per node


def test_the_actors_of_a_node_take_turns_and_only_the_first_fetches(tmp_path):
    """Eight actors of one node arriving at once: one holds the model's bytes and writes the copy,
    the others wait for it and find it, instead of each fetching and hashing them."""
    import threading
    import time

    data = os.urandom(1 << 20)
    fetched, inside, most = [], [0], [0]
    lock = threading.Lock()

    def slow_fetch(file: ModelFile) -> bytes:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.05)
        fetched.append(file.name)
        with lock:
            inside[0] -= 1
        return STORE[file.sha256]

    model = model_file("model.om", data)
    paths = []
    threads = [threading.Thread(target=lambda: paths.append(local_model_file(model, slow_fetch, tmp_path)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fetched == ["model.om"] and most[0] == 1
    assert len(set(paths)) == 1 and paths[0].read_bytes() == data
    assert sorted(p.name for p in paths[0].parent.iterdir()) == [".lock", "model.om"]  # no temporaries left


def test_bytes_that_do_not_match_their_hash_are_refused(tmp_path):
    def wrong_bytes(file: ModelFile) -> bytes:
        return b"abc"

    with pytest.raises(UserError, match="model m.om: the bytes that reached this node do not match its sha256"):
        local_model_file(ModelFile("m.om", "0" * 64, 3), wrong_bytes, tmp_path)
    weights = ModelFile("m.onnx.data", "0" * 64, 3)
    with pytest.raises(UserError, match="model m.onnx.data: the bytes"):
        local_model_file(ModelFile("m.onnx", "1" * 64, 3, weights), wrong_bytes, tmp_path)


def test_a_temp_folder_ais_bench_would_refuse_is_named_with_the_fix(tmp_path):
    bad = tmp_path / "tmp dir (shared)"
    assert unsafe_chars(bad) == " ()"
    with pytest.raises(UserError, match=r"whose path holds ' \(\)'.*set TMPDIR to a folder"):
        check_model_folder(bad / "npueval-0")
    assert check_model_folder(tmp_path / "ok") == tmp_path / "ok"


def test_a_folder_others_can_write_to_is_refused(tmp_path):
    folder = tmp_path / "npueval-x"
    folder.mkdir(mode=0o777)
    os.chmod(folder, 0o777)
    with pytest.raises(UserError, match="not a folder of this user that only it can write to"):
        local_model_file(model_file("m.om", b"x"), fetch_counting([]), folder)


def test_the_call_marker_says_what_the_previous_process_died_in(tmp_path):
    marker = CallMarker.for_actor("abc123", tmp_path)
    assert marker.take() is None
    call = CallInProgress(7, "ais_bench infer_pipeline", "npu:3")
    marker.mark(call)  # the process dies here, inside the call
    restarted = CallMarker.for_actor("abc123", tmp_path)
    assert restarted.take() == call
    assert restarted.take() is None  # taken once
    marker.mark(call)
    marker.clear()  # the call returned
    assert restarted.take() is None
    marker.path.write_text("{not json")
    assert restarted.take() is None and not marker.path.exists()


def test_only_ais_bench_needs_its_path_rule(tmp_path):
    """onnxruntime and torch take any path: a model copy in a TMPDIR of CJK characters, say, is
    refused only where ais_bench opens it (the worker checks then: worker.local_model_file(safe))."""
    root = tmp_path / "临时" / "npueval-0"
    path = local_model_file(model_file("m.onnx", b"x"), fetch_counting([]), root)
    assert path.read_bytes() == b"x" and path.parent.parent == root
    with pytest.raises(UserError, match="which ais_bench refuses"):
        check_model_folder(root)
