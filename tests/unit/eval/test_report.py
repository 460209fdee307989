"""`npueval report`'s reading of results folders: the comparison's numbers and its errors."""


import shlex
import shutil

import pytest
from run_data import results_folder

from npueval.eval.cli import main
from npueval.eval.report import compare, describe, load_run


def test_compare_covers_the_windows_both_scored_alike(tmp_path):
    a = load_run(results_folder(tmp_path / "a", [0, 1, 2, 3], [10.0, 20.0, 30.0, 40.0], [10, 10, 10, 10]))
    b = load_run(results_folder(tmp_path / "b", [1, 2, 3, 4], [21.0, 30.0, 44.0, 9.0], [10, 10, 11, 10],
                                backend="om", data_manifest_sha256="other"))
    text = compare(a, b)
    # windows 1 and 2 are in both with the same scored tokens; window 3 is scored differently
    assert "over the 2 windows both scored alike: mean cross-entropy A 2.500000, B 2.550000 (B − A +5.00e-02)" in text
    assert "per-window |B − A| max 1.00e-01, mean 5.00e-02 nats/token" in text
    assert "same model: yes    same data set: no" in text
    assert "A has 4 windows, B 4: the headline numbers above cover different windows" in text
    assert "backend" in text and "onnx" in text and " om" in text


def test_describe_gives_the_spread_and_the_hardest_windows(tmp_path):
    run = load_run(results_folder(tmp_path / "a", [5, 6, 7], [10.0, 50.0, 30.0], [10, 10, 10]))
    text = describe(run)
    assert ("per-window loss (nats/token) over 3 windows: min 1.000  p10 1.400  median 3.000  p90 4.600  "
            "max 5.000") in text
    assert "hardest windows: window 6 (article 1) 5.000, window 7 (article 2) 3.000, window 5 (article 0) 1.000" in text


def test_a_folder_without_results_says_how_to_finish_it(tmp_path, capsys):
    (tmp_path / "run" / "blocks").mkdir(parents=True)
    assert main(["report", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"npueval report: error: OUT {tmp_path / 'run'}: no results.json; it holds finished blocks: finish the run "
        f"with `npueval run --resume --out {tmp_path / 'run'}` (and its other flags)")


def test_the_commands_to_finish_a_run_quote_its_folder(tmp_path, capsys):
    """A folder with a space: the command the hint gives is pasted as it is."""
    folder = tmp_path / "my run"
    (folder / "blocks").mkdir(parents=True)
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"finish the run with `npueval run --resume --out {shlex.quote(str(folder))}` (and its "
                        "other flags)")
    assert shlex.split(err.split("`")[1]) == ["npueval", "run", "--resume", "--out", str(folder)]
    shutil.rmtree(folder)
    results_folder(folder, [0], [1.0], [1])
    (folder / "windows.parquet").unlink()
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"npueval report: error: {folder / 'windows.parquet'}: missing; rerun with `")
    assert shlex.split(err.split("`")[1]) == ["npueval", "run", "--resume", "--out", str(folder)]


def test_plot_into_a_missing_folder_is_refused(tmp_path, capsys):
    results_folder(tmp_path / "a", [0], [1.0], [1])
    assert main(["report", str(tmp_path / "a"), "--plot", str(tmp_path / "no" / "x.png")]) == 2
    assert capsys.readouterr().err.strip().endswith(f"--plot {tmp_path / 'no' / 'x.png'}: the folder {tmp_path / 'no'} "
                                                    "does not exist")


@pytest.mark.parametrize("broken", ["results.json", "windows.parquet"])
def test_a_damaged_folder_is_named(tmp_path, capsys, broken):
    folder = results_folder(tmp_path / "a", [0], [1.0], [1])
    (folder / broken).write_bytes(b"\x00garbage")
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"npueval report: error: OUT {folder}: results.json or windows.parquet is unreadable")
    assert len(err.splitlines()) == 1
