"""The inputs of an export (laser_fairseq/export/run.py): the LASER run's checkpoint, the upstream it
recorded or the one given with --upstream, and the allow-list reaching every read.
"""

from pathlib import Path

import pytest
import torch

from export_files import TRAINED, edited_run, edited_source, files, hubert, wavlm
from laser_fairseq.checkpoint_io import CheckpointError, load_checkpoint
from laser_fairseq.export import (
    ExportError,
    export_checkpoint,
    plan_export,
    read_laser_run,
    resolve_upstream_path,
    verify_export,
)


def test_read_laser_run_takes_the_recorded_upstream_layers_updates_and_weights(files):
    run = read_laser_run(files.laser_path)
    assert run.path == files.laser_path and run.upstream_path == files.original
    assert run.trainable_layers == len(TRAINED) and run.num_updates == 100 and run.weight_precision is None
    assert list(run.model_state) == list(files.laser["model"])
    assert all(torch.equal(run.model_state[key], value) for key, value in files.laser["model"].items())


def test_a_run_reads_its_last_update_count_and_defaults_to_two_blocks(hubert, tmp_path):
    history = [{"num_updates": 5}, {"num_updates": 9}]
    run = read_laser_run(edited_run(hubert, tmp_path / "a.pt", cfg={"trainable_layers": None}, optimizer_history=history))
    assert run.trainable_layers == 2 and run.num_updates == 9
    run = read_laser_run(edited_run(hubert, tmp_path / "b.pt", cfg={"trainable_layers": 3}, drop=["optimizer_history"]))
    assert run.trainable_layers == 3 and run.num_updates is None
    run = read_laser_run(edited_run(hubert, tmp_path / "c.pt", cfg={"upstream_path": None}))
    assert run.upstream_path == "None"


@pytest.mark.parametrize(
    "common, precision",
    [
        ({"fp16": True}, torch.float16),
        ({"memory_efficient_fp16": True}, torch.float16),
        ({"bf16": True}, torch.bfloat16),
        ({"memory_efficient_bf16": True}, torch.bfloat16),
        ({"fp16": False, "bf16": False, "memory_efficient_fp16": False, "memory_efficient_bf16": False}, None),
        ({"fp16": True, "bf16": True}, torch.float16),
        (None, None),
    ],
)
def test_the_run_precision_follows_common_fp16_and_bf16(hubert, tmp_path, common, precision):
    state = dict(hubert.laser, cfg=dict(hubert.laser["cfg"], common=common))
    torch.save(state, tmp_path / "run.pt")
    assert read_laser_run(str(tmp_path / "run.pt")).weight_precision == precision


def test_a_checkpoint_that_is_not_a_laser_run_is_refused_naming_its_model(hubert, wavlm, tmp_path):
    with pytest.raises(ExportError, match=rf"^{hubert.original}: not a LASER training checkpoint \(cfg.model._name is 'hubert', expected 'laser'\)"):
        read_laser_run(hubert.original)
    with pytest.raises(ExportError, match=r"cfg.model._name is None,"):
        read_laser_run(wavlm.original)  # unilm: cfg without a model section
    legacy = str(tmp_path / "legacy.pt")
    torch.save({"args": None, "cfg": None, "model": {}}, legacy)
    with pytest.raises(ExportError, match=r"cfg.model._name is None,"):
        read_laser_run(legacy)
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        read_laser_run(str(tmp_path / "missing.pt"))


def test_a_legacy_checkpoint_that_is_not_a_laser_run_is_refused_naming_its_arch(tmp_path):
    import argparse

    path = str(tmp_path / "wav2vec.pt")
    torch.save({"args": argparse.Namespace(arch="wav2vec2"), "cfg": None, "model": {}}, path)
    with pytest.raises(ExportError, match=r"cfg.model._name is 'wav2vec2', expected 'laser'"):
        read_laser_run(path)


def test_the_upstream_is_the_override_if_given_else_the_recorded_path(hubert, tmp_path):
    run = read_laser_run(hubert.laser_path)
    assert resolve_upstream_path(run, None) == hubert.original
    assert resolve_upstream_path(run, "") == hubert.original
    other = str(tmp_path / "other.pt")
    Path(other).write_bytes(b"x")
    assert resolve_upstream_path(run, other) == other
    with pytest.raises(ExportError, match=rf"^{tmp_path}/gone.pt: upstream checkpoint not found \(given with --upstream\)"):
        resolve_upstream_path(run, str(tmp_path / "gone.pt"))


def test_a_moved_upstream_is_reported_with_both_paths_and_the_way_out(hubert, tmp_path):
    run = read_laser_run(edited_run(hubert, tmp_path / "moved.pt", cfg={"upstream_path": str(tmp_path / "away.pt")}))
    with pytest.raises(ExportError) as error:
        resolve_upstream_path(run, None)
    assert str(error.value).startswith(f"{tmp_path}/moved.pt: its original upstream {tmp_path}/away.pt (cfg.model")
    assert "--upstream ORIGINAL.pt" in str(error.value)


def test_verify_export_reads_the_upstream_given_when_the_recorded_one_moved(hubert, tmp_path):
    moved = edited_run(hubert, tmp_path / "moved.pt", cfg={"upstream_path": str(tmp_path / "gone.pt")})
    output = str(tmp_path / "out.pt")
    export_checkpoint(moved, output, upstream=hubert.original)
    verify_export(output, moved, upstream=hubert.original)
    with pytest.raises(ExportError, match="gone.pt"):
        verify_export(output, moved)


def test_extra_safe_globals_reach_every_read_of_export_and_verify(hubert, tmp_path):
    """Both files hold an object of a class outside the allow-list: refused by default, read when allowed."""
    from fractions import Fraction

    laser = edited_run(hubert, tmp_path / "laser.pt", note=Fraction(1, 3))
    original = edited_source(hubert, tmp_path / "original.pt", lambda state: state.__setitem__("note", Fraction(2, 3)))
    output = str(tmp_path / "out.pt")
    with pytest.raises(CheckpointError, match="fractions.Fraction"):
        export_checkpoint(laser, output, upstream=original)
    laser_only = edited_run(hubert, tmp_path / "laser_only.pt", note=Fraction(1, 3))
    with pytest.raises(CheckpointError, match="fractions.Fraction"):
        export_checkpoint(laser_only, str(tmp_path / "other.pt"), upstream=hubert.original)  # the run's read
    with pytest.raises(CheckpointError, match="fractions.Fraction"):
        plan_export(hubert.laser_path, upstream=original)  # the upstream's read
    allowed = ["fractions.Fraction"]
    export_checkpoint(laser, output, upstream=original, extra_safe_globals=allowed)
    verify_export(output, laser, upstream=original, extra_safe_globals=allowed)
    assert load_checkpoint(output, allowed)["note"] == Fraction(2, 3)  # the source's bookkeeping, kept
    with pytest.raises(CheckpointError, match="fractions.Fraction"):
        verify_export(output, laser, upstream=original)
