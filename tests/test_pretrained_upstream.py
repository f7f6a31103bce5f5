"""The tiny HuBERTs pretrained here and committed in examples/hubert_pretraining/: each is the file its README
documents (name and sha256), in fairseq's format, and fairseq, s3prl and LASER compute equal hidden states
with it; the demo's default upstream is the newest one."""

import hashlib
import os
import shutil

import pytest
import torch

from laser_fairseq.checkpoint_io import SAFE_GLOBALS, load_checkpoint
from laser_fairseq.checkout import REPO
from laser_fairseq.data.audio import read_audio
from laser_fairseq.demo import PRETRAINED_UPSTREAM
from laser_fairseq.models.upstream import build_upstream

FOLDER = os.path.join(REPO, "examples", "hubert_pretraining")
# name -> (sha256 named in the README, channels of the CNN's layers)
COMMITTED = {
    "tiny_progressive_hubert.pt": ("6b7eee1dd6b777227e0e3f7637d0eaa3f7de9f92613120de42be0e92ebe274e8", 64),
    "tiny_standard_hubert.pt": ("4032e686bf9731f8bf25b59bf52499cee75cb071033d057bd4d2dfc21fd25048", 256),
}
AUDIO = os.path.join(REPO, "manifests", "demo", "audio")


def first_demo_waveform() -> torch.Tensor:
    name = sorted(os.listdir(AUDIO))[0]
    return read_audio(os.path.join(AUDIO, name), 16000)


def test_the_demo_runs_on_the_256_channel_model():
    assert os.path.basename(PRETRAINED_UPSTREAM) == "tiny_standard_hubert.pt"


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_the_committed_file_is_the_documented_one(name):
    sha256, _ = COMMITTED[name]
    with open(os.path.join(FOLDER, name), "rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == sha256
    readme = open(os.path.join(FOLDER, "README.md")).read()
    assert f"[`{name}`]({name})" in readme and f"sha256 `{sha256[:8]}" in readme


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_fairseq_format_with_the_pretraining_cfg(name):
    checkpoint = load_checkpoint(os.path.join(FOLDER, name))
    assert checkpoint["args"] is None and checkpoint["cfg"]["model"]["_name"] == "hubert"
    assert checkpoint["cfg"]["task"]["_name"] == "hubert_pretraining"
    model_cfg = checkpoint["cfg"]["model"]
    assert model_cfg["encoder_layers"] == 4 and model_cfg["encoder_embed_dim"] == 128
    conv_weights = [value for key, value in checkpoint["model"].items()
                    if key.startswith("feature_extractor.conv_layers.") and key.endswith(".0.weight")]
    assert len(conv_weights) == 7 and {weight.shape[0] for weight in conv_weights} == {COMMITTED[name][1]}
    assert "optimizer_history" not in checkpoint or not checkpoint.get("last_optimizer_state")


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_fairseq_s3prl_and_laser_compute_the_same_hidden_states(name, tmp_path):
    from fairseq import checkpoint_utils
    from s3prl.upstream.hubert.hubconf import hubert_local

    checkpoint = os.path.join(FOLDER, name)
    # s3prl writes its conversion (<stem>.converted.pt and a .lock) beside the file it is given: give it a copy
    copy = str(tmp_path / name)
    shutil.copyfile(checkpoint, copy)
    waveform = first_demo_waveform()
    with torch.no_grad(), torch.serialization.safe_globals(SAFE_GLOBALS):
        models, _, _ = checkpoint_utils.load_model_ensemble_and_task([checkpoint])
        fairseq_top, _ = models[0].eval().extract_features(waveform[None], padding_mask=None, mask=False)
        s3prl_states = hubert_local(ckpt=copy, fairseq=True).eval()([waveform])["hidden_states"]
    with torch.no_grad():
        ours = build_upstream(checkpoint).eval().hidden_states(waveform[None])
    assert len(ours) == len(s3prl_states) == 5
    assert (ours[-1] - fairseq_top).abs().max().item() <= 1e-5
    assert max((a - b).abs().max().item() for a, b in zip(ours, s3prl_states)) <= 1e-5
    assert not [entry for entry in os.listdir(FOLDER) if ".converted." in entry], "s3prl wrote into the source tree"
