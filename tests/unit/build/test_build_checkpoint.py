"""Checkpoint folders: every layout loads to the same model; bad ones get a clear error."""

import json
import re

import numpy as np
import pytest
from checkpoints import make_checkpoint, tiny_model
from vocabs import small_vocab_tokens

from npueval.build.export import reference_logits
from npueval.core.checkpoint import load_model, open_checkpoint
from npueval.core.errors import CheckpointError, UserError


def logits_of(model, seed=0):
    ids = np.random.default_rng(seed).integers(0, model.config.vocab_size, (2, 16))
    return reference_logits(model, ids)


@pytest.mark.parametrize("weights", ["safetensors", "sharded", "bin", "bare-bin"])
@pytest.mark.parametrize("old_config", [True, False])
def test_every_layout_loads_the_same_model(tmp_path, weights, old_config):
    ckpt = open_checkpoint(make_checkpoint(tmp_path / "ckpt", weights, old_config))
    assert ckpt.config["n_positions"] == 64 and ckpt.config["n_layer"] == 2
    assert ckpt.config["bos_token_id"] == 101 and ckpt.config["eos_token_id"] == 102
    model = load_model(ckpt)
    assert not model.training
    np.testing.assert_array_equal(logits_of(model), logits_of(tiny_model(len(small_vocab_tokens()))))
    assert len(ckpt.weights_sha256) == 64


def test_weights_hash_follows_the_bytes(tmp_path):
    a = open_checkpoint(make_checkpoint(tmp_path / "a", seed=0)).weights_sha256
    b = open_checkpoint(make_checkpoint(tmp_path / "b", seed=1)).weights_sha256
    assert a != b and a == open_checkpoint(tmp_path / "a").weights_sha256


def test_missing_folder_vocab_weights_and_config(tmp_path):
    with pytest.raises(CheckpointError, match="CHECKPOINT .*nowhere: no such folder"):
        open_checkpoint(tmp_path / "nowhere")
    folder = make_checkpoint(tmp_path / "c")
    (folder / "vocab.txt").unlink()
    with pytest.raises(CheckpointError, match="no vocab.txt"):
        open_checkpoint(folder)
    folder = make_checkpoint(tmp_path / "d")
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights; expected model.safetensors"):
        open_checkpoint(folder)
    folder = make_checkpoint(tmp_path / "e")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        open_checkpoint(folder)
    folder = make_checkpoint(tmp_path / "f", "sharded")
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors that are not in"):
        open_checkpoint(folder)


def test_config_that_does_not_fit_its_vocab(tmp_path):
    folder = make_checkpoint(tmp_path / "c")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": 50}))
    with pytest.raises(CheckpointError, match="vocab_size 50 is smaller than vocab.txt's"):
        open_checkpoint(folder)


@pytest.mark.parametrize("change, message", [({"n_layer": 3}, r"lacks transformer\.h\.2"),
                                             ({"n_embd": 64},
                                                 r"do not match: transformer\.\S+ is \([\d, ]+\) in the weights, "
                                                 r"\([\d, ]+\) by the config")])
def test_config_weights_mismatch(tmp_path, change, message):
    folder = make_checkpoint(tmp_path / "c")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(CheckpointError, match=message):
        load_model(open_checkpoint(folder))


class _Payload:
    """Unpickling this would run code: it creates a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_with_code_is_refused_and_never_run(tmp_path):
    import torch

    folder = make_checkpoint(tmp_path / "c", "bin")
    marker = tmp_path / "code-ran"
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    torch.save({**state, "payload": _Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as err:
        load_model(open_checkpoint(folder))
    message = str(err.value)
    why = re.fullmatch(re.escape(f"{folder / 'pytorch_model.bin'}: refused, it needs more than tensors to load (")
                       + r"(.*)" + re.escape("), and a pickle like this can run code: npueval never loads one, and "
                                             "it must not be loaded here. Get the weights as model.safetensors "
                                             "instead: ask the model's publisher for it, or convert the file with "
                                             "a trusted tool in a sandbox you then throw away"), message)
    assert why and "io.open" in why.group(1)  # torch's word for what the pickle needs: the payload's global
    # neither npueval's advice nor torch's (which the message leaves out) is to load it anyway
    assert "weights_only=False" not in message and "can still be loaded" not in message
    assert isinstance(err.value, UserError)
    assert not marker.exists()
