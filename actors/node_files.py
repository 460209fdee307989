"""What a device actor keeps on its node's disk: the model's local copy, and a note of the device
call in progress where an error would end the process.

Both live under one folder per user in the temp folder, of mode 0o700. ais_bench (2024 on,
common/path_security_check.py) refuses a model whose absolute path holds a character outside
[_A-Za-z0-9/.-], or that is a link, group- or other-writable, or owned by someone else: the copy
is named after its bytes (`<sha256>/model.om`), whatever the user's file was called, and a temp
folder whose own path would be refused is a clear error, not a failure on every device.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from npueval.core.errors import UserError
from npueval.core.files import atomic_write_with, locked

#: What ais_bench refuses in a model's absolute path (PATH_WHITE_LIST_REGEX).
UNSAFE_PATH_CHARS = re.compile(r"[^_A-Za-z0-9/.-]")


def local_root() -> Path:
    """This user's folder of npueval files on this node (in $TMPDIR, else /tmp)."""
    return Path(tempfile.gettempdir()) / f"npueval-{os.getuid()}"


def unsafe_chars(path: Path) -> str:
    """The characters of `path` (made absolute) that ais_bench refuses, in order, once each."""
    return "".join(dict.fromkeys(UNSAFE_PATH_CHARS.findall(os.path.abspath(path))))


def own_folder(path: Path) -> Path:
    """`path` made (mode 0o700) or checked: a folder of this user that nobody else can write to."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UserError(f"{path} is not a folder of this user that only it can write to; remove it, or set TMPDIR "
                        "to another folder")
    return path


def check_model_folder(root: Path | None = None) -> Path:
    """The folder where models are copied, if ais_bench will take the paths in it."""
    root = root or local_root()
    bad = unsafe_chars(root)
    if bad:
        raise UserError(f"models are copied to {root}, whose path holds {bad!r}, which ais_bench refuses (it takes "
                        "only A-Z a-z 0-9 _ - / .): set TMPDIR to a folder whose path has none of them")
    return root


@dataclass(frozen=True)
class ModelFile:
    """A model file, its bytes in the object store under their sha256, and how to check them on
    arrival; `weights`: its external weights (an ONNX model over 2 GiB, core/model_io.py), copied
    beside it under the name the model gives them."""

    name: str
    sha256: str
    size: int
    weights: ModelFile | None = None

    @property
    def key(self) -> str:
        """What the node's copy is named after: the model's bytes, and its weights' with them."""
        if self.weights is None:
            return self.sha256
        return hashlib.sha256(f"{self.sha256}:{self.weights.sha256}".encode()).hexdigest()


#: Returns a model file's bytes: in a run, a buffer of this node's object store.
Fetch = Callable[[ModelFile], "bytes | memoryview"]


def local_model_file(model: ModelFile, fetch: Fetch, root: Path | None = None) -> Path:
    """The model as `<root>/<key[:16]>/model<suffix>`, its weights beside it, mode 0o644, written
    once per node. `fetch(file)` returns a file's bytes (a buffer of Ray's object store); they are
    checked against its sha256.

    The actors of one node arrive at once: they take turns (a lock file in the folder), so the
    first writes the copy and the others find it, instead of each holding the model's bytes and
    hashing them (8 × 14 GB for a 7B model's OM on an 8-chip host)."""
    folder = own_folder(own_folder(root or local_root()) / model.key[:16])  # ais_bench's path rule: the caller's
    with locked(folder / ".lock"):
        if model.weights is not None:
            _local_copy(folder / Path(model.weights.name).name, model.weights, fetch)
        return _local_copy(folder / f"model{Path(model.name).suffix}", model, fetch)


def _local_copy(path: Path, file: ModelFile, fetch: Fetch) -> Path:
    if path.is_file() and not path.is_symlink() and path.stat().st_size == file.size:
        return path
    data = fetch(file)
    if hashlib.sha256(data).hexdigest() != file.sha256:
        raise UserError(f"model {file.name}: the bytes that reached this node do not match its sha256")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".model.")
    os.close(fd)

    def write(temporary: Path) -> None:
        temporary.write_bytes(data)
        temporary.chmod(0o644)

    return atomic_write_with(path, write, Path(tmp))


@dataclass(frozen=True)
class CallInProgress:
    """The device call an actor's process was in (a block, and what it called) when it died."""

    block: int
    call: str  # e.g. "ais_bench infer_pipeline"
    device: str


class CallMarker:
    """A file written before a call that ends the process on error and removed after it: found by
    the actor Ray restarts in the same place, it says what the previous one died in."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def for_actor(cls, actor_id: str, root: Path | None = None) -> CallMarker:
        return cls(own_folder((root or local_root()) / "calls") / f"{actor_id}.json")

    def mark(self, call: CallInProgress) -> None:
        self.path.write_text(json.dumps(asdict(call)))

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def take(self) -> CallInProgress | None:
        """The call a previous process of this actor died in, if any; the note is removed."""
        try:
            found = CallInProgress(**json.loads(self.path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        finally:
            self.clear()
        return found
