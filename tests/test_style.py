"""The code style of pyproject.toml's [tool.ruff] holds over the repository."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_pytest_collects_every_test_file():
    """No test file is skipped by a folder rule (pytest's default skips folders named build)."""
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    collected = {line.split("::")[0] for line in done.stdout.splitlines() if "::" in line}
    on_disk = {str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py") if "fakes" not in p.parts}
    assert on_disk - collected == set(), done.stdout[-2000:] + done.stderr[-2000:]
