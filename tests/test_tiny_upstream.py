"""laser_fairseq/tiny_upstream.py: tiny checkpoints and Hugging Face directories are written atomically, never
over an existing one without ``force``, and a failed write leaves what was there."""

import os

import pytest
import torch
import transformers

from laser_fairseq.checkpoint_io import load_checkpoint
from laser_fairseq.models.wavlm import WavLMEncoder
from laser_fairseq.tiny_upstream import make_tiny_wavlm, save_checkpoint, save_tiny_hf_directory


def test_a_checkpoint_is_refused_over_an_existing_file_unless_forced(tmp_path):
    path = str(tmp_path / "sub" / "tiny.pt")
    save_checkpoint({"model": {"w": torch.ones(2)}}, path)
    with pytest.raises(FileExistsError, match="pass --force"):
        save_checkpoint({"model": {"w": torch.zeros(2)}}, path)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    save_checkpoint({"model": {"w": torch.zeros(2)}}, path, force=True)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.zeros(2))
    assert os.listdir(tmp_path / "sub") == ["tiny.pt"]


def test_the_tiny_wavlm_loads_into_the_encoder(tmp_path):
    state = make_tiny_wavlm(layers=2, layer_norm_first=True)
    encoder = WavLMEncoder.from_unilm(state["cfg"], state["model"])
    assert encoder.num_layers == 2 and state["cfg"]["extractor_mode"] == "layer_norm"


def test_a_hugging_face_directory_is_replaced_only_when_forced_and_whole(tmp_path, monkeypatch):
    path = str(tmp_path / "hf")
    save_tiny_hf_directory(path, "hubert", layers=1, dim=32)
    first = (tmp_path / "hf" / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="pass --force"):
        save_tiny_hf_directory(path, "hubert", layers=1, dim=32, seed=1)

    def failing(self, directory, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(transformers.Wav2Vec2FeatureExtractor, "save_pretrained", failing)
    with pytest.raises(OSError, match="disk full"):
        save_tiny_hf_directory(path, "hubert", layers=1, dim=32, seed=1, force=True)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["hf"]  # no temporary directory left
    assert (tmp_path / "hf" / "model.safetensors").read_bytes() == first
    save_tiny_hf_directory(path, "wavlm", layers=1, dim=32, seed=1, force=True)
    assert sorted(os.listdir(tmp_path)) == ["hf"]
    assert transformers.AutoConfig.from_pretrained(path).model_type == "wavlm"
