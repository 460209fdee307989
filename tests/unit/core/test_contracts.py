"""Frozen dataclasses to and from JSON (core/contracts.py), and the three files that use them."""

import json
from dataclasses import dataclass, field

import pytest

from npueval.core.contracts import FLATTEN, ContractError, from_json, key, to_json


@dataclass(frozen=True)
class Inner:
    a: int
    b: str


@dataclass(frozen=True, kw_only=True)
class Outer:
    version: int = 1
    head: Inner = field(metadata=FLATTEN)
    from_: str = field(metadata=key("from"))
    rate: float | None
    items: tuple[Inner, ...]
    payload: dict
    flag: bool = False


def outer() -> Outer:
    return Outer(head=Inner(1, "x"), from_="om", rate=2.5, items=(Inner(2, "y"),), payload={"k": [1]}, flag=True)


def test_fields_in_their_order_flattened_and_renamed():
    assert list(to_json(outer())) == ["version", "a", "b", "from", "rate", "items", "payload", "flag"]
    assert to_json(outer())["items"] == [{"a": 2, "b": "y"}]
    assert from_json(Outer, json.loads(json.dumps(to_json(outer())))) == outer()


def test_an_int_is_a_float_and_a_missing_default_is_taken():
    obj = to_json(outer())
    obj["rate"] = 3
    del obj["version"], obj["flag"]
    back = from_json(Outer, obj)
    assert back.rate == 3.0 and isinstance(back.rate, float) and back.version == 1 and back.flag is False


@pytest.mark.parametrize("change, message", [
    (lambda o: o.pop("b"), "^b: missing$"),
    (lambda o: o.update(a="1"), '^a: an integer expected, not "1"$'),
    (lambda o: o.update(a=True), "^a: an integer expected, not true$"),
    (lambda o: o.update(a=None), "^a: an integer expected, not null$"),
    (lambda o: o.update(b=["x"]), r'^b: a string expected, not \["x"\]$'),
    (lambda o: o.update(rate="fast"), '^rate: a number expected, not "fast"$'),
    (lambda o: o.update(flag=1), "^flag: true or false expected, not 1$"),
    (lambda o: o.update(payload=[]), r"^payload: an object expected, not \[\]$"),
    (lambda o: o.update(items=[{"a": 1}]), r"^items\[0\]\.b: missing$"),
    (lambda o: o.update(items={}), "^items: an array expected, not an object$"),
    (lambda o: o.update(items=None), "^items: an array expected, not null$"),
    (lambda o: o.pop("from"), "^from: missing$"),
])
def test_the_first_wrong_field_is_named(change, message):
    obj = to_json(outer())
    change(obj)
    with pytest.raises(ContractError, match=message):
        from_json(Outer, obj)


def test_not_an_object():
    with pytest.raises(ContractError, match="^Outer: an object expected, not an array$"):
        from_json(Outer, [])
    with pytest.raises(ContractError, match=r"^Outer: an object expected, not a boolean \(false\)$"):
        from_json(Outer, False)


def test_results_json_reads_back_and_an_older_file_reads_with_the_defaults(tmp_path):
    from run_data import results_folder

    from npueval.eval.driver.results_file import Results

    folder = results_folder(tmp_path / "r", [0, 1], [2.0, 3.0], [2, 2])
    results = Results.read(folder / "results.json")
    assert Results.from_json(json.loads(results.dumps())) == results
    older = results.to_json()
    for k in ("format_version", "pipeline", "ais_bench_api", "timeouts", "windows_nonfinite", "nonfinite"):
        del older[k]  # keys added after the first results.json
    assert Results.from_json(older).timeouts == () and Results.from_json(older).ais_bench_api is None
    assert list(results.to_json())[:4] == ["format_version", "mean_ce", "ppl", "seed_ppl"]


def test_the_bundled_builds_manifest_reads_back(tmp_path):
    from npueval.build.manifest import BuildManifest
    from npueval.eval.sample.bundled import BUILD

    manifest, raw = BuildManifest.read(BUILD)
    assert manifest.to_json() == json.loads(raw) and manifest.vocab_size > 1000 and manifest.output == "nll"
    manifest.write(tmp_path)
    assert (tmp_path / "manifest.json").read_bytes() == raw


def test_a_file_of_a_newer_format_is_refused_with_the_fix(tmp_path, seed_data):
    import shutil

    from run_data import results_folder

    from npueval.build.manifest import BuildManifest
    from npueval.core.errors import UserError
    from npueval.eval.data.dataset import open_data_set
    from npueval.eval.report import load_run
    from npueval.eval.sample.bundled import BUILD

    def bump(path):
        obj = json.loads(path.read_text(encoding="utf-8"))
        obj["format_version"] = 2
        path.write_text(json.dumps(obj), encoding="utf-8")

    folder = results_folder(tmp_path / "r", [0, 1], [2.0, 3.0], [2, 2])
    shutil.copytree(BUILD, tmp_path / "build")
    shutil.copytree(seed_data, tmp_path / "data")
    for path in (folder / "results.json", tmp_path / "build" / "manifest.json", tmp_path / "data" / "manifest.json"):
        bump(path)
    newer = r"format_version 2 is newer than this npueval reads \(1\): upgrade npueval to read it"
    with pytest.raises(UserError, match=rf"^{folder / 'results.json'}: {newer}$"):
        load_run(folder)
    with pytest.raises(UserError, match=rf"^--model {tmp_path / 'build' / 'manifest.json'}: {newer}$"):
        BuildManifest.read(tmp_path / "build")
    with pytest.raises(UserError, match=rf"^{tmp_path / 'data' / 'manifest.json'}: {newer}$"):
        open_data_set(tmp_path / "data")
