"""The plan of an export (laser_fairseq/export/plan.py): the trained blocks, the check that every frozen
tensor is the source's, and the merge; on LASER checkpoints built in memory (tests/export_files.py).
"""

import re

import pytest
import torch

from export_files import (
    LAYERS,
    PREFIX,
    TRAINED,
    edited_run,
    edited_source,
    files,
    half_precision_run,
    hubert,
    in_trained_blocks,
    wavlm,
)
from laser_fairseq.checkpoint_io import load_checkpoint
from laser_fairseq.export import (
    ExportError,
    block_index,
    check_frozen_weights_unchanged,
    count_blocks,
    export_checkpoint,
    is_in_blocks,
    merge_weights,
    plan_export,
    read_laser_run,
    top_blocks,
    trained_upstream_weights,
)
from laser_fairseq.models.upstream import read_upstream_source


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


@pytest.mark.parametrize(
    "key, index",
    [
        ("encoder.layers.0.fc1.weight", 0),
        ("encoder.layers.3.self_attn.k_proj.bias", 3),
        ("encoder.layers.12.fc1.weight", 12),
        ("encoder.layers.3", None),
        ("model.encoder.layers.3.fc1.weight", None),
        ("encoder.layers.x.fc1.weight", None),
        ("encoder.layer_norm.weight", None),
        ("encoder.pos_conv.0.weight_g", None),
        ("encoderXlayers.1.fc1.weight", None),
    ],
)
def test_block_index_is_n_only_for_keys_of_encoder_layers_n(key, index):
    assert block_index(key) == index


def test_count_blocks_needs_consecutive_blocks_from_zero(hubert):
    weights = load_checkpoint(hubert.original)["model"]
    assert count_blocks(weights, "x.pt") == LAYERS
    assert count_blocks({"encoder.layers.0.a": 1}, "x.pt") == 1
    assert count_blocks({"encoder.layers.1.a": 1, "encoder.layers.0.a": 1, "mask_emb": 1}, "x.pt") == 2
    for keys in (["mask_emb"], [], ["encoder.layers.1.a"], ["encoder.layers.0.a", "encoder.layers.2.a"]):
        with pytest.raises(ExportError, match=r"^x.pt: cannot find consecutive transformer blocks encoder.layers.N"):
            count_blocks(dict.fromkeys(keys, 1), "x.pt")


def test_top_blocks_are_the_last_k_and_k_must_fit(hubert):
    assert top_blocks(4, 2, "x.pt") == range(2, 4)
    assert top_blocks(4, 1, "x.pt") == range(3, 4)
    assert top_blocks(4, 4, "x.pt") == range(0, 4)
    for k in (0, -1, 5):
        with pytest.raises(ExportError, match=rf"^x.pt: trainable_layers={k} does not fit an upstream with 4 blocks$"):
            top_blocks(4, k, "x.pt")


def test_is_in_blocks_only_for_keys_of_the_given_blocks():
    assert is_in_blocks("encoder.layers.0.fc1.weight", range(0, 1))
    assert is_in_blocks("encoder.layers.2.fc1.weight", range(2, 4))
    assert is_in_blocks("encoder.layers.3.fc1.weight", [3])
    assert not is_in_blocks("encoder.layers.1.fc1.weight", range(2, 4))
    assert not is_in_blocks("encoder.layers.4.fc1.weight", range(2, 4))
    assert not is_in_blocks("encoder.layer_norm.weight", range(0, 4))


def test_the_plan_replaces_the_top_blocks_of_the_recorded_k(hubert, tmp_path):
    plan = plan_export(edited_run(hubert, tmp_path / "k3.pt", cfg={"trainable_layers": 3}), upstream=hubert.original)
    assert plan.num_layers == LAYERS and plan.trained_blocks == range(1, 4)
    with pytest.raises(ExportError, match=r"trainable_layers=5 does not fit an upstream with 4 blocks"):
        plan_export(edited_run(hubert, tmp_path / "k5.pt", cfg={"trainable_layers": 5}))


