"""`pip install .` and `pip install -e .` in fresh venvs: one namespace, no stray top-level packages."""

import shutil
import subprocess
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "cluster", "actors", "build", "eval")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of the tracked files, so installing writes nothing into the checkout."""
    dest = tmp_path_factory.mktemp("src") / "npueval"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


def fresh_venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(path)
    return path / "bin" / "python"


def pip_install(python: Path, *args: str) -> None:
    r = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def py(python: Path, code: str, cwd: Path) -> str:
    r = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.parametrize("editable", [False, True], ids=["regular", "editable"])
def test_install_exposes_only_the_npueval_namespace(source, tmp_path, editable):
    python = fresh_venv(tmp_path / "venv")
    pip_install(python, *(["-e"] if editable else []), str(source))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = py(python, "import npueval.eval.cli, npueval.build, npueval.cluster, npueval.actors; "
                       "print(npueval.eval.cli.__file__)", elsewhere)
    assert Path(where) == ((source / "eval" / "cli.py") if editable else Path(where))
    if not editable:
        site = Path(py(python, "import sysconfig; print(sysconfig.get_paths()['purelib'])", elsewhere))
        assert Path(where).is_relative_to(site)
        for name in PACKAGES:
            assert (site / "npueval" / name / "__init__.py").is_file()
            assert not (site / name).exists(), f"a top-level {name} package was installed"
        assert (site / "npueval" / "eval" / "__main__.py").is_file()
        # the bundled sample model travels as package data
        sample = site / "npueval" / "eval" / "sample" / "model"
        assert sorted(p.name for p in (sample / "checkpoint").iterdir()) == ["config.json", "model.safetensors",
                                                                             "vocab.txt"]
        assert sorted(p.name for p in (sample / "onnx").iterdir()) == ["manifest.json", "model.onnx", "vocab.txt"]
    for name in PACKAGES:
        found = py(python, f"import importlib.util as u; s = u.find_spec({name!r}); print(s.origin if s else None)",
                   elsewhere)
        assert str(source) not in found, f"`import {name}` resolves into the source tree: {found}"
    r = subprocess.run([str(python.parent / "npueval"), "--version"], capture_output=True, text=True, cwd=elsewhere)
    assert r.returncode == 0 and r.stdout.startswith("npueval ")
    # setuptools' own build files (build/lib, build/bdist.*) must not land in our npueval.build folder.
    tracked = {Path(p).name for p in subprocess.run(["git", "ls-files", "build"], cwd=REPO, check=True,
                                                     capture_output=True, text=True).stdout.split()}
    assert {p.name for p in (source / "build").iterdir() if p.name != "__pycache__"} == tracked
