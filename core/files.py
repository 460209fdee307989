"""Files as npueval writes them: whole or not at all, and named by their bytes.

`atomic_write` is the one way a file appears under its name: the bytes go to a temporary beside it
(`.NAME.tmp`), which is renamed into place, so a process killed or a disk filled on the way
leaves the old file or none, never half of one (RELIABILITY.md, "Faults").

`cached_sha256` names a large file (a model's weights) by its bytes without reading them on every
run: the digest is kept in npueval's cache under the file's identity on disk. `locked` keeps two
processes from writing the same thing at once.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


#: The cache's folder of digests, one small file per file hashed.
DIGESTS = "sha256"


def cached_sha256(path: Path) -> str:
    """`file_sha256(path)`, read from the cache while the file is the one hashed: the same path,
    device, inode, size, mtime and ctime. Any write to the file, a replacement or a `touch`
    changes its ctime, which no user can set back, so a changed file is hashed again. A cache
    that cannot be written only costs the hashing."""
    from .cache import cache_root

    path = Path(path)
    st = path.stat()
    key = f"{path.resolve()}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}"
    entry = cache_root() / DIGESTS / hashlib.sha256(key.encode()).hexdigest()
    try:
        known = entry.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        known = ""
    if len(known) == 64 and all(c in "0123456789abcdef" for c in known):
        return known
    sha = file_sha256(path)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        # A temporary of this process's own: two runs may hash the same file at once.
        atomic_write(entry, sha + "\n", entry.with_name(f".{entry.name}.{os.getpid()}.tmp"))
    except OSError:
        pass
    return sha


def temporary_for(path: Path) -> Path:
    """The temporary a file is written to before it takes its name: `.NAME.tmp` beside it."""
    return path.with_name(f".{path.name}.tmp")


@contextmanager
def atomic_path(path: Path, temporary: Path | None = None) -> Iterator[Path]:
    """A temporary path to write `path` through: renamed to `path` when the block ends without an
    error, removed when it raises."""
    tmp = temporary or temporary_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes | str, temporary: Path | None = None) -> Path:
    """`data` as the file `path`, whole or not at all (text as UTF-8)."""
    with atomic_path(path, temporary) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return path


def atomic_write_with(path: Path, write: Callable[[Path], None], temporary: Path | None = None) -> Path:
    """The file `write(tmp)` makes, as `path`, whole or not at all (a Parquet writer, say)."""
    with atomic_path(path, temporary) as tmp:
        write(tmp)
    return path


#: What only a write fails with: a full disk, a quota or file-size limit, a read-only file system.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def output_lock(folder: Path, flag: str = "--out") -> ExitStack:
    """The lock of an output folder (`lock_of`), taken now without waiting: the ExitStack that
    holds it until it closes. Its parent is made if missing, so that taking it shows whether the
    folder can be written at all: one that cannot (a read-only file system, a file where a folder
    should be), or that another npueval writes, is a one-line error naming FLAG."""
    from .errors import DatasetError, UserError

    try:
        if not folder.parent.exists():
            folder.parent.mkdir(parents=True)
        stack = ExitStack()
        stack.enter_context(locked(lock_of(folder), wait=False, remove=True))  # a parent that is a file: ENOTDIR
    except LockHeld as held:
        raise DatasetError(f"{flag} {folder}: another npueval (pid {held.pid}) is writing it; wait for it to "
                           f"finish, or choose another {flag}") from None
    except OSError as exc:
        raise UserError(f"{flag} {folder}: cannot write there ({exc.strerror or exc}); choose another {flag}") from None
    if folder.is_dir() and not os.access(folder, os.W_OK):  # a read-only mount of its own, say
        stack.close()
        raise UserError(f"{flag} {folder}: cannot write there (not writable); choose another {flag}")
    return stack


def lock_of(folder: Path) -> Path:
    """The lock file of an output folder: `.NAME.lock` beside it, since the folder itself may not
    exist yet, or is replaced whole when it is done."""
    return folder.parent / f".{folder.name}.lock"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


class LockHeld(Exception):
    """Another process holds the lock file; `pid` is the one it wrote there (None if unreadable)."""

    def __init__(self, path: Path, pid: int | None):
        super().__init__(f"{path} is held by process {pid}")
        self.path, self.pid = path, pid


@contextmanager
def locked(path: Path, wait: bool = True, remove: bool = False) -> Iterator[None]:
    """An exclusive lock on the file `path` (made if missing) while the block runs; the process's
    pid is written in it. Without `wait`, LockHeld at once if another process holds it. With
    `remove`, the file goes at the end, while still locked: a process that opened it meanwhile then
    holds a lock on a file no one else sees, so every taker checks that its file is still the one
    at `path`. The lock goes with the process, however it ends (flock)."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            raise LockHeld(path, int(holder) if holder.isdigit() else None) from None
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        if remove:
            path.unlink(missing_ok=True)
        os.close(fd)
