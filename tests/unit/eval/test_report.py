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


def test_one_window_is_said_in_the_singular(tmp_path):
    from npueval.eval.report import headline

    a = load_run(results_folder(tmp_path / "a", [0], [10.0], [10]))
    b = load_run(results_folder(tmp_path / "b", [0, 1], [10.0, 20.0], [10, 10]))
    assert "per-window loss (nats/token) over 1 window: min 1.000" in describe(a)
    text = compare(a, b)
    assert "over the 1 window both scored alike: mean cross-entropy" in text
    assert "A has 1 window, B 2: the headline numbers above cover different windows" in text
    assert " · 1 window · " in headline(a.results) and " · 2 windows · " in headline(b.results)


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


# -- the plot's text in fonts that have its characters ---------------------------------------------

LABEL = "维基数据 run \U00020000"  # a results folder named in Chinese (`npueval run --data 维基数据 …`)


def write_font(path, chars: str, family: str):
    """A TrueType font of `family` with a glyph (a square) for each of `chars` and nothing else."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    def square():
        pen = TTGlyphPen(None)
        pen.moveTo((100, 0))
        pen.lineTo((100, 800))
        pen.lineTo((900, 800))
        pen.lineTo((900, 0))
        pen.closePath()
        return pen.glyph()

    names = {ord(c): f"uni{ord(c):04X}" for c in chars}
    glyphs = [".notdef", *names.values()]
    font = FontBuilder(1000, isTTF=True)
    font.setupGlyphOrder(glyphs)
    font.setupCharacterMap(names)
    font.setupGlyf({name: square() for name in glyphs})
    font.setupHorizontalMetrics(dict.fromkeys(glyphs, (1000, 100)))
    font.setupHorizontalHeader(ascent=880, descent=-120)
    font.setupNameTable({"familyName": family, "styleName": "Regular"})
    font.setupOS2()
    font.setupPost()
    font.save(str(path))
    return path


@pytest.fixture
def fonts(monkeypatch):
    """matplotlib's own fonts only (DejaVu, STIX, Computer Modern: none has Chinese), whatever this
    machine has installed; a test adds the fonts it wants with fonts.addfont(PATH)."""
    matplotlib = pytest.importorskip("matplotlib")
    from matplotlib import font_manager

    import npueval.eval.report as report

    def forget():
        font_manager.fontManager._findfont_cached.cache_clear()
        report._fallback_font.cache_clear()

    own = [e for e in font_manager.fontManager.ttflist if e.fname.startswith(matplotlib.get_data_path())]
    monkeypatch.setattr(font_manager.fontManager, "ttflist", own)
    forget()
    yield font_manager.fontManager
    forget()


def drawn_texts(monkeypatch, tmp_path, caplog, suffix=".png") -> list[tuple[str, list[str]]]:
    """Plot two runs, A labelled in Chinese; every text the renderer drew, with its font families.
    No warning (warnings or logging) may come of it."""
    import logging
    import warnings

    from matplotlib.backends.backend_agg import RendererAgg

    from npueval.eval.report import plot

    drawn = []
    draw_text = RendererAgg.draw_text

    def recording(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):
        drawn.append((s, list(prop.get_family())))
        return draw_text(self, gc, x, y, s, prop, angle, ismath, mtext)

    monkeypatch.setattr(RendererAgg, "draw_text", recording)
    a = load_run(results_folder(tmp_path / LABEL, [0, 1], [1.0, 2.0], [1, 1]))
    b = load_run(results_folder(tmp_path / "b", [0, 1], [1.5, 2.5], [1, 1]))
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot([a, b], tmp_path / f"p{suffix}")
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    return drawn


def covered(text: str, families: list[str]) -> bool:
    """Whether each character of `text` has a glyph in one of the fonts `families` names."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    have = set()
    for family in families:
        have |= set(FT2Font(font_manager.findfont(font_manager.FontProperties(family=[family]))).get_charmap())
    return all(ord(c) in have for c in text)


def test_a_run_labelled_in_chinese_is_drawn_in_a_font_that_has_chinese(fonts, monkeypatch, tmp_path, caplog):
    fonts.addfont(str(write_font(tmp_path / "cjk.ttf", "维基数据", "Npueval Test CJK")))
    drawn = drawn_texts(monkeypatch, tmp_path, caplog)
    assert all(covered(s, families) for s, families in drawn), drawn
    chinese = [(s, families) for s, families in drawn if "维基数据" in s]
    assert chinese and all(families[-1] == "Npueval Test CJK" for _, families in chinese)
    # the title and the legend; the one character that font lacks too is its escape
    assert any(s.startswith(r"A 维基数据 run \U00020000: mean CE") for s, _ in chinese)
    assert any(s == r"A 维基数据 run \U00020000" for s, _ in chinese)


def test_without_such_a_font_the_characters_are_written_as_escapes(fonts, monkeypatch, tmp_path, caplog):
    drawn = drawn_texts(monkeypatch, tmp_path, caplog)
    assert all(covered(s, families) for s, families in drawn), drawn
    assert not any("维" in s for s, _ in drawn)
    assert any(s.startswith(r"A \u7ef4\u57fa\u6570\u636e run \U00020000: mean CE") for s, _ in drawn)


def test_the_fonts_are_read_once(fonts, monkeypatch, tmp_path, caplog):
    """A second plot of the same labels reads no font file again."""
    import npueval.eval.report as report

    drawn_texts(monkeypatch, tmp_path / "1", caplog)
    read = report._glyphs.cache_info().misses
    drawn_texts(monkeypatch, tmp_path / "2", caplog)
    assert report._glyphs.cache_info().misses == read
