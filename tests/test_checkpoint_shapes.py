"""Every shape of upstream checkpoint a user may pass as model.upstream_path: loaded with exactly the hidden
states of the unmodified tiny upstream, or refused with a message that names the shape.

A module-scoped setup runs two 2-update LASER trainings side by side (from a HuBERT checkpoint without label
dictionaries, and from an s3prl-converted one) and the tests share them.
"""

import logging
import os

import pytest
import torch

from checkpoint_shapes import (
    CLUSTER_LABEL_DIR,
    padded_batch,
    save_hubert_ctc,
    save_s3prl_converted,
    start_laser_run,
    wait_laser_runs,
    with_legacy_args,
    without_dictionaries,
)
from laser_fairseq.checkpoint_io import SAFE_GLOBALS, CheckpointError, load_checkpoint
from laser_fairseq.export import ExportError, export_checkpoint
from laser_fairseq.models.trained_upstream import open_upstream
from laser_fairseq.models.upstream import build_upstream, read_upstream_source
from laser_fairseq.tiny_upstream import make_tiny_hubert, make_tiny_wavlm, save_checkpoint

LAYERS = 4


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    original = make_tiny_hubert(layers=LAYERS, dim=64)
    paths = {"root": root}
    for name, state in {
        "original": original,
        "no_task_state": without_dictionaries(original),
        "empty_task_state": without_dictionaries(original, task_state={}),
        "legacy_args": with_legacy_args(original),
        "wavlm_large": make_tiny_wavlm(layers=LAYERS, dim=64, layer_norm_first=True),
    }.items():
        paths[name] = str(root / f"{name}.pt")
        save_checkpoint(state, paths[name])
    paths["s3prl"] = str(root / "s3prl_converted.pt")
    save_s3prl_converted(paths["original"], paths["s3prl"])
    runs = {name: str(root / f"laser_{name}") for name in ("no_task_state", "s3prl")}
    processes = [start_laser_run(paths[name], run_dir) for name, run_dir in runs.items()]
    for name, checkpoint in zip(runs, wait_laser_runs(processes, list(runs.values()))):
        paths[f"{name}_laser"] = checkpoint
    return paths


def hidden_states(upstream):
    source, mask = padded_batch()
    with torch.no_grad():
        return upstream.eval().hidden_states(source, mask)


def assert_same_hidden_states(upstream, reference_path):
    ours, reference = hidden_states(upstream), hidden_states(build_upstream(reference_path))
    assert len(ours) == LAYERS + 1
    assert all(torch.equal(a, b) for a, b in zip(ours, reference))


# --------------------------------------------------------------------------------------------------
# loaded
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["no_task_state", "empty_task_state"])
def test_fairseq_itself_trips_on_a_checkpoint_without_dictionaries(shapes, name):
    from fairseq import checkpoint_utils

    with torch.serialization.safe_globals(SAFE_GLOBALS), pytest.raises(FileNotFoundError, match=CLUSTER_LABEL_DIR):
        checkpoint_utils.load_model_ensemble_and_task([shapes[name]])


@pytest.mark.parametrize("name", ["no_task_state", "empty_task_state"])
def test_a_checkpoint_without_dictionaries_loads_with_the_original_hidden_states(shapes, name, caplog):
    with caplog.at_level(logging.INFO, logger="laser_fairseq"):
        upstream = build_upstream(shapes[name])
    assert "no label dictionaries in task_state" in caplog.text and "label_embs_concat: 54 labels" in caplog.text
    assert_same_hidden_states(upstream, shapes["original"])
    original = load_checkpoint(shapes["original"])["model"]
    loaded = upstream.original_state_dict()
    assert set(loaded) == set(original) and all(torch.equal(loaded[key], original[key]) for key in original)


@pytest.mark.parametrize("name", ["legacy_args", "s3prl"])
def test_other_hubert_shapes_load_with_the_original_hidden_states(shapes, name):
    assert read_upstream_source(shapes[name]).fmt == ("s3prl" if name == "s3prl" else "fairseq")
    assert_same_hidden_states(build_upstream(shapes[name]), shapes["original"])


def test_wavlm_large_matches_unilms_own_code(shapes):
    """Pre-LN blocks, layer-norm CNN with bias, normalize=True: against unilm's WavLM as s3prl ships it."""
    from s3prl.upstream.wavlm.hubconf import wavlm_local

    cfg = load_checkpoint(shapes["wavlm_large"])["cfg"]
    assert cfg["layer_norm_first"] and cfg["normalize"] and cfg["extractor_mode"] == "layer_norm"
    expert = wavlm_local(ckpt=shapes["wavlm_large"]).eval()
    ours = hidden_states(build_upstream(shapes["wavlm_large"]))
    source, mask = padded_batch()
    for row, length in enumerate((~mask).sum(dim=1).tolist()):
        with torch.no_grad():
            theirs = expert([source[row, :length]])["hidden_states"]
        frames = theirs[0].shape[1]
        difference = max((a[row, :frames] - b[0]).abs().max().item() for a, b in zip(ours, theirs))
        assert len(theirs) == len(ours) and difference <= 1e-5


