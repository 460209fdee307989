import pytest
from vocabs import small_vocab_tokens, write_vocab

from npueval.core.errors import VocabError
from npueval.core.vocab import load_vocab


def test_ids_follow_lines_and_specials_sit_at_gpt2_chinese_ids(vocab_path):
    vocab = load_vocab(vocab_path)
    assert (vocab.token_to_id["[PAD]"], vocab.unk_id, vocab.cls_id, vocab.sep_id, vocab.mask_id) == (0, 100, 101, 102,
                                                                                                     103)
    assert vocab.size == len(small_vocab_tokens())
    assert len(vocab.sha256) == 64


def test_missing_file_names_the_flag(tmp_path):
    with pytest.raises(VocabError, match=r"--vocab .*nope.txt: no such file"):
        load_vocab(tmp_path / "nope.txt")


def test_vocab_without_mask_is_refused(tmp_path):
    tokens = [t for t in small_vocab_tokens() if t != "[MASK]"]
    with pytest.raises(VocabError, match=r"lacks \[MASK\]"):
        load_vocab(write_vocab(tmp_path / "vocab.txt", tokens))


def test_vocab_that_is_not_text_is_refused(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(b"[UNK]\n\xff\xfe\x00garbage\n")
    with pytest.raises(VocabError, match="not UTF-8"):
        load_vocab(path)


def test_crlf_lines_read_like_the_classic(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes("".join(t + "\r\n" for t in small_vocab_tokens()).encode())
    assert load_vocab(path).mask_id == 103
