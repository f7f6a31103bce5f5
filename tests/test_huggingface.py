"""Hugging Face transformers interop, checked with transformers itself: HF directories (written by
transformers' save_pretrained) as model.upstream_path, LASER runs from them, and exports back to HF (and to
unilm for WavLM).

A module-scoped setup writes tiny HF directories and runs two 2-update LASER trainings from them side by side.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from checkpoint_shapes import REPO, max_difference_to_transformers, padded_batch, start_laser_run, wait_laser_runs
from laser_fairseq.checkpoint_io import CheckpointError, load_checkpoint
from laser_fairseq.export import ExportError, ExportVerificationError, export_checkpoint, verify_export
from laser_fairseq.models.trained_upstream import open_upstream
from laser_fairseq.models.upstream import build_upstream, read_upstream_source
from laser_fairseq.tiny_upstream import save_tiny_hf_directory

ATOL = 1e-5
LAYERS = 4
TOP_BLOCKS = (2, 3)
DIRECTORIES = {  # name -> (kind, Large-like)
    "hubert": ("hubert", False),
    "hubert_large": ("hubert", True),
    "wavlm": ("wavlm", False),
    "wavlm_large": ("wavlm", True),
}
TRAINED = ("hubert", "wavlm_large")


def model_class(kind):
    return transformers.HubertModel if kind == "hubert" else transformers.WavLMModel


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    paths = {"root": root}
    for seed, (name, (kind, large)) in enumerate(DIRECTORIES.items()):
        paths[name] = str(root / name)
        save_tiny_hf_directory(paths[name], kind, layers=LAYERS, layer_norm_first=large, seed=seed)
    paths["hubert_legacy_names"] = legacy_names_copy(paths["hubert"], str(root / "hubert_legacy_names"))
    run_dirs = [str(root / f"laser_{name}") for name in TRAINED]
    runs = [start_laser_run(paths[name], run_dir) for name, run_dir in zip(TRAINED, run_dirs)]
    for name, checkpoint in zip(TRAINED, wait_laser_runs(runs, run_dirs)):
        paths[f"{name}_laser"] = checkpoint
    return paths


def legacy_names_copy(directory: str, output: str) -> str:
    """The same model as the Hub's older uploads hold it: pytorch_model.bin with weight_g / weight_v names,
    no preprocessor_config.json."""
    os.makedirs(output)
    shutil.copy(os.path.join(directory, "config.json"), output)
    weights = load_file(os.path.join(directory, "model.safetensors"))
    renames = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    legacy = {}
    for key, value in weights.items():
        for new, old in renames.items():
            key = key.replace(new, old)
        legacy[key] = value
    assert "encoder.pos_conv_embed.conv.weight_g" in legacy
    torch.save(legacy, os.path.join(output, "pytorch_model.bin"))
    return output


def do_normalize(directory: str) -> bool:
    with open(os.path.join(directory, "preprocessor_config.json")) as handle:
        return json.load(handle)["do_normalize"]


def hf_weights(directory: str, kind: str):
    """The weights transformers loads from ``directory``, and its config."""
    model, info = model_class(kind).from_pretrained(directory, output_loading_info=True)
    assert not any(info[name] for name in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    return model.state_dict(), model


# --------------------------------------------------------------------------------------------------
# HF directories as model.upstream_path
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DIRECTORIES) + ["hubert_legacy_names"])
def test_an_hf_directory_loads_with_transformers_hidden_states(hf, name):
    kind, large = DIRECTORIES.get(name, ("hubert", False))
    source = read_upstream_source(hf[name])
    assert (source.kind, source.fmt) == (kind, "hf")
    upstream = build_upstream(hf[name])
    assert upstream.normalize == large  # preprocessor_config.json, or the CNN-norm rule without one
    model = model_class(kind).from_pretrained(hf[name])
    difference = max_difference_to_transformers(model, upstream, normalize=large)
    print(f"{name}: LASER upstream vs transformers, max |diff| over {LAYERS + 1} hidden states = {difference:.3g}")
    assert difference <= ATOL


def test_a_large_like_padded_batch_equals_transformers_with_an_attention_mask(hf):
    """Layer-norm CNNs: transformers' batched forward with attention_mask gives each utterance's frames."""
    upstream = build_upstream(hf["wavlm_large"]).eval()
    model = transformers.WavLMModel.from_pretrained(hf["wavlm_large"]).eval()
    source, mask = padded_batch()
    lengths = (~mask).sum(dim=1)
    normalized = torch.zeros_like(source)
    for row, length in enumerate(lengths.tolist()):
        normalized[row, :length] = torch.nn.functional.layer_norm(source[row, :length], (length,))
    with torch.no_grad():
        ours = upstream.hidden_states(source, mask)
        output = model(normalized, attention_mask=(~mask).long(), output_hidden_states=True)
    theirs = list(output.hidden_states[:-1]) + [output.last_hidden_state]
    frames = model._get_feat_extract_output_lengths(lengths).tolist()
    difference = max(
        (a[row, :n] - b[row, :n]).abs().max().item() for a, b in zip(ours, theirs) for row, n in enumerate(frames)
    )
    assert difference <= ATOL


# --------------------------------------------------------------------------------------------------
# LASER from HF, back to HF
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TRAINED)
def test_laser_from_an_hf_directory_exports_back_to_one(hf, tmp_path, name):
    kind, large = DIRECTORIES[name]
    laser = hf[f"{name}_laser"]
    output = str(tmp_path / "exported")
    script = os.path.join(REPO, "scripts", "export_checkpoint.py")
    result = subprocess.run([sys.executable, script, "--checkpoint", laser, "--output", output],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"({kind}, hf format), verified" in result.stdout and "no missing/unexpected keys" in result.stdout
    assert sorted(os.listdir(output)) == ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]

    exported, model = hf_weights(output, kind)
    source, _ = hf_weights(hf[name], kind)
    trained = from_hf_trained(laser, kind, model.config)
    assert set(exported) == set(source)
    for key, value in exported.items():
        in_top = any(f"encoder.layers.{index}." in key for index in TOP_BLOCKS)
        assert torch.equal(value, trained[key] if in_top else source[key]), key
    assert any(not torch.equal(exported[key], source[key]) for key in exported if "encoder.layers.3." in key)
    assert do_normalize(output) == do_normalize(hf[name]) == large

    difference = max_difference_to_transformers(model, open_upstream(laser).upstream, normalize=large)
    print(f"{name}: exported HF directory vs the LASER run's upstream, max |diff| = {difference:.3g}")
    assert difference <= ATOL


def from_hf_trained(laser: str, kind: str, config) -> dict:
    """The LASER checkpoint's upstream weights under transformers' names."""
    from laser_fairseq.models.hf_checkpoint import to_hf_names

    prefix = "upstream.model." if kind == "hubert" else "upstream."
    state = load_checkpoint(laser)["model"]
    weights = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    return to_hf_names(weights, cnn_layer_norm=config.feat_extract_norm == "layer")


def test_wavlm_from_hf_also_exports_to_unilm_for_s3prl(hf, tmp_path):
    from s3prl.upstream.wavlm.hubconf import wavlm_local

    laser = hf["wavlm_large_laser"]
    output = tmp_path / "wavlm.pt"
    export_checkpoint(laser, str(output), fmt="unilm")
    exported = load_checkpoint(str(output))
    assert exported["cfg"]["normalize"] and exported["cfg"]["layer_norm_first"]
    expert = wavlm_local(ckpt=str(output)).eval()
    source, _ = padded_batch()
    with torch.no_grad():
        theirs = expert([source[0]])["hidden_states"]
        ours = open_upstream(laser).upstream.hidden_states(source[:1])
    assert len(theirs) == len(ours) and max((a - b).abs().max().item() for a, b in zip(ours, theirs)) <= ATOL


def test_hubert_from_hf_is_not_exported_to_fairseq(hf, tmp_path):
    with pytest.raises(ExportError, match="has no pretraining head .* choose one of \\['hf'\\]"):
        export_checkpoint(hf["hubert_laser"], str(tmp_path / "out.pt"), fmt="fairseq")
    assert os.listdir(tmp_path) == []


def test_an_hf_export_never_overwrites_without_force_nor_an_input(hf, tmp_path):
    laser = hf["hubert_laser"]
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("keep me")
    with pytest.raises(ExportError, match="exists; pass --force"):
        export_checkpoint(laser, str(output))
    assert os.listdir(output) == ["keep.txt"]
    with pytest.raises(ExportError, match="this is an input of the export"):
        export_checkpoint(laser, hf["hubert"], force=True)
    export_checkpoint(laser, str(output), force=True)
    assert sorted(os.listdir(output)) == ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no temporary or set-aside directory left


def test_verification_catches_a_changed_tensor_and_a_wrong_normalisation(hf, tmp_path):
    laser = hf["wavlm_large_laser"]
    output = tmp_path / "out"
    export_checkpoint(laser, str(output))
    verify_export(str(output), laser)  # the real one passes

    weights_file = output / "model.safetensors"
    weights = load_file(str(weights_file))
    frozen = "encoder.layers.0.feed_forward.intermediate_dense.weight"
    original = weights[frozen].clone()
    weights[frozen][0, 0] += 1e-6
    save_file(weights, str(weights_file), metadata={"format": "pt"})
    with pytest.raises(ExportVerificationError, match="1 tensors differ"):
        verify_export(str(output), laser)

    weights[frozen] = original
    save_file(weights, str(weights_file), metadata={"format": "pt"})
    preprocessor = output / "preprocessor_config.json"
    preprocessor.write_text(preprocessor.read_text().replace('"do_normalize": true', '"do_normalize": false'))
    with pytest.raises(ExportVerificationError, match="hidden states differ"):
        verify_export(str(output), laser)


# --------------------------------------------------------------------------------------------------
# refused
# --------------------------------------------------------------------------------------------------


def save_pretrained(model, directory) -> str:
    model.save_pretrained(str(directory))
    return str(directory)


def small(config_class, **overrides):
    return config_class(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        conv_dim=[16] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, **overrides)


def test_fine_tuned_and_foreign_hf_directories_are_named(tmp_path):
    ctc = save_pretrained(transformers.HubertForCTC(small(transformers.HubertConfig)), tmp_path / "ctc")
    with pytest.raises(CheckpointError, match=rf"{ctc}: a Hugging Face HubertForCTC directory, a model fine-tuned"):
        build_upstream(ctc)
    wav2vec2 = save_pretrained(transformers.Wav2Vec2Model(small(transformers.Wav2Vec2Config)), tmp_path / "w2v")
    with pytest.raises(CheckpointError, match=rf"{wav2vec2}: a Hugging Face 'wav2vec2' model"):
        build_upstream(wav2vec2)
    distil = save_pretrained(transformers.HubertModel(small(transformers.HubertConfig, feat_proj_layer_norm=False)),
                             tmp_path / "distil")
    with pytest.raises(CheckpointError, match=r"no fairseq/unilm equivalent: feat_proj_layer_norm=False"):
        build_upstream(distil)
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    shutil.copy(os.path.join(distil, "config.json"), incomplete)
    with pytest.raises(CheckpointError, match=rf"{incomplete}: transformers could not load it"):
        build_upstream(str(incomplete))
