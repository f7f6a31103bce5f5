"""The export's merge and its read-back verification, on LASER checkpoints built in memory (no training run).

test_export.py proves the exported files work with fairseq and s3prl after a real training run; these tests
pin, in a second, which tensor comes from which file and that the verification looks at every tensor,
those of the trained blocks included.
"""

import pytest
import torch

from laser_fairseq.checkpoint_io import load_checkpoint
from laser_fairseq.export import (
    ExportError,
    ExportVerificationError,
    export_checkpoint,
    plan_export,
    verify_export,
)
from laser_fairseq.tiny_upstream import make_tiny_hubert, make_tiny_wavlm, save_checkpoint
from test_analysis import laser_checkpoint_with_new_top_blocks

LAYERS = 4
TRAINED = (2, 3)
HEAD = {"head.weight": torch.ones(8, 32), "head.bias": torch.zeros(8)}


def in_trained_blocks(key: str) -> bool:
    return any(key.startswith(f"encoder.layers.{index}.") for index in TRAINED)


@pytest.fixture(scope="module", params=["hubert", "wavlm"])
def files(request, tmp_path_factory):
    """(original upstream path, LASER checkpoint path, the LASER checkpoint dict) of one upstream kind."""
    folder = tmp_path_factory.mktemp(request.param)
    make = make_tiny_hubert if request.param == "hubert" else make_tiny_wavlm
    original = str(folder / "original.pt")
    save_checkpoint(make(layers=LAYERS, dim=32, seed=3), original)
    laser = laser_checkpoint_with_new_top_blocks(original, trained=len(TRAINED))
    laser["cfg"]["model"]["upstream_path"] = original
    laser["model"].update(HEAD)
    laser_path = str(folder / "checkpoint_last.pt")
    torch.save(laser, laser_path)
    return original, laser_path, laser


def test_the_export_holds_the_trained_blocks_and_the_original_elsewhere(files, tmp_path):
    original, laser_path, _ = files
    plan = plan_export(laser_path)
    output = str(tmp_path / "exported.pt")
    report = export_checkpoint(laser_path, output)
    source = load_checkpoint(original)["model"]
    written = load_checkpoint(output)["model"]
    assert list(written) == list(source)
    for key, value in written.items():
        expected = plan.trained[key] if in_trained_blocks(key) else source[key]
        assert value.dtype == source[key].dtype and torch.equal(value, expected), key
    changed = [key for key in written if not torch.equal(written[key], source[key])]
    assert changed and all(in_trained_blocks(key) for key in changed)
    assert report.trained_blocks == list(TRAINED) and report.num_updates == 100
    assert report.replaced_tensors == sum(in_trained_blocks(key) for key in source)
    assert report.unchanged_tensors == len(source) - report.replaced_tensors
    assert report.changed_tensors == len(changed)
    assert report.replaced_parameters + report.unchanged_parameters == sum(v.numel() for v in source.values())
    assert report.head_parameters == 8 * 32 + 8


def corrupted_copy(output: str, path: str, key: str, value: torch.Tensor):
    state = load_checkpoint(output)
    state["model"] = dict(state["model"], **{key: value})
    torch.save(state, path)


def test_verification_checks_every_tensor_of_the_trained_blocks_too(files, tmp_path):
    _, laser_path, _ = files
    plan = plan_export(laser_path)
    output = str(tmp_path / "exported.pt")
    export_checkpoint(laser_path, output)
    verify_export(output, laser_path)
    trained_key = next(key for key in plan.merged if in_trained_blocks(key) and key.endswith("fc1.weight"))
    frozen_key = "encoder.layers.0.fc1.weight"
    bad_values = {
        "untrained block": (trained_key, plan.source.weights[trained_key]),  # the original left in place
        "changed frozen tensor": (frozen_key, plan.source.weights[frozen_key] + 1e-6),
        "other dtype": (frozen_key, plan.source.weights[frozen_key].double()),
    }
    for name, (key, value) in bad_values.items():
        bad = str(tmp_path / f"{name}.pt")
        corrupted_copy(output, bad, key, value)
        with pytest.raises(ExportVerificationError, match=rf"1 tensors differ .*{key}"):
            verify_export(bad, laser_path)


def test_a_run_whose_frozen_tensors_differ_from_the_upstream_is_refused(files, tmp_path):
    original, _, laser = files
    state = dict(laser, model=dict(laser["model"]))
    frozen = next(key for key in state["model"] if "encoder.layers.1." in key and key.endswith("weight"))
    state["model"][frozen] = state["model"][frozen] + 1.0
    path = str(tmp_path / "other_start.pt")
    torch.save(state, path)
    with pytest.raises(ExportError, match=r"1 frozen tensors .* differ"):
        export_checkpoint(path, str(tmp_path / "never.pt"), upstream=original)
    assert not (tmp_path / "never.pt").exists()
