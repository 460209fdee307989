"""Every stage's bad input, end to end from the CLI in one place (RELIABILITY.md, "Bad input").

Each case runs `npueval.eval.cli.main(argv)` as a user would and expects exit 2, one line on
stderr that names the culprit (a file, a flag, the folder given to --resume) and says what to
do, no traceback, nothing written, and Ray never started. Cases tested end to end elsewhere are
not repeated here: tests/unit/eval/test_cli.py, test_report.py, eval/driver/test_bad_input.py,
test_build_pipeline.py and tests/integration/test_run.py; RELIABILITY.md lists them all.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from run_data import REPO
from textgen import write_wiki_corpus

from npueval.eval.cli import main


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory, vocab_path) -> dict[str, Path]:
    """A corpus, a data set prepared from it (n_ctx 64), a tiny checkpoint and two builds of its shape, all good."""
    from checkpoints import make_checkpoint

    from npueval.build.pipeline import BuildConfig, build
    from npueval.eval.data.prepare import PrepareConfig, prepare

    root = tmp_path_factory.mktemp("good")
    write_wiki_corpus(root / "wiki", [[["\u4e00\u4e01" * 300] * 6]])
    prepare(PrepareConfig(corpus_dir=root / "wiki", vocab=vocab_path, out=root / "data", n_ctx=64, stride=96,
                          workers=0))
    ckpt = make_checkpoint(root / "ckpt")
    # Two builds of one shape for the data (n_ctx 64), of other weights: seed 0 and seed 1.
    for name, seed in (("build", 0), ("other", 1)):
        build(BuildConfig(make_checkpoint(root / f"ckpt-{name}", seed=seed), root / name, seq_len=64))
    return {"root": root, "vocab": vocab_path, "wiki": root / "wiki", "data": root / "data", "ckpt": ckpt,
            "build": root / "build", "other": root / "other"}


@pytest.fixture(autouse=True)
def ray_never_starts(monkeypatch):
    """Bad input is refused before Ray: starting or joining one fails the test."""
    from npueval.cluster import ray_cluster

    def refuse(*args, **kwargs):
        pytest.fail("Ray was started: bad input must be refused before")

    monkeypatch.setattr(ray_cluster, "connect", refuse)


# -- the bad inputs, each made in the test's own folder (TMP) from the good fixtures -------------

def corpus_of(files: dict[str, bytes]):
    def make(tmp: Path, fx) -> None:
        for rel, data in files.items():
            (tmp / "corpus" / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / "corpus" / rel).write_bytes(data)
    return make


def a_parquet_without_text(tmp: Path, fx) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp / "corpus").mkdir()
    pq.write_table(pa.table({"content": ["a"]}), tmp / "corpus" / "part-0.parquet")


def a_model_and_jsonl(tmp: Path, fx) -> None:
    from checkpoints import write_tokenizer_json

    write_tokenizer_json(tmp / "model")
    corpus_of({"a.jsonl": b'{"text": "x"}\n'})(tmp, fx)


def a_tokenizer_config_naming_no_token(tmp: Path, fx) -> None:
    a_model_and_jsonl(tmp, fx)
    (tmp / "model" / "tokenizer_config.json").write_text('{"bos_token": "<|begin_of_text|>"}')


def a_file(tmp: Path, fx) -> None:
    (tmp / "a-file").write_text("not a folder\n")


def corpus_line(line: bytes):
    def make(tmp: Path, fx) -> None:
        write_wiki_corpus(tmp / "corpus", [[["\u4e00" * 300]]])
        (tmp / "corpus" / "AA" / "wiki_00").write_bytes(line)
    return make


def short_articles(tmp: Path, fx) -> None:
    write_wiki_corpus(tmp / "corpus", [[["\u4e00" * 20, "\u4e01" * 30]]])


def empty_subfolders(tmp: Path, fx) -> None:
    (tmp / "corpus" / "AA").mkdir(parents=True)


def vocab_file(content: bytes):
    def make(tmp: Path, fx) -> None:
        (tmp / "vocab.txt").write_bytes(content)
    return make


def other_files(tmp: Path, fx) -> None:
    (tmp / "out").mkdir()
    (tmp / "out" / "notes.txt").write_text("mine\n")


def checkpoint(change):
    def make(tmp: Path, fx) -> None:
        shutil.copytree(fx["ckpt"], tmp / "ckpt")
        change(tmp / "ckpt")
    return make


def data_set(change):
    def make(tmp: Path, fx) -> None:
        shutil.copytree(fx["data"], tmp / "data")
        change(tmp / "data")
    return make


def no_window(tmp: Path, fx) -> None:
    """A data set of no window, as prepare wrote one of articles too short for a window before it
    refused to (the case "prepare: a corpus too short for one window"): a manifest, no shard."""
    import dataclasses

    from npueval.eval.data.manifest import DataManifest

    (tmp / "data").mkdir()
    full = DataManifest.read(fx["data"])
    dataclasses.replace(full, inputs=dataclasses.replace(full.inputs, n_ctx=512, mode="seed"), articles_kept=3,
                        articles_total=3, windows=0, tokens=0, scored_tokens=0, shards=()).write(tmp / "data")


def build_folder_without_its_onnx(tmp: Path, fx) -> None:
    """The bundled sample's build manifest, without the model.onnx it names."""
    from npueval.eval.sample.bundled import BUILD

    (tmp / "build").mkdir()
    shutil.copy(BUILD / "manifest.json", tmp / "build" / "manifest.json")


