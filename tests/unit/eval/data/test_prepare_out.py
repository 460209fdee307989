"""`npueval prepare`'s --out: one writer at a time, and nothing left behind by a prepare that was
stopped (SIGTERM) or killed (SIGKILL)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from locks import held_elsewhere
from textgen import generate_wiki_corpus
from vocabs import small_vocab_tokens

from npueval.core.files import lock_of, pid_alive
from npueval.eval.cli import main
from npueval.eval.data.manifest import DataManifest


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory) -> Path:
    """About 30 MB: a few seconds of prepare on two workers, time to stop it half-way."""
    root = tmp_path_factory.mktemp("big") / "wiki"
    generate_wiki_corpus(root, small_vocab_tokens(), 30_000_000, articles_per_file=200)
    return root


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small") / "wiki"
    generate_wiki_corpus(root, small_vocab_tokens(), 300_000, articles_per_file=60)
    return root


def prepare_argv(corpus: Path, vocab: Path, out: Path, *more: str) -> list[str]:
    return ["prepare", str(corpus), "--vocab", str(vocab), "--out", str(out), "--files", "all", *more]


def dead_pid() -> int:
    """The pid of a process that has ended."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def started_prepare(corpus: Path, vocab: Path, out: Path) -> tuple[subprocess.Popen, set[int]]:
    """A CLI prepare with two workers, once both work on it and its partial folder exists."""
    proc = subprocess.Popen([sys.executable, "-m", "npueval.eval", *prepare_argv(corpus, vocab, out, "--workers", "2")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        workers = children(proc.pid)
        if len(workers) >= 2 and list(out.parent.glob(f".{out.name}.partial-*")):
            return proc, workers
        time.sleep(0.02)


def gone(pids: set[int], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while any(pid_alive(p) and Path(f"/proc/{p}/stat").read_text().split()[2] != "Z" for p in pids if
              Path(f"/proc/{p}").exists()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_second_prepare_into_an_out_being_written_is_refused(small_corpus, vocab_path, tmp_path, capsys):
    """Another process writing OUT (it holds OUT's lock) makes a second prepare stop at once, where
    both used to finish and the first one's data set was silently replaced by the second's."""
    out = tmp_path / "data"
    with held_elsewhere(lock_of(out)) as holder:
        assert main(prepare_argv(small_corpus, vocab_path, out)) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"npueval prepare: error: --out {out}: another npueval (pid {holder.pid}) is writing it"
                       "; wait for it to finish, or choose another --out")
        assert not out.exists() and not list(tmp_path.glob(".data.partial-*"))
    # The lock went with its process: now it runs, and leaves no lock file behind.
    assert main(prepare_argv(small_corpus, vocab_path, out, "--workers", "0")) == 0
    assert DataManifest.read(out).windows > 0 and not lock_of(out).exists()


@pytest.mark.slow
def test_sigterm_stops_prepare_as_ctrl_c_does(big_corpus, vocab_path, tmp_path):
    """SIGTERM (ray job stop, a scheduler): one line, exit 143, the workers end with it and the
    partial folder goes; it used to end at once (exit 143 too), leaving both behind."""
    out = tmp_path / "data"
    proc, workers = started_prepare(big_corpus, vocab_path, out)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == "npueval prepare: interrupted (SIGTERM)"
    assert "Traceback" not in stderr, stderr
    assert gone(workers), "a tokenizing worker outlived its prepare"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no partial folder, no lock file, no OUT


@pytest.mark.slow
def test_a_killed_prepare_leaves_no_worker_and_the_next_one_cleans_up(big_corpus, small_corpus, vocab_path,
                                                                       tmp_path):
    """SIGKILL (the OOM killer, say) runs no clean-up at all: the workers end with their parent
    instead of blocking forever on its queue, and the next prepare into OUT removes the partial
    folder left beside it."""
    out = tmp_path / "data"
    proc, workers = started_prepare(big_corpus, vocab_path, out)
    proc.kill()
    proc.communicate(timeout=60)
    assert gone(workers), "a tokenizing worker outlived its prepare"
    (left,) = tmp_path.glob(".data.partial-*")
    assert main(prepare_argv(small_corpus, vocab_path, out, "--workers", "0")) == 0
    assert not left.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_live_processs_partial_folder_is_kept(small_corpus, vocab_path, tmp_path):
    live = subprocess.Popen(["sleep", "60"])
    try:
        theirs = tmp_path / f".data.partial-{live.pid}"  # as an npueval without the lock may write one
        theirs.mkdir()
        assert main(prepare_argv(small_corpus, vocab_path, tmp_path / "data", "--workers", "0")) == 0
        assert theirs.is_dir()
    finally:
        live.kill()
        live.wait()


def test_a_data_set_set_aside_by_a_prepare_that_died_goes_back_in_place(small_corpus, vocab_path, tmp_path, caplog):
    """Killed between its two renames (OUT set aside as .OUT.old-PID, the new one not yet in
    place), a prepare --force left no OUT: the next prepare puts the old one back."""
    out = tmp_path / "data"
    assert main(prepare_argv(small_corpus, vocab_path, out, "--workers", "0")) == 0
    aside = tmp_path / f".data.old-{dead_pid()}"
    out.rename(aside)
    with caplog.at_level("WARNING", logger="npueval.eval.data.prepare"):
        assert main(prepare_argv(small_corpus, vocab_path, out, "--workers", "0")) == 0
    assert any(f"putting back {aside} as {out}" in r.getMessage() for r in caplog.records)
    assert not aside.exists() and DataManifest.read(out).windows > 0
