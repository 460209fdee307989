"""Which tokenizer file is a model's, and a broken one named with its fix."""

import hashlib

import pytest
from checkpoints import write_tokenizer_json
from vocabs import small_vocab_tokens, write_vocab

from npueval.core.errors import VocabError
from npueval.core.tokenizer_file import find_tokenizer, read_tokenizer


def test_a_gpt2_folder_keeps_vocab_txt_and_the_others_take_tokenizer_json(tmp_path):
    write_tokenizer_json(tmp_path)
    write_vocab(tmp_path / "vocab.txt", small_vocab_tokens())
    classic = find_tokenizer(tmp_path, prefer_vocab_txt=True)
    hf = find_tokenizer(tmp_path, prefer_vocab_txt=False)
    assert (classic.kind, classic.size) == ("vocab.txt", len(small_vocab_tokens()))
    assert hf.kind == "tokenizer.json" and hf.sha256 == hashlib.sha256((tmp_path / "tokenizer.json").read_bytes()
                                                                       ).hexdigest()
    assert 3 < hf.size <= 300  # the trained merges and <unk>, <s>, </s>
    (tmp_path / "vocab.txt").unlink()
    assert find_tokenizer(tmp_path, prefer_vocab_txt=True).kind == "tokenizer.json"


def test_a_tokenizer_json_the_library_cannot_read(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"model": 1}')
    with pytest.raises(VocabError, match=r"--tokenizer .*tokenizer.json: not a tokenizer.json the tokenizers library "
                                         r"reads .*; restore the model's tokenizer.json"):
        read_tokenizer(tmp_path / "tokenizer.json", "--tokenizer")
    with pytest.raises(VocabError, match=r"no tokenizer.json or vocab.txt"):
        find_tokenizer(tmp_path / "nothing-here", prefer_vocab_txt=False)
