"""Bad input to `npueval run`, end to end from the CLI: exit 2, one line naming the culprit, before
any device work, and nothing written (RELIABILITY.md, "Bad input")."""

from __future__ import annotations

import json
import shutil

import pytest

from npueval.eval.cli import main


def damaged(seed_data, tmp_path, how: str):
    data = tmp_path / "data"
    shutil.copytree(seed_data, data)
    shard = data / "shard-00000.parquet"
    manifest = json.loads((data / "manifest.json").read_text())
    if how == "truncated":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    elif how == "corrupted":
        raw = bytearray(shard.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        shard.write_bytes(bytes(raw))
    elif how == "missing":
        shard.unlink()
    elif how == "sha edited":
        manifest["shards"][0]["sha256"] = "0" * 64
    elif how == "name edited":
        manifest["shards"][0]["name"] = "../elsewhere/shard-00000.parquet"
    (data / "manifest.json").write_text(json.dumps(manifest))
    return data


@pytest.mark.parametrize("how, culprit", [
    ("truncated", "{data}/shard-00000.parquet: its sha256 is not the one {data}/manifest.json records"),
    ("corrupted", "{data}/shard-00000.parquet: its sha256 is not the one {data}/manifest.json records"),
    ("sha edited", "{data}/shard-00000.parquet: its sha256 is not the one {data}/manifest.json records"),
    ("missing", "{data}/shard-00000.parquet: missing, but {data}/manifest.json lists it"),
    ("name edited", "{data}/manifest.json: shard name '../elsewhere/shard-00000.parquet' is not a file name"),
])
def test_a_damaged_data_set_is_named(seed_data, tmp_path, capsys, how, culprit):
    data = damaged(seed_data, tmp_path, how)
    out = tmp_path / "out"
    assert main(["run", "--data", str(data), "--out", str(out), "--backend", "simulated"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and culprit.format(data=data) in err, err
    assert "prepare the data set again" in err
    assert not out.exists()  # refused before anything was written or started


@pytest.mark.parametrize("content, name, culprit", [
    (b"not a model", "model.onnx", "--model {path}: onnxruntime cannot load it"),
    (b"not a model", "model.bin", "--model {path}: expected a build folder, a .onnx or an .om file"),
])
def test_a_model_file_that_is_not_onnx_or_om_is_named(seed_data, tmp_path, capsys, content, name, culprit):
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["run", "--data", str(seed_data), "--out", str(tmp_path / "out"), "--model", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and culprit.format(path=path) in err, err
    assert not (tmp_path / "out").exists()
