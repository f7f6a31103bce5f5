"""The committed tiny HuBERT pretrained here (examples/hubert_pretraining/tiny_progressive_hubert.pt): the
file the README documents, in fairseq's format, loaded by fairseq, s3prl and LASER with equal hidden states."""

import hashlib
import os
import shutil

import pytest
import torch

from laser_fairseq.checkpoint_io import SAFE_GLOBALS, load_checkpoint
from laser_fairseq.data.audio import read_audio
from laser_fairseq.models.upstream import build_upstream
from laser_fairseq.checkout import REPO

CHECKPOINT = os.path.join(REPO, "examples", "hubert_pretraining", "tiny_progressive_hubert.pt")
SHA256 = "6b7eee1dd6b777227e0e3f7637d0eaa3f7de9f92613120de42be0e92ebe274e8"  # named in its README
AUDIO = os.path.join(REPO, "manifests", "demo", "audio")


def first_demo_waveform() -> torch.Tensor:
    name = sorted(os.listdir(AUDIO))[0]
    return read_audio(os.path.join(AUDIO, name), 16000)


def test_the_committed_file_is_the_documented_one():
    with open(CHECKPOINT, "rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == SHA256
    readme = open(os.path.join(REPO, "examples", "hubert_pretraining", "README.md")).read()
    assert SHA256[:8] in readme


def test_fairseq_format_with_the_pretraining_cfg():
    checkpoint = load_checkpoint(CHECKPOINT)
    assert checkpoint["args"] is None and checkpoint["cfg"]["model"]["_name"] == "hubert"
    assert checkpoint["cfg"]["task"]["_name"] == "hubert_pretraining"
    assert checkpoint["cfg"]["model"]["encoder_layers"] == 4 and checkpoint["cfg"]["model"]["encoder_embed_dim"] == 128
    assert "optimizer_history" not in checkpoint or not checkpoint.get("last_optimizer_state")


def test_fairseq_s3prl_and_laser_compute_the_same_hidden_states(tmp_path):
    from fairseq import checkpoint_utils
    from s3prl.upstream.hubert.hubconf import hubert_local

    # s3prl writes its conversion (<stem>.converted.pt and a .lock) beside the file it is given: give it a copy
    copy = str(tmp_path / os.path.basename(CHECKPOINT))
    shutil.copyfile(CHECKPOINT, copy)
    waveform = first_demo_waveform()
    with torch.no_grad(), torch.serialization.safe_globals(SAFE_GLOBALS):
        models, _, _ = checkpoint_utils.load_model_ensemble_and_task([CHECKPOINT])
        fairseq_top, _ = models[0].eval().extract_features(waveform[None], padding_mask=None, mask=False)
        s3prl_states = hubert_local(ckpt=copy, fairseq=True).eval()([waveform])["hidden_states"]
    with torch.no_grad():
        ours = build_upstream(CHECKPOINT).eval().hidden_states(waveform[None])
    assert len(ours) == len(s3prl_states) == 5
    assert (ours[-1] - fairseq_top).abs().max().item() <= 1e-5
    assert max((a - b).abs().max().item() for a, b in zip(ours, s3prl_states)) <= 1e-5
    folder = os.path.dirname(CHECKPOINT)
    assert not [name for name in os.listdir(folder) if ".converted." in name], "s3prl wrote into the source tree"
