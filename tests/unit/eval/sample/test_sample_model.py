"""The bundled sample model as it ships: its build folder runs wherever the package is installed."""

from __future__ import annotations

import json

from npueval.build.manifest import BuildManifest
from npueval.core.files import file_sha256
from npueval.eval.driver.model_spec import resolve_model
from npueval.eval.sample.bundled import BUILD, CHECKPOINT


def strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def test_the_bundled_build_names_no_path_of_the_machine_it_was_built_on():
    manifest = json.loads((BUILD / "manifest.json").read_text(encoding="utf-8"))
    assert [s for s in strings(manifest) if s.startswith("/")] == []
    assert manifest["checkpoint"] == "../checkpoint"
    # …and the torch backends find its checkpoint from there.
    assert resolve_model(BUILD).checkpoint.resolve() == CHECKPOINT.resolve()


def test_the_bundled_build_records_its_model_files():
    m, _ = BuildManifest.read(BUILD)
    assert [(f.name, f.sha256, f.size) for f in m.files] == [
        ("model.onnx", file_sha256(BUILD / "model.onnx"), (BUILD / "model.onnx").stat().st_size)]