def a_build(older: bool = False, replaced: bool = True):
    """A copy of the good build folder as TMP/build whose model.onnx was then replaced by the other
    build's (the same shape, other weights); `older`: its manifest as an earlier npueval wrote it,
    without the files' sha256."""
    def make(tmp: Path, fx) -> None:
        shutil.copytree(fx["build"], tmp / "build")
        if older:
            manifest = json.loads((tmp / "build" / "manifest.json").read_text())
            manifest.pop("files", None)
            (tmp / "build" / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if replaced:
            shutil.copyfile(fx["other"] / "model.onnx", tmp / "build" / "model.onnx")
    return make


def a_reference_of_512(tmp: Path, fx) -> None:
    """The bundled sample's ONNX (windows of 512) as TMP/ref.onnx: not the data's 64."""
    from npueval.eval.sample.bundled import BUILD

    shutil.copyfile(BUILD / "model.onnx", tmp / "ref.onnx")


def resumed_after_the_model_changed(tmp: Path, fx) -> None:
    """OUT of a run of TMP/build killed after one block, then TMP/build's model.onnx replaced by
    another model's of the same shape (the blocks left would be of another model)."""
    from npueval.eval.driver.model_spec import resolve_model

    a_build(older=True, replaced=False)(tmp, fx)
    before = resolve_model(tmp / "build").identity
    results_folder_with_blocks({"model": before, "seq_len": 64, "limit": None, "drop_last": False},
                               same_data=True)(tmp, fx)
    shutil.copyfile(fx["other"] / "model.onnx", tmp / "build" / "model.onnx")


def results_folder_with_blocks(run_json: dict | None, same_data: bool = False):
    """OUT of a run killed after one block; its run.json says what the run was (None: gone)."""
    def make(tmp: Path, fx) -> None:
        (tmp / "out" / "blocks").mkdir(parents=True)
        (tmp / "out" / "blocks" / "block-000000.parquet").write_bytes(b"a finished block\n")
        if run_json is not None:
            data = {"data_manifest_sha256": data_sha(fx)} if same_data else {}
            (tmp / "out" / "run.json").write_text(json.dumps({**run_json, **data}))
    return make


def a_results_folder(tmp: Path, fx) -> None:
    from run_data import results_folder

    results_folder(tmp / "done", [0, 1], [3.0, 4.0], [2, 2])


def nothing(tmp: Path, fx) -> None:
    pass


#: (what is made, argv, the culprit named, what to do): {tmp} is the test's folder, {vocab},
#: {wiki}, {data} and {ckpt} the good fixtures. {data_sha} is the good data set's manifest sha256.
#: `npueval run` on the simulated backend over the good data set; a case adds its bad flag.
SIM_RUN = ["run", "--data", "{data}", "--out", "{tmp}/out", "--backend", "simulated"]

CASES = {
    # devices
    "devices: an unknown flag": (
        nothing, ["devices", "--all"], "unrecognized arguments: --all", "see `npueval --help`"),
    # prepare
    "prepare: a CORPUS whose subfolders hold no file": (
        empty_subfolders, ["prepare", "{tmp}/corpus", "--vocab", "{vocab}", "--out", "{tmp}/out"],
        "CORPUS {tmp}/corpus: empty corpus, no files in it", "pass the folder that holds the corpus"),
    "prepare: corpus files with blank lines only": (
        corpus_line(b"\n\n"), ["prepare", "{tmp}/corpus", "--vocab", "{vocab}", "--out", "{tmp}/out"],
        "CORPUS {tmp}/corpus: empty corpus, its 1 selected file(s) hold no articles",
        "expected one JSON object per line"),
    "prepare: a line without a text field": (
        corpus_line(b'{"id": "1", "title": "t"}\n'),
        ["prepare", "{tmp}/corpus", "--vocab", "{vocab}", "--out", "{tmp}/out"],
        '{tmp}/corpus/AA/wiki_00:1: no "text" field', "fix the line or pass --skip-bad-lines"),
    "prepare: a line that is a JSON array": (
        corpus_line(b'{"text": "\xe4\xb8\x80"}\n["text"]\n'),
        ["prepare", "{tmp}/corpus", "--vocab", "{vocab}", "--out", "{tmp}/out"],
        "{tmp}/corpus/AA/wiki_00:2: a JSON array, not an object", "fix the line or pass --skip-bad-lines"),
    "prepare: a line that is not UTF-8": (
        corpus_line(b'{"text": "\xff\xfe"}\n'), ["prepare", "{tmp}/corpus", "--vocab", "{vocab}", "--out", "{tmp}/out"],
        "{tmp}/corpus/AA/wiki_00:1: malformed JSON line ('utf-8' codec can't decode",
        "fix the line or pass --skip-bad-lines"),
    "prepare: a --vocab without the special tokens": (
        vocab_file(b"a\nb\n"), ["prepare", "{wiki}", "--vocab", "{tmp}/vocab.txt", "--out", "{tmp}/out"],
        "--vocab {tmp}/vocab.txt: not a BERT-Chinese vocab.txt, it lacks [UNK] [SEP] [CLS] [MASK]",
        "pass the checkpoint's vocab.txt"),
    "prepare: a --vocab that is not text": (
        vocab_file(b"\xff\xfe\x00\x01"), ["prepare", "{wiki}", "--vocab", "{tmp}/vocab.txt", "--out", "{tmp}/out"],
        "--vocab {tmp}/vocab.txt: not UTF-8 text (byte 0)", "pass the checkpoint's vocab.txt"),
    "prepare: a CORPUS file of no known suffix": (
        a_file, ["prepare", "{tmp}/a-file", "--vocab", "{vocab}", "--out", "{tmp}/out"],
        "CORPUS {tmp}/a-file: cannot tell its format from the suffix (none)", "pass --format jsonl, text or parquet"),
    "prepare: a corpus too short for one window": (
        short_articles, ["prepare", "{tmp}/corpus", "--vocab", "{vocab}", "--out", "{tmp}/out"],
        "CORPUS {tmp}/corpus: not one window could be made (articles kept: 0 of 2, mode seed, n_ctx 512)",
        "give it more text, or pass a smaller --n-ctx or --min-length"),
    "prepare: a corpus folder of both .jsonl and .txt files": (
        corpus_of({"a.jsonl": b'{"text": "x"}\n', "b.txt": b"x\n"}),
        ["prepare", "{tmp}/corpus", "--vocab", "{vocab}", "--out", "{tmp}/out"],
        "CORPUS {tmp}/corpus: holds 1 jsonl file(s) and 1 text file(s)", "pass --format to choose one"),
    "prepare: --files with a corpus that is not wiki_zh": (
        corpus_of({"a.jsonl": b'{"text": "x"}\n'}),
        ["prepare", "{tmp}/corpus", "--vocab", "{vocab}", "--out", "{tmp}/out", "--files", "all"],
        "--files all: chooses files of the wiki_zh layout", "leave --files out"),
    "prepare: a Parquet corpus without the --text-field column": (
        a_parquet_without_text, ["prepare", "{tmp}/corpus", "--vocab", "{vocab}", "--out", "{tmp}/out"],
        "{tmp}/corpus/part-0.parquet: no column 'text' (its columns: content)", "pass --text-field"),
    "prepare: a --tokenizer that is not there": (
        nothing, ["prepare", "{wiki}", "--tokenizer", "{tmp}/model", "--out", "{tmp}/out"],
        "--tokenizer {tmp}/model: no such file or folder", "pass the model's checkpoint or build folder"),
    "prepare: a tokenizer_config.json whose BOS the tokenizer.json lacks": (
        a_tokenizer_config_naming_no_token,
        ["prepare", "{tmp}/corpus", "--tokenizer", "{tmp}/model", "--out", "{tmp}/out"],
        "{tmp}/model/tokenizer_config.json: bos_token '<|begin_of_text|>' is not a token of tokenizer.json",
        "restore the model's tokenizer_config.json and tokenizer.json together"),
    "prepare: --mode seed with a tokenizer.json": (
        a_model_and_jsonl,
        ["prepare", "{tmp}/corpus", "--tokenizer", "{tmp}/model/tokenizer.json", "--out", "{tmp}/out", "--mode",
         "seed", "--format", "jsonl"],
        "--mode seed: the port's protocol, for GPT2-Chinese's vocab.txt", "use --mode sliding"),
    "prepare: an --out that is a file": (
        a_file, ["prepare", "{wiki}", "--vocab", "{vocab}", "--out", "{tmp}/a-file"],
        "--out {tmp}/a-file is a file", "name a folder"),
    "prepare: an --out inside a file": (
        a_file, ["prepare", "{wiki}", "--vocab", "{vocab}", "--out", "{tmp}/a-file/data"],
        "--out {tmp}/a-file/data: cannot write there (Not a directory)", "choose another --out"),
    "prepare: an --out holding other files": (
        other_files, ["prepare", "{wiki}", "--vocab", "{vocab}", "--out", "{tmp}/out"],
        "--out {tmp}/out: holds files that are not an npueval data set", "choose another folder or pass --force"),
    "prepare: an unknown --mode": (
        nothing, ["prepare", "{wiki}", "--vocab", "{vocab}", "--out", "{tmp}/out", "--mode", "window"],
        "argument --mode: invalid choice: 'window' (choose from 'seed', 'sliding', 'rolling', 'stride')",
        "see `npueval prepare --help`"),
    "prepare: --mode rolling with GPT2-Chinese's vocab.txt": (
        nothing, ["prepare", "{wiki}", "--vocab", "{vocab}", "--out", "{tmp}/out", "--mode", "rolling"],
        "--mode rolling: lm-evaluation-harness's and Hugging Face's protocols, for a model's tokenizer.json",
        "GPT2-Chinese's vocab.txt keeps the port's seed or sliding windows"),
    "prepare: --max-length outside rolling mode": (
        nothing, ["prepare", "{wiki}", "--vocab", "{vocab}", "--out", "{tmp}/out", "--max-length", "255"],
        "--max-length: lm-evaluation-harness's window, for --mode rolling", "give the window's length with --n-ctx"),
    "prepare: an unknown --files": (
        nothing, ["prepare", "{wiki}", "--vocab", "{vocab}", "--out", "{tmp}/out", "--files", "some"],
        "argument --files: invalid choice: 'some' (choose from 'first', 'all')", "see `npueval prepare --help`"),
    "prepare: --workers below 0": (
        nothing, ["prepare", "{wiki}", "--vocab", "{vocab}", "--out", "{tmp}/out", "--workers", "-1"],
        "--workers -1", "must be 0 (tokenize in this process) or more"),
    "prepare: --shuffle in sliding mode": (
        nothing, ["prepare", "{wiki}", "--vocab", "{vocab}", "--out", "{tmp}/out", "--mode", "sliding", "--shuffle"],
        "--shuffle reproduces the port's seed protocol", "use it with --mode seed"),
    # build
    "build: a CHECKPOINT that does not exist": (
        nothing, ["build", "{tmp}/nowhere", "--out", "{tmp}/out"],
        "CHECKPOINT {tmp}/nowhere: no such folder", "pass the folder with config.json and the weights"),
    "build: a CHECKPOINT that is a file": (
        a_file, ["build", "{tmp}/a-file", "--out", "{tmp}/out"],
        "CHECKPOINT {tmp}/a-file: a file, not a folder", "pass the folder with config.json and the weights"),
    "build: a checkpoint without config.json": (
        checkpoint(lambda c: (c / "config.json").unlink()), ["build", "{tmp}/ckpt", "--out", "{tmp}/out"],
        "{tmp}/ckpt/config.json: no such file", "a checkpoint needs its config.json"),
    "build: a config.json that is not JSON": (
        checkpoint(lambda c: (c / "config.json").write_text("{n_layer: 2")), ["build", "{tmp}/ckpt", "--out",
                                                                              "{tmp}/out"],
        "{tmp}/ckpt/config.json: not valid JSON", "restore the checkpoint's config.json"),
    "build: a corrupt model.safetensors": (
        checkpoint(lambda c: (c / "model.safetensors").write_bytes((c / "model.safetensors").read_bytes()[:4096])),
        ["build", "{tmp}/ckpt", "--out", "{tmp}/out", "--seq-len", "32"],
        "{tmp}/ckpt/model.safetensors: not a readable safetensors file", "(Error while deserializing header"),
    "build: a checkpoint's vocab.txt without the special tokens": (
        checkpoint(lambda c: (c / "vocab.txt").write_text("a\nb\n")), ["build", "{tmp}/ckpt", "--out", "{tmp}/out"],
        "npueval build: error: {tmp}/ckpt/vocab.txt: not a BERT-Chinese vocab.txt",
        "restore the checkpoint's own vocab.txt"),
    "build: an --out that is a file": (
        a_file, ["build", "{ckpt}", "--out", "{tmp}/a-file", "--seq-len", "32"],
        "--out {tmp}/a-file is a file", "name a folder"),
    "build: --tolerance 0": (
        nothing, ["build", "{ckpt}", "--out", "{tmp}/out", "--tolerance", "0"],
        "--tolerance 0.0", "must be a positive relative error"),
    # run
    "run: a manifest.json that is not JSON": (
        data_set(lambda d: (d / "manifest.json").write_text('{"n_ctx": 64,')),
        ["run", "--data", "{tmp}/data", "--out", "{tmp}/out", "--backend", "simulated"],
        "{tmp}/data/manifest.json: not the manifest of an `npueval prepare` data set", "prepare the data set again"),
    "run: a manifest.json edited to {}": (
        data_set(lambda d: (d / "manifest.json").write_text("{}")),
        ["run", "--data", "{tmp}/data", "--out", "{tmp}/out", "--backend", "simulated"],
        "{tmp}/data/manifest.json: not the manifest of an `npueval prepare` data set", "prepare the data set again"),
    "run: a data set without a window": (
        no_window, ["run", "--data", "{tmp}/data", "--out", "{tmp}/out", "--backend", "simulated"],
        "--data {tmp}/data: the data set holds no window (articles kept: 3 of 3; mode seed, n_ctx 512)",
        "prepare it again from more text, or with a smaller --n-ctx or --min-length"),
    "run: a --model that does not exist": (
        nothing, ["run", "--data", "{data}", "--out", "{tmp}/out", "--model", "{tmp}/model.onnx"],
        "--model {tmp}/model.onnx: no such file or folder", "give an `npueval build` folder, a .onnx, an .om"),
    "run: a --model folder that is not a build": (
        other_files, ["run", "--data", "{data}", "--out", "{tmp}/o", "--model", "{tmp}/out"],
        "--model {tmp}/out: no manifest.json", "point it at an `npueval build` folder or a model file"),
    "run: a --model build folder without its ONNX": (
        build_folder_without_its_onnx, ["run", "--data", "{data}", "--out", "{tmp}/out", "--model", "{tmp}/build"],
        "--model {tmp}/build: the manifest names model.onnx, which is missing", "run `npueval build` again"),
    "run: a build folder whose model.onnx was replaced after the build": (
        a_build(), ["run", "--data", "{data}", "--out", "{tmp}/out", "--model", "{tmp}/build"],
        "--model {tmp}/build: model.onnx is not the file `npueval build` wrote there",
        "run `npueval build` again, or put back the file it built"),
    "run: --resume after an older build's model.onnx was replaced": (
        resumed_after_the_model_changed,
        ["run", "--data", "{data}", "--out", "{tmp}/out", "--model", "{tmp}/build", "--resume"],
        "--resume: the blocks in {tmp}/out are of another run (model: ", "use another --out, or --force to start over"),
    "run: a --vocab that does not exist": (
        a_file, ["run", "--data", "{data}", "--out", "{tmp}/out", "--model", "{tmp}/a-file", "--vocab", "{tmp}/v.txt"],
        "--vocab {tmp}/v.txt: no such file", "pass the checkpoint's vocab.txt"),
    "run: an --out that is a file": (
        a_file, ["run", "--data", "{data}", "--out", "{tmp}/a-file", "--backend", "simulated"],
        "--out {tmp}/a-file is a file", "name a folder"),
    "run: an --out inside a file": (
        a_file, ["run", "--data", "{data}", "--out", "{tmp}/a-file/out", "--backend", "simulated"],
        "--out {tmp}/a-file/out: cannot write there (Not a directory)", "choose another --out"),
    "run: an --out holding blocks, without --resume or --force": (
        results_folder_with_blocks({}), SIM_RUN,
        "--out {tmp}/out already holds 1 finished block of a run",
        "continue it with --resume, or start over with --force"),
    "run: --resume on the folder of another data set": (
        results_folder_with_blocks({"data_manifest_sha256": "0" * 64, "model": None, "seq_len": 64, "limit": None,
                                    "drop_last": False, "backend": "simulated", "batch_size": 8, "block_windows": 256}),
        [*SIM_RUN, "--resume"],
        "--resume: the blocks in {tmp}/out are of another run "
        "(data_manifest_sha256: '{zeros}' there, '{data_sha}' now)",
        "use another --out, or --force to start over"),
    "run: --resume on the folder of another --limit": (
        results_folder_with_blocks({"model": None, "seq_len": 64, "limit": 48, "drop_last": False}, same_data=True),
        [*SIM_RUN, "--resume"],
        "--resume: the blocks in {tmp}/out are of another run (limit: 48 there, None now)",
        "use another --out, or --force to start over"),
    "run: --resume on a folder whose run.json is gone": (
        results_folder_with_blocks(None), [*SIM_RUN, "--resume"],
        "--resume: {tmp}/out/run.json is missing or unreadable", "start over with --force"),
    "run: --batch-size 0": (
        nothing, [*SIM_RUN, "--batch-size", "0"],
        "--batch-size 0", "must be at least 1"),
    "run: --devices that is not a number": (
        nothing, [*SIM_RUN, "--devices", "all"],
        "argument --devices: invalid int value: 'all'", "see `npueval run --help`"),
    "run: more simulated --devices than this host's memory holds": (
        nothing, [*SIM_RUN, "--devices", "10000000"],
        "--devices 10000000: each simulated device is a process of about 100 MB on this host",
        "ask for fewer (a real NPU host has 8 or 16 chips)"),
    "run: --block-windows 0": (
        nothing, [*SIM_RUN, "--block-windows", "0"],
        "--block-windows 0", "must be at least 1"),
    "run: --max-retries below 0": (
        nothing, [*SIM_RUN, "--max-retries", "-1"],
        "--max-retries -1", "must be 0 or more"),
    "run: an unknown --on-nonfinite": (
        nothing, [*SIM_RUN, "--on-nonfinite", "zero"],
        "argument --on-nonfinite: invalid choice: 'zero' (choose from 'fail', 'skip')", "see `npueval run --help`"),
    "run: a --check-against of another sequence length than the data": (
        a_reference_of_512, [*SIM_RUN, "--check-against", "{tmp}/ref.onnx"],
        "--check-against {tmp}/ref.onnx takes sequences of 512 tokens but --data {data} holds windows of 64",
        "give the ONNX of the model being evaluated"),
    "run: a --check-against that does not exist": (
        nothing, [*SIM_RUN, "--check-against", "{tmp}/ref.onnx"],
        "--check-against {tmp}/ref.onnx: no such file", "give the ONNX model to compare with"),
    # bench
    "bench: a --model that does not exist": (
        nothing, ["bench", "--model", "{tmp}/model.onnx"], "--model {tmp}/model.onnx: no such file or folder",
        "give an `npueval build` folder, a .onnx, an .om"),
    "bench: a --data that does not exist": (
        nothing, ["bench", "--backend", "simulated", "--data", "{tmp}/data"], "--data {tmp}/data: no such folder",
        "make it with `npueval prepare`"),
    "bench: a --data that is a file": (
        a_file, ["bench", "--backend", "simulated", "--data", "{tmp}/a-file"],
        "--data {tmp}/a-file: a file, not a folder", "make it with `npueval prepare`"),
    "bench: --json into a folder that does not exist": (
        nothing, ["bench", "--backend", "simulated", "--json", "{tmp}/no/bench.json"],
        "--json {tmp}/no/bench.json: the folder {tmp}/no does not exist", "does not exist"),
    "bench: --loop 0": (
        nothing, ["bench", "--backend", "simulated", "--loop", "0"], "--loop 0", "must be at least 1"),
    "bench: --model with the simulated backend": (
        a_file, ["bench", "--backend", "simulated", "--model", "{tmp}/a-file"], "--backend simulated runs no model",
        "drop --model, give --batch-sizes"),
    # report
    "report: an OUT that holds no results": (
        other_files, ["report",
                      "{tmp}/out"], "OUT {tmp}/out: no results.json", "give a results folder of `npueval run`"),
    "report: an OTHER that does not exist": (
        a_results_folder, ["report", "{tmp}/done", "{tmp}/nowhere"], "OTHER {tmp}/nowhere: no such folder",
        "give a results folder of `npueval run`"),
    "report: an OUT that is a file": (
        a_file, ["report", "{tmp}/a-file"], "OUT {tmp}/a-file: a file, not a folder",
        "give a results folder of `npueval run`"),
    "report: a --plot of an unknown format": (
        a_results_folder, ["report", "{tmp}/done", "--plot", "{tmp}/run.jpeg2000"],
        "--plot {tmp}/run.jpeg2000: the suffix says the format", "end the name in .png, .svg, .pdf"),
}


def data_sha(fx) -> str:
    from npueval.core.files import file_sha256

    return file_sha256(fx["data"] / "manifest.json")


def files_under(*roots: Path) -> dict[Path, tuple[int, int] | None]:
    """Every file (its size and mtime) and folder under the roots."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
            for root in roots for p in root.rglob("*")}


@pytest.mark.parametrize("make, argv, culprit, fix", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_line_exit_2_and_nothing_written(fixtures, tmp_path, capsys, make, argv, culprit, fix):
    make(tmp_path, fixtures)
    fill = {"tmp": tmp_path, **fixtures, "zeros": "0" * 64, "data_sha": data_sha(fixtures)}
    before = files_under(tmp_path, fixtures["root"])
    try:
        code = main([a.format(**fill) for a in argv])
    except SystemExit as exc:  # argparse's flag errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.match(rf"npueval( {argv[0]})?: error: ", lines[0]), lines[0]  # argparse's own: "npueval: error: "
    assert culprit.format(**fill) in lines[0] and fix in lines[0], lines[0]
    assert files_under(tmp_path, fixtures["root"]) == before, "something was written before the refusal"


# -- an --out that cannot be written: a read-only file system, a full disk --------------------------

@pytest.fixture
def read_only(tmp_path):
    """A read-only file system (a tmpfs mounted ro), where this process may mount one."""
    import subprocess

    folder = tmp_path / "ro"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here (not root, or no CAP_SYS_ADMIN); "
                    "'run: an --out inside a file' covers the same path")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


WRITE_ARGV = {
    "run": ["run", "--data", "{data}", "--out", "{out}", "--backend", "simulated"],
    "prepare": ["prepare", "{wiki}", "--vocab", "{vocab}", "--out", "{out}", "--workers", "0"],
    "build": ["build", "{ckpt}", "--out", "{out}", "--seq-len", "32"],
}


def one_error_line(capsys, argv: list[str], fill: dict) -> str:
    assert main([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize("command, says", [
    ("run", "cannot write there (Read-only file system); choose another --out"),
    ("prepare", "cannot write there (Read-only file system); choose another --out"),
    ("build", "cannot write there (Read-only file system); choose another --out"),
])
def test_an_out_on_a_read_only_file_system_is_one_line_before_any_work(fixtures, read_only, capsys, command, says):
    """It used to be a traceback from the run folder's mkdir, after Ray and the model had started."""
    out = read_only / "out"
    line = one_error_line(capsys, WRITE_ARGV[command], {**fixtures, "out": out})
    assert line == f"npueval {command}: error: --out {out}: {says}"


@pytest.mark.parametrize("command, says", [
    ("prepare", "cannot write the data set (File too large); free some space, or choose another --out"),
    ("build", "cannot write the build (File too large); free some space (a build holds up to four copies of the "
              "model's float32 weights, two of one over 1.9 GB), or choose another --out"),
])
def test_a_full_disk_is_one_line_and_leaves_nothing_behind(fixtures, tmp_path, capsys, command, says):
    """RLIMIT_FSIZE: every write past 1 KiB fails with EFBIG, as on a full disk (CPython ignores
    SIGXFSZ). They used to end in pyarrow's or the exporter's traceback, and build left an empty
    --out."""
    import resource

    out = tmp_path / "out"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 10, hard))
    try:
        line = one_error_line(capsys, WRITE_ARGV[command], {**fixtures, "out": out})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert line == f"npueval {command}: error: --out {out}: {says}"
    assert list(tmp_path.iterdir()) == []  # no --out, no partial folder, no lock file


