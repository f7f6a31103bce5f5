"""The Hugging Face export (laser_fairseq/export/hf.py) on in-memory LASER checkpoints: a transformers
directory, verified, replaced only with --force. After real training runs: tests/test_huggingface.py.
"""

import os

import pytest
import torch

from export_files import LAYERS, TRAINED, hf_files
from laser_fairseq.checkpoint_io import load_checkpoint
from laser_fairseq.export import ExportError, ExportVerificationError, export_checkpoint, verify_export
from laser_fairseq.export.hf import scaled_difference
from laser_fairseq.tiny_upstream import make_tiny_hubert, save_checkpoint
from test_analysis import laser_checkpoint_with_new_top_blocks


def test_an_hf_export_is_a_transformers_directory_verified_and_refused_over_an_existing_one(hf_files, tmp_path):
    output = tmp_path / "exported"
    report = export_checkpoint(hf_files.laser_path, str(output))
    assert sorted(os.listdir(output)) == ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
    assert any(note.startswith("transformers loads it with no missing/unexpected keys; hidden states of every "
                               "layer within ") for note in report.notes)
    verify_export(str(output), hf_files.laser_path)
    with pytest.raises(ExportError, match="exists; pass --force"):
        export_checkpoint(hf_files.laser_path, str(output))
    export_checkpoint(hf_files.laser_path, str(output), force=True)  # a directory output needs a directory format
    from safetensors.torch import load_file, save_file

    weights = load_file(str(output / "model.safetensors"))
    key = next(k for k in weights if k.startswith("encoder.layers.0.") and k.endswith("weight"))
    weights[key] = weights[key] + 1e-3
    save_file(weights, str(output / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ExportVerificationError, match="1 tensors differ"):
        verify_export(str(output), hf_files.laser_path)


def test_an_hf_export_of_a_source_that_needs_extra_safe_globals_reads_it_with_them(tmp_path):
    """A fairseq HuBERT (with a CNN narrower than its encoder, which transformers can express) and its run both
    hold a class outside the allow-list: the HF writer and its verification re-read the source with it."""
    from fractions import Fraction

    original = str(tmp_path / "original.pt")
    save_checkpoint(make_tiny_hubert(layers=LAYERS, dim=48, conv_channels=32, seed=4), original)
    laser = laser_checkpoint_with_new_top_blocks(original, trained=len(TRAINED))
    laser["cfg"]["model"]["upstream_path"] = original
    state = load_checkpoint(original)
    state["note"] = Fraction(2, 3)
    torch.save(state, original)
    laser["note"] = Fraction(1, 3)
    torch.save(laser, str(tmp_path / "laser.pt"))
    laser = str(tmp_path / "laser.pt")
    output = str(tmp_path / "hf")
    allowed = ["fractions.Fraction"]
    export_checkpoint(laser, output, fmt="hf", upstream=original, extra_safe_globals=allowed)
    verify_export(output, laser, fmt="hf", upstream=original, extra_safe_globals=allowed)
    assert sorted(os.listdir(output)) == ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]


def test_the_hidden_state_measure_is_relative_above_unit_scale_and_fails_on_nan():
    assert scaled_difference(torch.tensor([0.5, 0.2]), torch.tensor([0.5, 0.2 + 3e-5])) == pytest.approx(3e-5, rel=1e-3)
    assert scaled_difference(torch.tensor([20.0, 1.0]), torch.tensor([20.0002, 1.0])) == pytest.approx(1e-5, rel=1e-2)
    assert scaled_difference(torch.tensor([float("nan")]), torch.tensor([float("nan")])) == float("inf")
    assert scaled_difference(torch.tensor([1.0]), torch.tensor([float("inf")])) == float("inf")