# --------------------------------------------------------------------------------------------------
# trained and exported
# --------------------------------------------------------------------------------------------------


def test_laser_trains_from_a_checkpoint_without_dictionaries_and_exports_it_as_it_was(shapes, tmp_path):
    laser = shapes["no_task_state_laser"]
    output = tmp_path / "exported.pt"
    report = export_checkpoint(laser, str(output))
    assert report.fmt == "fairseq" and report.num_updates == 2 and report.changed_tensors > 0
    exported, source = load_checkpoint(str(output)), load_checkpoint(shapes["no_task_state"])
    assert "task_state" not in exported and exported["cfg"]["task"]["label_dir"] == CLUSTER_LABEL_DIR
    assert set(exported["model"]) == set(source["model"])
    reopened = build_upstream(str(output))  # our loader, like the source; fairseq's own trips on both alike
    trained = open_upstream(laser).upstream
    assert all(torch.equal(a, b) for a, b in zip(hidden_states(reopened), hidden_states(trained)))

    hf_report = export_checkpoint(laser, str(tmp_path / "hf"), fmt="hf")  # verified by transformers inside
    assert "label_embs_concat" in " ".join(hf_report.notes)


def test_an_s3prl_converted_source_exports_back_to_s3prl(shapes, tmp_path):
    from s3prl.upstream.hubert.hubconf import hubert_local

    output = tmp_path / "exported_s3prl.pt"
    report = export_checkpoint(shapes["s3prl_laser"], str(output))
    assert report.fmt == "s3prl"
    exported, source = load_checkpoint(str(output)), load_checkpoint(shapes["s3prl"])
    assert set(exported) == set(source) and exported["dictionaries_symbols"] == source["dictionaries_symbols"]
    expert = hubert_local(ckpt=str(output)).eval()
    trained = open_upstream(shapes["s3prl_laser"]).upstream
    source_audio, mask = padded_batch()
    ours = hidden_states(trained)
    with torch.no_grad():
        theirs = expert([source_audio[0]])["hidden_states"]
    assert max((a[0] - b[0]).abs().max().item() for a, b in zip(ours, theirs)) <= 1e-5
    with pytest.raises(ExportError, match="s3prl's format keeps only the symbols"):
        export_checkpoint(shapes["s3prl_laser"], str(tmp_path / "x.pt"), fmt="fairseq")


# --------------------------------------------------------------------------------------------------
# refused
# --------------------------------------------------------------------------------------------------


def test_several_label_sets_without_dictionaries_are_refused(shapes, tmp_path):
    state = load_checkpoint(shapes["no_task_state"])
    state["cfg"]["task"]["labels"] = ["km", "phn"]
    path = tmp_path / "two_labels.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"2 label sets \['km', 'phn'\] sharing 54 rows of label_embs_concat"):
        build_upstream(str(path))


@pytest.mark.parametrize("name", ["hubert_ctc", "hubert_ctc_fixed"])
def test_a_fine_tuned_hubert_ctc_checkpoint_is_named_with_its_pretrained_upstream(shapes, tmp_path, name):
    path = tmp_path / f"{name}.pt"
    save_hubert_ctc(shapes["original"], str(path), name=name)
    assert any(key.startswith("w2v_encoder.w2v_model.encoder.layers.") for key in load_checkpoint(str(path))["model"])
    expected = rf"{path}: this is a fine-tuned HuBERT CTC checkpoint: .* pass the pretrained upstream it was " \
               rf"fine-tuned from \(its w2v_path: {shapes['original']}\)"
    with pytest.raises(CheckpointError, match=expected):
        build_upstream(str(path))


def test_a_laser_training_checkpoint_points_to_the_export_script(shapes):
    laser = shapes["s3prl_laser"]
    with pytest.raises(CheckpointError, match=rf"{laser}: this is a LASER training checkpoint \(export it first with "
                                             r"scripts/export_checkpoint.py"):
        build_upstream(laser)


def test_a_directory_that_is_not_a_model_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match=rf"{tmp_path}: a directory without config.json, so not a Hugging Face"):
        build_upstream(str(tmp_path))
    assert not os.listdir(tmp_path)