@pytest.mark.parametrize("command", ["run", "build"])
def test_an_out_another_npueval_writes_is_refused_before_any_work(fixtures, tmp_path, capsys, command):
    """Two runs into one --out both started (no block was saved yet), and the results summed the
    blocks of both; two builds wrote their stages over each other. (prepare: test_prepare_out.py.)"""
    from locks import held_elsewhere

    from npueval.core.files import lock_of

    out = tmp_path / "out"
    with held_elsewhere(lock_of(out)) as holder:
        line = one_error_line(capsys, WRITE_ARGV[command], {**fixtures, "out": out})
    assert line == (f"npueval {command}: error: --out {out}: another npueval (pid {holder.pid}) is writing it; wait "
                    "for it to finish, or choose another --out")
    assert not out.exists()


# -- RELIABILITY.md's table of these cases ---------------------------------------------------------

RELIABILITY = REPO / "RELIABILITY.md"
TABLE_START = "<!-- cases of tests/unit/eval/test_cli_bad_input.py: start -->"
TABLE_END = "<!-- cases of tests/unit/eval/test_cli_bad_input.py: end -->"
#: How the table shows the test's folders.
SHOWN = {"tmp": "TMP", "vocab": "VOCAB", "wiki": "CORPUS", "data": "DATA", "ckpt": "CKPT", "zeros": "000…",
         "data_sha": "SHA"}