def test_errors_of_the_plan_name_the_file_they_are_about(hubert, tmp_path):
    too_many = edited_run(hubert, tmp_path / "too_many.pt", cfg={"trainable_layers": LAYERS + 1})
    with pytest.raises(ExportError, match=rf"^{too_many}: "):
        plan_export(too_many)
    frozen = next(key for key in hubert.laser["model"] if key.startswith(PREFIX["hubert"] + "encoder.layers.0."))
    changed = edited_run(hubert, tmp_path / "changed.pt", model={frozen: hubert.laser["model"][frozen] + 1.0})
    with pytest.raises(ExportError, match=rf"{changed}"):
        plan_export(changed)
    no_blocks = edited_source(hubert, tmp_path / "no_blocks.pt", lambda state: state.__setitem__(
        "model", {k: v for k, v in state["model"].items() if "encoder.layers." not in k}))
    with pytest.raises(ExportError, match=rf"{no_blocks}"):
        plan_export(hubert.laser_path, upstream=no_blocks)


def test_the_trained_weights_are_the_runs_upstream_under_the_original_names_without_the_head(files):
    run = read_laser_run(files.laser_path)
    source = read_upstream_source(files.original)
    trained = trained_upstream_weights(run, source)
    prefix = PREFIX[source.kind]
    assert list(trained) == list(source.weights)
    assert all(torch.equal(trained[key], files.laser["model"][prefix + key]) for key in trained)


@pytest.mark.parametrize("kind", ["hubert", "wavlm"])
def test_trained_weights_that_do_not_fit_the_upstream_are_refused_by_key(kind, hubert, wavlm, tmp_path):
    files = hubert if kind == "hubert" else wavlm
    prefix = PREFIX[kind]
    source = read_upstream_source(files.original)
    frozen = "encoder.layers.0.fc1.weight"
    cases = {
        "missing": ({prefix + frozen: None}, rf"missing \['{frozen}'\], unexpected \[\], shape mismatches \[\]"),
        "unexpected": ({prefix + "extra.weight": torch.ones(1)}, r"missing \[\], unexpected \['extra.weight'\]"),
        "leftover": ({"other.weight": torch.ones(1)}, r"missing \[\], unexpected \['other.weight'\]"),
        "shape": ({prefix + frozen: torch.ones(32, 64)}, rf"missing \[\], unexpected \[\], shape mismatches \['{frozen}: trained \(32, 64\) vs upstream \(64, 32\)'\]\); "
                  r"pass the original checkpoint it was trained from with --upstream$"),
    }
    for name, (model, message) in cases.items():
        run = read_laser_run(edited_run(files, tmp_path / f"{name}.pt", model=model))
        with pytest.raises(ExportError, match=rf"^{run.path}: its upstream weights do not match the {kind} upstream "
                                              rf"{files.original} \({message}"):
            trained_upstream_weights(run, source)


def test_at_most_five_keys_of_each_kind_are_named(hubert, tmp_path):
    source = read_upstream_source(hubert.original)
    gone = [key for key in source.weights if key.startswith("encoder.layers.0.")][:6]
    run = read_laser_run(edited_run(hubert, tmp_path / "run.pt", model=dict.fromkeys((PREFIX["hubert"] + k for k in gone), None)))
    with pytest.raises(ExportError, match=rf"\(missing {re.escape(str(gone[:5]))}, unexpected"):
        trained_upstream_weights(run, source)


def test_only_keys_under_head_dot_are_the_dropped_head(hubert, tmp_path):
    run = read_laser_run(edited_run(hubert, tmp_path / "run.pt", model={"heads.weight": torch.ones(1)}))
    with pytest.raises(ExportError, match=r"unexpected \['heads.weight'\]"):
        trained_upstream_weights(run, read_upstream_source(hubert.original))


def test_a_run_of_another_upstream_kind_holds_none_of_its_weights(hubert, wavlm):
    with pytest.raises(ExportError, match=rf"^{hubert.laser_path}: holds no weights of a wavlm upstream, so it was "
                                          rf"not trained from {wavlm.original};"):
        trained_upstream_weights(read_laser_run(hubert.laser_path), read_upstream_source(wavlm.original))
    with pytest.raises(ExportError, match="holds no weights of a hubert upstream"):
        trained_upstream_weights(read_laser_run(wavlm.laser_path), read_upstream_source(hubert.original))


