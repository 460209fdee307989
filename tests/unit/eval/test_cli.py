"""The `npueval` command as a user runs it: exit codes and one-line errors."""

import json
import shlex
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from terminal import run_on_a_terminal
from textgen import write_wiki_corpus

from npueval.eval.cli import main


def run(*args, cwd=None):
    return subprocess.run(["npueval", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"npueval {version('npueval')}"


def test_python_dash_m_is_the_same_command():
    r = subprocess.run([sys.executable, "-m", "npueval.eval", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("npueval ")


def test_prepare_end_to_end_then_no_op(tmp_path, vocab_path):
    write_wiki_corpus(tmp_path / "wiki", [[["\u4e00\u4e01" * 400] * 5]])
    args = ["prepare", str(tmp_path / "wiki"), "--vocab", str(vocab_path), "--out", str(tmp_path / "data")]
    r = run(*args, "-q")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    m = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert f"{m['windows']} windows" in r.stdout and m["windows"] == 5  # 802 tokens per article → 1 window each
    again = run(*args)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_prepare_says_one_window_and_one_bad_line_in_the_singular(tmp_path, vocab_path, capsys):
    write_wiki_corpus(tmp_path / "wiki", [[["\u4e00\u4e01" * 400]]])
    with open(tmp_path / "wiki" / "AA" / "wiki_00", "a") as f:
        f.write('{"text": oops}\n')
    assert main(["prepare", str(tmp_path / "wiki"), "--vocab", str(vocab_path), "--out", str(tmp_path / "data"),
                 "--skip-bad-lines", "--workers", "0", "-q"]) == 0
    said = capsys.readouterr().out
    assert said.startswith("1 window, 511 scored tokens (seed, n_ctx 512, stride 768); ")
    assert "1 bad line skipped" in said


@pytest.mark.parametrize(
    "args, culprit",
    [
        (["prepare", "{tmp}/nowhere", "--vocab", "{vocab}", "--out", "{tmp}/o"], "CORPUS {tmp}/nowhere"),
        (["prepare", "{tmp}/wiki", "--vocab", "{tmp}/none.txt", "--out", "{tmp}/o"], "--vocab {tmp}/none.txt"),
        (["prepare", "{tmp}/wiki", "--vocab", "{vocab}", "--out", "{tmp}/o", "--mode", "sliding", "--stride", "600"],
         "--stride 600"),
        (["prepare", "{tmp}/wiki", "--vocab", "{vocab}", "--out", "{tmp}/o", "--n-ctx", "many"], "--n-ctx"),
        (["prepare", "{tmp}/bad", "--vocab", "{vocab}", "--out", "{tmp}/o"], "{tmp}/bad/AA/wiki_00:2"),
        (["prepare", "{tmp}/wiki", "--out", "{tmp}/o"], "one of the arguments --tokenizer --vocab is required"),
    ],
)
def test_user_errors_are_one_line_exit_2(tmp_path, vocab_path, args, culprit):
    write_wiki_corpus(tmp_path / "wiki", [[["\u4e00" * 300]]])
    write_wiki_corpus(tmp_path / "bad", [[["\u4e00" * 300]]])
    with open(tmp_path / "bad" / "AA" / "wiki_00", "a") as f:
        f.write('{"text": oops}\n')
    fill = {"tmp": str(tmp_path), "vocab": str(vocab_path)}
    r = run(*[a.format(**fill) for a in args])
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert culprit.format(**fill) in lines[0]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_flags_that_do_not_fit_together(capsys, tmp_path):
    assert main(["run", "--model", "m"]) == 2
    assert capsys.readouterr().err.strip() == ("npueval run: error: --data is required with --model: a folder made "
                                               "by `npueval prepare`")
    assert main(["run", "--backend", "om"]) == 2
    assert capsys.readouterr().err.strip() == ("npueval run: error: --data is required with --backend om: a folder "
                                               "made by `npueval prepare`")
    assert main(["run", "--data", "d"]) == 2
    assert "--model is needed (a build folder, a .onnx or an .om), or --backend simulated" in capsys.readouterr().err
    assert main(["bench"]) == 2
    assert "--model is needed (one per batch size), or --backend simulated" in capsys.readouterr().err
    assert main(["run", "--resume"]) == 2
    assert capsys.readouterr().err.strip() == (
        "npueval run: error: --resume needs --out, the results folder of the run to continue")
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip() == (f"npueval report: error: OUT {tmp_path / 'nowhere'}: no such folder; "
                                               "give a results folder of `npueval run`")


def test_verbosity_flags_after_the_subcommand(tmp_path, vocab_path):
    write_wiki_corpus(tmp_path / "wiki", [[["\u4e00" * 300, "\u4e01" * 300]]])
    base = ["prepare", str(tmp_path / "wiki"), "--vocab", str(vocab_path), "--out", str(tmp_path / "o")]
    loud = run(*base, "-v")
    assert loud.returncode == 0 and "INFO npueval.eval.data.prepare" in loud.stderr
    quiet = run("-q", *base)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_interrupt_exits_130(monkeypatch, capsys, tmp_path, vocab_path):
    import npueval.eval.data.prepare as prep

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(prep, "prepare", interrupted)
    assert main(["prepare", str(tmp_path), "--vocab", str(vocab_path), "--out", str(tmp_path / "o")]) == 130
    assert capsys.readouterr().err.strip() == "npueval prepare: interrupted"


def test_progress_bar_on_a_terminal_only(tmp_path, vocab_path):
    write_wiki_corpus(tmp_path / "wiki", [[["\u4e00" * 300] * 20]])
    base = ["npueval", "prepare", str(tmp_path / "wiki"), "--vocab", str(vocab_path), "--workers", "0"]
    r, shown = run_on_a_terminal([*base, "--out", str(tmp_path / "tty")], timeout=120)
    assert r.returncode == 0
    assert b"prepare:   0%|" in shown
    piped = run(*base[1:], "--out", str(tmp_path / "pipe"))
    assert piped.returncode == 0 and "%|" not in piped.stderr


def test_no_pipeline_reaches_the_device_actors(tmp_path):
    """--no-pipeline: RunConfig → DeviceConfig → WorkerSpec → Evaluator; on by default."""
    from npueval.eval.cli import parser
    from npueval.eval.driver.fleet import worker_spec
    from npueval.eval.driver.run import RunConfig

    assert parser().parse_args(["run"]).pipeline is True
    assert parser().parse_args(["run", "--no-pipeline"]).pipeline is False
    assert parser().parse_args(["bench"]).pipeline is True  # bench's --data run
    assert parser().parse_args(["bench", "--no-pipeline"]).pipeline is False
    for pipeline in (True, False):
        config = RunConfig.from_flags(data=tmp_path, out=tmp_path / "out", backend="simulated", pipeline=pipeline)
        spec = worker_spec(config.device, "simulated", None, 16, 1, {"CPU": 2})
        assert config.device.pipeline is spec.pipeline is pipeline


def pasted(line: str) -> list[str]:
    """The words a shell makes of the command between backticks in `line`."""
    return shlex.split(line.split("`")[1])


def test_the_commands_printed_to_paste_quote_their_paths(monkeypatch, capsys, tmp_path):
    """A path with a space or CJK characters, pasted from what `run` and `build` print, is still one word."""
    from types import SimpleNamespace

    import npueval.build.pipeline as pipeline
    import npueval.eval.driver.results as results
    import npueval.eval.driver.run as driver

    out = tmp_path / "my runs" / "维基 1"
    monkeypatch.setattr(driver, "run", lambda config, progress: SimpleNamespace(out=config.out, results=None))
    monkeypatch.setattr(results, "summary_table", lambda r: "summary")
    assert main(["run", "--backend", "simulated", "--data", str(tmp_path), "--out", str(out)]) == 0
    hint = capsys.readouterr().out.splitlines()[-1]
    assert hint.startswith(f"→ {out}  (") and pasted(hint) == ["npueval", "report", str(out), "--plot", "run.png"]

    manifest = SimpleNamespace(onnx="model.onnx", family="gpt2", output="nll", batch_size=1, seq_len=8, opset=13,
                               stages={"export": {"verify": {"rel_err": 0.0}}})
    for given, script in ((out, str(out / "atc.sh")), (Path("."), "./atc.sh")):
        monkeypatch.setattr(pipeline, "build", lambda config: SimpleNamespace(out=config.out, manifest=manifest,
                                                                                om=None))
        assert main(["build", str(tmp_path), "--out", str(given)]) == 0
        line = capsys.readouterr().out.splitlines()[-1]
        assert line.startswith("No CANN here: compile on an NPU host with ")
        assert shlex.split(line.removeprefix("No CANN here: compile on an NPU host with ")) == [script]