def cases_table() -> str:
    """One row per case: the command, the input, and the culprit and fix the one line names."""
    rows = ["| command | bad input | the line names | and says |", "|---|---|---|---|"]
    for name, (_, _argv, culprit, fix) in CASES.items():
        command, what = name.split(": ", 1)
        cell = lambda text: "`" + text.format(**SHOWN).replace("`", "'").replace("|", "\\|") + "`"  # noqa: E731
        rows.append(f"| {command} | {what} | {cell(culprit)} | {cell(fix)} |")
    return "\n".join(rows)


def test_reliability_md_lists_every_case():
    """The table in RELIABILITY.md is these cases; NPUEVAL_WRITE_DOCS=1 writes it again."""
    import os

    text = RELIABILITY.read_text(encoding="utf-8")
    head, rest = text.split(TABLE_START + "\n")
    _, tail = rest.split(TABLE_END)
    if os.environ.get("NPUEVAL_WRITE_DOCS") == "1":
        RELIABILITY.write_text(f"{head}{TABLE_START}\n{cases_table()}\n{TABLE_END}{tail}", encoding="utf-8")
    assert rest.split(TABLE_END)[0].strip() == cases_table() or os.environ.get("NPUEVAL_WRITE_DOCS") == "1", (
        "RELIABILITY.md's bad-input table differs from CASES: run "
        "NPUEVAL_WRITE_DOCS=1 python -m pytest tests/unit/eval/test_cli_bad_input.py -k reliability")