def test_frozen_tensors_must_equal_the_source_and_trained_blocks_may_differ(files):
    source = read_upstream_source(files.original)
    trained = trained_upstream_weights(read_laser_run(files.laser_path), source)
    check_frozen_weights_unchanged(trained, source, range(2, 4), "run.pt")
    with pytest.raises(ExportError, match=r"^run.pt: \d+ frozen tensors \(e.g. \['encoder.layers.2."):
        check_frozen_weights_unchanged(trained, source, range(3, 4), "run.pt")  # block 2 was trained
    key = "encoder.layers.1.fc2.bias"
    changed = dict(trained, **{key: trained[key] + 1e-3})
    with pytest.raises(ExportError, match=rf"^run.pt: 1 frozen tensors \(e.g. \['{key}'\]\) differ from {source.path}: "
                                          r"this LASER run was not trained from that file"):
        check_frozen_weights_unchanged(changed, source, range(2, 4), "run.pt")
    check_frozen_weights_unchanged(changed, source, range(1, 4), "run.pt")


def test_the_frozen_check_names_the_first_three_differing_tensors_in_source_order(hubert):
    source = read_upstream_source(hubert.original)
    trained = trained_upstream_weights(read_laser_run(hubert.laser_path), source)
    keys = [key for key in source.weights if key.startswith("encoder.layers.0.")][:4]
    changed = dict(trained, **{key: trained[key] + 1.0 for key in keys})
    with pytest.raises(ExportError, match=rf"^run.pt: 4 frozen tensors \(e.g. {re.escape(str(keys[:3]))}\) differ"):
        check_frozen_weights_unchanged(changed, source, range(2, 4), "run.pt")


def test_an_fp16_run_is_compared_after_rounding_and_exports_the_unrounded_source(hubert, tmp_path):
    run_path = half_precision_run(hubert, tmp_path / "fp16.pt", {"fp16": True})
    output = str(tmp_path / "out.pt")
    export_checkpoint(run_path, output)
    source = load_checkpoint(hubert.original)["model"]
    written = load_checkpoint(output)["model"]
    frozen = [key for key in source if not in_trained_blocks(key)]
    assert all(torch.equal(written[key], source[key]) for key in frozen)
    assert not all(torch.equal(source[key].half().float(), source[key]) for key in frozen)  # rounding mattered

    with pytest.raises(ExportError, match=r"frozen tensors .* differ from .*original.pt: this LASER run"):
        plan_export(half_precision_run(hubert, tmp_path / "fp32.pt", {}))
    with pytest.raises(ExportError, match=r"\(compared after rounding to torch.bfloat16, the run's precision\)"):
        plan_export(half_precision_run(hubert, tmp_path / "bf16.pt", {"bf16": True}))


def test_the_merge_keeps_the_source_order_and_dtypes_and_takes_only_the_trained_blocks():
    source = {
        "encoder.layers.1.fc1.weight": torch.zeros(2),
        "mask_emb": torch.zeros(2),
        "encoder.layers.0.fc1.weight": torch.zeros(2, dtype=torch.float16),
    }
    trained = {
        "encoder.layers.0.fc1.weight": torch.tensor([1.5, 2.0], dtype=torch.float64),
        "mask_emb": torch.ones(2),
        "encoder.layers.1.fc1.weight": torch.ones(2),
    }
    merged = merge_weights(source, trained, range(0, 1))
    assert list(merged) == list(source)
    assert merged["encoder.layers.0.fc1.weight"].dtype == torch.float16
    assert merged["encoder.layers.0.fc1.weight"].tolist() == [1.5, 2.0]
    assert merged["mask_emb"].tolist() == [0.0, 0.0] and merged["encoder.layers.1.fc1.weight"].tolist() == [0.0, 0.0]
