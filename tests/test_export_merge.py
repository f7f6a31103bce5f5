"""The export's merge and its read-back verification, on LASER checkpoints built in memory (no training run).

test_export.py proves the exported files work with fairseq and s3prl after a real training run; these tests
pin, in a second, which tensor comes from which file and that the verification looks at every tensor,
those of the trained blocks included.
"""

import copy
import dataclasses
import hashlib
import os
import re
import runpy
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from laser_fairseq.checkpoint_io import CheckpointError, load_checkpoint
from laser_fairseq.export import (
    ExportError,
    ExportVerificationError,
    block_index,
    build_report,
    check_frozen_weights_unchanged,
    check_output_path,
    check_written_weights,
    choose_format,
    count_blocks,
    export_checkpoint,
    fairseq_hubert_checkpoint,
    genuine_hubert_cfg,
    is_in_blocks,
    merge_weights,
    plan_export,
    read_laser_run,
    resolve_upstream_path,
    s3prl_hubert_checkpoint,
    sha256_of,
    temporary_path,
    top_blocks,
    trained_upstream_weights,
    unilm_wavlm_checkpoint,
    verify_export,
    verify_weights,
    weights_file,
)
from laser_fairseq.models.upstream import UpstreamSource, read_upstream_source
from laser_fairseq.tiny_upstream import make_tiny_hubert, make_tiny_wavlm, save_checkpoint
from test_analysis import laser_checkpoint_with_new_top_blocks

LAYERS = 4
TRAINED = (2, 3)
HEAD = {"head.weight": torch.ones(8, 32), "head.bias": torch.zeros(8)}


def in_trained_blocks(key: str) -> bool:
    return any(key.startswith(f"encoder.layers.{index}.") for index in TRAINED)


# where a LASER checkpoint keeps the original upstream's weights
PREFIX = {"hubert": "upstream.model.", "wavlm": "upstream."}


class Files(NamedTuple):
    original: str  # the original upstream file
    laser_path: str  # the LASER training checkpoint trained from it
    laser: dict  # that checkpoint's dict


def make_files(kind: str, folder: Path) -> Files:
    make = make_tiny_hubert if kind == "hubert" else make_tiny_wavlm
    original = str(folder / "original.pt")
    save_checkpoint(make(layers=LAYERS, dim=32, seed=3), original)
    laser = laser_checkpoint_with_new_top_blocks(original, trained=len(TRAINED))
    laser["cfg"]["model"]["upstream_path"] = original
    laser["model"].update(HEAD)
    laser_path = str(folder / "checkpoint_last.pt")
    torch.save(laser, laser_path)
    return Files(original, laser_path, laser)


@pytest.fixture(scope="module", params=["hubert", "wavlm"])
def files(request, tmp_path_factory):
    """(original upstream path, LASER checkpoint path, the LASER checkpoint dict) of one upstream kind."""
    return make_files(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def hubert(tmp_path_factory):
    return make_files("hubert", tmp_path_factory.mktemp("hubert_only"))


@pytest.fixture(scope="module")
def wavlm(tmp_path_factory):
    return make_files("wavlm", tmp_path_factory.mktemp("wavlm_only"))


def edited_run(files: Files, path: Path, cfg=None, model=None, drop=(), **top) -> str:
    """A copy of the LASER checkpoint with cfg.model / model entries replaced (None deletes) and top-level keys set."""
    state = dict(files.laser, cfg=copy.deepcopy(files.laser["cfg"]), model=dict(files.laser["model"]), **top)
    for key, value in (cfg or {}).items():
        state["cfg"]["model"].pop(key) if value is None else state["cfg"]["model"].__setitem__(key, value)
    for key, value in (model or {}).items():
        state["model"].pop(key) if value is None else state["model"].__setitem__(key, value)
    for key in drop:
        del state[key]
    torch.save(state, str(path))
    return str(path)


def edited_source(files: Files, path: Path, edit) -> str:
    """A copy of the original upstream file, changed by ``edit(state)``."""
    state = load_checkpoint(files.original)
    edit(state)
    torch.save(state, str(path))
    return str(path)


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


# --------------------------------------------------------------------------------------------------
# reading the run
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# blocks
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# the trained weights, the frozen-weight check and the merge
# --------------------------------------------------------------------------------------------------


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


def half_precision_run(files: Files, path: Path, precision: dict) -> str:
    """The LASER run as an fp16 run saves it: frozen tensors rounded to float16, stored as float32."""
    prefix = PREFIX["hubert"]
    model = {
        key: value.half().float() if key.startswith(prefix) and value.is_floating_point() else value
        for key, value in files.laser["model"].items()
    }
    state = dict(files.laser, model=model, cfg=dict(files.laser["cfg"], common=precision))
    torch.save(state, str(path))
    return str(path)


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


# --------------------------------------------------------------------------------------------------
# the output formats
# --------------------------------------------------------------------------------------------------


def source_of(kind: str, fmt: str) -> UpstreamSource:
    return UpstreamSource(f"/models/{kind}_{fmt}", kind, fmt, {})


@pytest.mark.parametrize(
    "kind, fmt, default, allowed",
    [
        ("hubert", "fairseq", "fairseq", ["fairseq", "s3prl", "hf"]),
        ("hubert", "s3prl", "s3prl", ["s3prl", "hf"]),
        ("hubert", "hf", "hf", ["hf"]),
        ("wavlm", "unilm", "unilm", ["unilm", "hf"]),
        ("wavlm", "hf", "hf", ["hf", "unilm"]),
    ],
)
def test_the_default_format_is_the_sources_own_and_each_allowed_one_is_kept(kind, fmt, default, allowed):
    source = source_of(kind, fmt)
    assert choose_format(source, None) == default
    assert [choose_format(source, requested) for requested in allowed] == allowed
    for requested in {"fairseq", "s3prl", "unilm", "hf"} - set(allowed):
        with pytest.raises(ExportError, match=rf"^--format {requested} does not apply to a {kind} upstream in {fmt} "
                                              rf"format \(/models/{kind}_{fmt}\): .*; choose one of \{allowed}$"):
            choose_format(source, requested)


@pytest.mark.parametrize(
    "kind, fmt, requested, reason",
    [
        ("wavlm", "unilm", "fairseq", "the fairseq format does not hold wavlm models"),
        ("wavlm", "hf", "s3prl", "the s3prl format does not hold wavlm models"),
        ("hubert", "fairseq", "unilm", "the unilm format does not hold hubert models"),
        ("hubert", "hf", "fairseq", "transformers' HubertModel has no pretraining head (final_proj, label_embs_concat)"),
        ("hubert", "hf", "s3prl", "and its config no label_rate / final_dim"),
        ("hubert", "s3prl", "fairseq", "s3prl's format keeps only the symbols of the label dictionaries, not a fairseq task_state"),
    ],
)
def test_a_refused_format_says_why(kind, fmt, requested, reason):
    with pytest.raises(ExportError) as error:
        choose_format(source_of(kind, fmt), requested)
    why = str(error.value).split("): ", 1)[1].split("; choose one of ")[0]
    assert why.startswith(reason) or why.endswith(reason) or f" {reason}," in why


def test_a_fairseq_export_holds_the_sources_bookkeeping_with_args_none_and_a_genuine_hubert_cfg(hubert, tmp_path):
    output = str(tmp_path / "out.pt")
    report = export_checkpoint(hubert.laser_path, output)
    exported, original = load_checkpoint(output), load_checkpoint(hubert.original)
    assert report.fmt == "fairseq" and report.kind == "hubert"
    assert list(exported) == list(original)
    assert exported["args"] is None and exported["last_optimizer_state"] is None and exported["criterion"] is None
    assert exported["optimizer_history"] == original["optimizer_history"]
    assert exported["extra_state"] == original["extra_state"]
    assert [d.symbols for d in exported["task_state"]["dictionaries"]] == [d.symbols for d in original["task_state"]["dictionaries"]]
    cfg = exported["cfg"]
    assert list(cfg) == list(original["cfg"])
    assert cfg["model"] == original["cfg"]["model"] and cfg["task"] == original["cfg"]["task"]
    assert cfg["common"] == original["cfg"]["common"]
    assert not any(key.startswith("head.") for key in exported["model"])
    assert "laser" not in repr(cfg).lower()


def test_the_hubert_cfg_keeps_only_real_fields_and_plain_values(hubert):
    state = load_checkpoint(hubert.original)
    state["cfg"]["model"].update(upstream_path="/x.pt", trainable_layers=2, dropout=torch.tensor(0.5), _name="laser")
    state["cfg"]["task"].update(laser_thing=1, labels=("km",))
    state["cfg"]["common"]["seed"] = torch.tensor(1)
    state["cfg"]["dataset"]["odd"] = {1: "not a str key"}
    state["cfg"]["optimization"]["lr"] = [torch.tensor(0.1)]
    state["cfg"]["laser"] = {"a": 1}
    cfg = genuine_hubert_cfg(state)
    assert "laser" not in cfg and cfg["common"] is None and cfg["dataset"] is None and cfg["optimization"] is None
    assert cfg["checkpoint"] == state["cfg"]["checkpoint"]
    assert cfg["model"]["_name"] == "hubert" and cfg["task"]["_name"] == "hubert_pretraining"
    assert {"upstream_path", "trainable_layers", "dropout"}.isdisjoint(cfg["model"])
    assert cfg["model"]["encoder_layers"] == LAYERS and cfg["model"]["label_rate"] == 50.0
    assert "laser_thing" not in cfg["task"] and cfg["task"]["labels"] == ("km",)
    assert state["cfg"]["laser"] == {"a": 1}  # the source state is not changed


def test_a_legacy_args_source_gets_a_converted_plain_cfg_and_one_without_either_is_refused(hubert):
    from checkpoint_shapes import with_legacy_args
    from omegaconf import DictConfig

    state = load_checkpoint(hubert.original)
    cfg = genuine_hubert_cfg(with_legacy_args(state))
    assert not isinstance(cfg, DictConfig) and isinstance(cfg["model"], dict)
    assert cfg["model"]["_name"] == "hubert" and cfg["model"]["encoder_layers"] == LAYERS
    assert cfg["model"]["encoder_embed_dim"] == 32 and cfg["task"]["label_rate"] == 50.0
    with pytest.raises(ExportError, match="^the source HuBERT checkpoint has neither a cfg dict nor legacy args$"):
        genuine_hubert_cfg(dict(state, cfg=None, args=None))
    from omegaconf import OmegaConf

    structured = genuine_hubert_cfg(dict(state, cfg=OmegaConf.create(state["cfg"])))
    assert structured == genuine_hubert_cfg(state) and isinstance(structured["model"], dict)


def test_a_fairseq_export_fills_in_missing_bookkeeping(hubert):
    state = load_checkpoint(hubert.original)
    for key in ("optimizer_history", "extra_state", "criterion"):
        del state[key]
    state["last_optimizer_state"] = {"state": {}}
    source = UpstreamSource("/s.pt", "hubert", "fairseq", state)
    written = fairseq_hubert_checkpoint(source, {"w": torch.ones(1)})
    assert written["optimizer_history"] == [
        {"criterion_name": "HubertCriterion", "optimizer_name": "FairseqAdam", "num_updates": 0,
         "lr_scheduler_state": {"best": None}}
    ]
    assert written["extra_state"] == {"metrics": {}, "previous_training_time": 0.0}
    assert written["last_optimizer_state"] is None and written["criterion"] is None
    assert list(written["model"]) == ["w"]
    assert "optimizer_history" not in state  # the source state is not changed
    state["optimizer_history"] = [{"num_updates": 1}, {"num_updates": 7, "lr_scheduler_state": {"best": 3}}]
    state["criterion"] = "kept"
    written = fairseq_hubert_checkpoint(source, {})
    assert written["optimizer_history"] == state["optimizer_history"] and written["criterion"] == "kept"
    state["optimizer_history"] = [{"num_updates": 7}]
    assert fairseq_hubert_checkpoint(source, {})["optimizer_history"] == [{"num_updates": 7, "lr_scheduler_state": {"best": None}}]
    assert state["optimizer_history"] == [{"num_updates": 7}]


def test_a_source_without_dictionaries_exports_to_fairseq_without_task_state_but_not_to_s3prl(hubert, tmp_path):
    original = edited_source(hubert, tmp_path / "no_dicts.pt", lambda state: state.pop("task_state"))
    output = str(tmp_path / "out.pt")
    export_checkpoint(hubert.laser_path, output, upstream=original)
    assert "task_state" not in load_checkpoint(output)
    with pytest.raises(ExportError, match=rf"^{original}: no task_state\['dictionaries'\] to write s3prl's "
                                          r"dictionaries_symbols; export in fairseq format"):
        export_checkpoint(hubert.laser_path, str(tmp_path / "s3prl.pt"), fmt="s3prl", upstream=original)
    assert not (tmp_path / "s3prl.pt").exists()


def test_an_s3prl_export_holds_the_cfg_sections_the_merged_weights_and_the_label_symbols(hubert, tmp_path):
    output = str(tmp_path / "out.pt")
    report = export_checkpoint(hubert.laser_path, output, fmt="s3prl")
    plan = plan_export(hubert.laser_path, fmt="s3prl")
    exported, original = load_checkpoint(output), load_checkpoint(hubert.original)
    assert report.fmt == "s3prl" and list(exported) == ["task_cfg", "model_cfg", "model_weight", "dictionaries_symbols"]
    assert exported["model_cfg"] == original["cfg"]["model"] and exported["task_cfg"] == original["cfg"]["task"]
    assert exported["dictionaries_symbols"] == [list(d.symbols) for d in original["task_state"]["dictionaries"]]
    assert list(exported["model_weight"]) == list(plan.merged)
    assert all(torch.equal(value, plan.merged[key]) for key, value in exported["model_weight"].items())
    verify_export(output, hubert.laser_path, fmt="s3prl")
    with pytest.raises(ExportVerificationError, match=rf"^{output}: no 'model' state dict in the written file$"):
        verify_export(output, hubert.laser_path)  # read as the fairseq format


def test_an_s3prl_source_exports_to_s3prl_keeping_its_other_entries(hubert, tmp_path):
    s3prl_original = str(tmp_path / "s3prl_original.pt")
    export_checkpoint(hubert.laser_path, str(tmp_path / "x.pt"), fmt="s3prl")
    state = load_checkpoint(str(tmp_path / "x.pt"))
    state["model_weight"] = load_checkpoint(hubert.original)["model"]  # the original weights, in s3prl's format
    state["note"] = "kept"
    torch.save(state, s3prl_original)
    output = str(tmp_path / "out.pt")
    report = export_checkpoint(hubert.laser_path, output, upstream=s3prl_original)
    exported = load_checkpoint(output)
    assert report.fmt == "s3prl" and list(exported) == list(state)
    assert exported["note"] == "kept" and exported["dictionaries_symbols"] == state["dictionaries_symbols"]
    assert exported["model_cfg"] == state["model_cfg"]
    plan = plan_export(hubert.laser_path, upstream=s3prl_original)
    assert all(torch.equal(value, plan.merged[key]) for key, value in exported["model_weight"].items())
    with pytest.raises(ExportError, match="--format fairseq does not apply to a hubert upstream in s3prl format"):
        export_checkpoint(hubert.laser_path, str(tmp_path / "f.pt"), fmt="fairseq", upstream=s3prl_original)


def test_a_unilm_export_is_the_original_cfg_and_the_merged_weights(wavlm, tmp_path):
    output = str(tmp_path / "out.pt")
    report = export_checkpoint(wavlm.laser_path, output)
    exported, original = load_checkpoint(output), load_checkpoint(wavlm.original)
    assert report.fmt == "unilm" and report.kind == "wavlm"
    assert list(exported) == ["cfg", "model"] and exported["cfg"] == original["cfg"]
    assert list(exported["model"]) == list(original["model"]) and "encoder.pos_conv.0.weight_g" in exported["model"]
    source = read_upstream_source(wavlm.original)
    built = unilm_wavlm_checkpoint(source, {})
    built["cfg"]["encoder_layers"] = 99
    assert source.state["cfg"]["encoder_layers"] == LAYERS  # a copy, not the source's cfg


def test_an_s3prl_checkpoint_from_a_fairseq_source_holds_the_given_weights_and_hubert_cfg_sections(hubert):
    source = read_upstream_source(hubert.original)
    weights = {"encoder.layers.0.fc1.weight": torch.ones(1)}
    built = s3prl_hubert_checkpoint(source, weights)
    assert built["model_weight"] is weights and built["model_cfg"]["_name"] == "hubert"
    assert built["task_cfg"]["_name"] == "hubert_pretraining"


# --------------------------------------------------------------------------------------------------
# the output path
# --------------------------------------------------------------------------------------------------


def test_the_output_may_not_exist_unless_forced_and_may_never_be_an_input(tmp_path):
    inputs = [str(tmp_path / "run.pt"), str(tmp_path / "original.pt")]
    for path in inputs:
        Path(path).write_bytes(b"x")
    check_output_path(str(tmp_path / "new.pt"), inputs, force=False)
    check_output_path(str(tmp_path / "sub" / "new.pt"), inputs, force=False)
    existing = tmp_path / "existing.pt"
    existing.write_bytes(b"x")
    with pytest.raises(ExportError, match=rf"^{existing} exists; pass --force to replace it$"):
        check_output_path(str(existing), inputs, force=False)
    check_output_path(str(existing), inputs, force=True)
    for path in inputs:
        for force in (False, True):
            with pytest.raises(ExportError, match=rf"^{path}: this is an input of the export \({path}\); choose another"):
                check_output_path(path, inputs, force=force)
    other_spelling = str(tmp_path / "sub" / ".." / "original.pt")
    with pytest.raises(ExportError, match="this is an input of the export"):
        check_output_path(other_spelling, inputs, force=True)
    os.symlink(inputs[0], tmp_path / "link.pt")
    with pytest.raises(ExportError, match="this is an input of the export"):
        check_output_path(str(tmp_path / "link.pt"), inputs, force=True)


def test_an_input_that_does_not_exist_is_still_never_the_output(tmp_path):
    gone = str(tmp_path / "gone.pt")
    with pytest.raises(ExportError, match="this is an input of the export"):
        check_output_path(str(tmp_path / "." / "gone.pt"), [gone], force=True)


def test_a_directory_is_an_output_only_of_a_directory_format_and_only_with_force(tmp_path):
    directory = tmp_path / "out"
    directory.mkdir()
    for force in (False, True):
        with pytest.raises(ExportError, match=rf"^{directory} is a directory; give a file name for --output$"):
            check_output_path(str(directory), [], force=force)
    with pytest.raises(ExportError, match=rf"^{directory} exists; pass --force to replace it for --output$"):
        check_output_path(str(directory), [], force=False, is_directory_format=True)
    check_output_path(str(directory), [], force=True, is_directory_format=True)
    check_output_path(str(tmp_path / "new"), [], force=False, is_directory_format=True)


def test_the_temporary_file_sits_beside_the_output_and_names_the_process(tmp_path):
    assert temporary_path(str(tmp_path / "out.pt")) == f"{tmp_path}/out.pt.tmp-{os.getpid()}"


def test_export_writes_into_a_new_directory_and_replaces_an_output_only_with_force(wavlm, tmp_path):
    output = tmp_path / "new" / "dir" / "out.pt"
    export_checkpoint(wavlm.laser_path, str(output))
    first = output.read_bytes()
    output.write_bytes(b"old")
    with pytest.raises(ExportError, match="exists; pass --force"):
        export_checkpoint(wavlm.laser_path, str(output))
    assert output.read_bytes() == b"old"
    export_checkpoint(wavlm.laser_path, str(output), force=True)
    assert load_checkpoint(str(output))["cfg"] == load_checkpoint(wavlm.original)["cfg"]
    assert len(output.read_bytes()) == len(first)
    with pytest.raises(ExportError, match="this is an input of the export"):
        export_checkpoint(wavlm.laser_path, wavlm.original, force=True)
    assert sorted(os.listdir(output.parent)) == ["out.pt"]


def test_a_failed_save_leaves_neither_the_temporary_file_nor_the_output(wavlm, tmp_path, monkeypatch):
    import laser_fairseq.export as export

    def save_half_then_fail(state, path):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(export.torch, "save", save_half_then_fail)
    output = tmp_path / "out.pt"
    output.write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"):
        export_checkpoint(wavlm.laser_path, str(output), force=True)
    assert os.listdir(tmp_path) == ["out.pt"] and output.read_bytes() == b"old"


def test_a_failed_verification_keeps_the_previous_output(wavlm, tmp_path, monkeypatch):
    import laser_fairseq.export as export

    real_save = torch.save
    monkeypatch.setattr(export.torch, "save", lambda state, path: real_save(dict(state, model={}), path))
    output = tmp_path / "out.pt"
    output.write_bytes(b"old")
    with pytest.raises(ExportVerificationError, match=r"keys differ from the source upstream's"):
        export_checkpoint(wavlm.laser_path, str(output), force=True)
    assert os.listdir(tmp_path) == ["out.pt"] and output.read_bytes() == b"old"


# --------------------------------------------------------------------------------------------------
# verification
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hubert_export(hubert, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("hubert_export") / "exported.pt")
    export_checkpoint(hubert.laser_path, output)
    return output


def written_with(export_path: str, path: Path, edit) -> str:
    state = load_checkpoint(export_path)
    state["model"] = dict(state["model"])
    edit(state)
    torch.save(state, str(path))
    return str(path)


def test_verification_names_missing_extra_and_reordered_keys(hubert, hubert_export, tmp_path):
    key = "encoder.layers.0.fc1.bias"
    cases = {
        "missing": (lambda s: s["model"].pop(key), rf"missing \['{key}'\], extra \[\]"),
        "extra": (lambda s: s["model"].__setitem__("head.weight", torch.ones(1)), r"missing \[\], extra \['head.weight'\]"),
        "reordered": (lambda s: s.__setitem__("model", dict(reversed(list(s["model"].items())))), r"missing \[\], extra \[\]"),
    }
    for name, (edit, message) in cases.items():
        bad = written_with(hubert_export, tmp_path / f"{name}.pt", edit)
        with pytest.raises(ExportVerificationError, match=rf"^{bad}: its keys differ from the source upstream's \({message}\)$"):
            verify_export(bad, hubert.laser_path)


def test_verification_refuses_a_right_valued_tensor_of_another_dtype(hubert, hubert_export, tmp_path):
    plan = plan_export(hubert.laser_path)
    key = "encoder.layers.3.fc1.weight"  # a trained block
    written = dict(plan.merged, **{key: plan.merged[key].double()})
    with pytest.raises(ExportVerificationError, match=rf"^out.pt: 1 tensors differ from what was merged \(e.g. \['{key}'\]\); "
                                                      r"the file is not a faithful export$"):
        check_written_weights(written, list(plan.merged), plan, "out.pt")
    check_written_weights(dict(plan.merged), list(plan.merged), plan, "out.pt")
    key = "encoder.layers.0.fc1.weight"
    written = dict(plan.merged, **{key: plan.merged[key].half().float()})
    with pytest.raises(ExportVerificationError, match=rf"1 tensors differ from what was merged \(e.g. \['{key}'\]\)"):
        check_written_weights(written, list(plan.merged), plan, "out.pt")


NAMES = "cfg.model/_name or cfg.task/_name is not hubert / hubert_pretraining"


def test_verification_needs_the_fairseq_bookkeeping(hubert, hubert_export, tmp_path):
    import argparse

    verify_export(hubert_export, hubert.laser_path)
    cases = {
        "args": (lambda s: s.__setitem__("args", argparse.Namespace(arch="hubert")), "args is not None"),
        "model name": (lambda s: s["cfg"]["model"].__setitem__("_name", "laser"), NAMES),
        "task name": (lambda s: s["cfg"]["task"].__setitem__("_name", "laser"), NAMES),
        "no cfg": (lambda s: s.__setitem__("cfg", None), NAMES),
        "scheduler": (lambda s: s["optimizer_history"][-1].pop("lr_scheduler_state"), "optimizer_history / extra_state missing"),
        "history": (lambda s: s.pop("optimizer_history"), "optimizer_history / extra_state missing"),
        "extra state": (lambda s: s.pop("extra_state"), "optimizer_history / extra_state missing"),
        "task state": (lambda s: s.pop("task_state"), "task_state (label dictionaries) differs from the source's"),
        "symbols": (lambda s: s["task_state"]["dictionaries"][0].add_symbol("new"), "task_state (label dictionaries) differs from the source's"),
    }
    for name, (edit, problem) in cases.items():
        bad = written_with(hubert_export, tmp_path / f"{name}.pt", edit)
        with pytest.raises(ExportVerificationError, match=rf"^{bad}: not a loadable fairseq HuBERT checkpoint: ") as error:
            verify_export(bad, hubert.laser_path)
        assert problem in str(error.value).split("checkpoint: ", 1)[1].split("; ")


def test_verification_lists_every_bookkeeping_problem(hubert, hubert_export, tmp_path):
    def edit(state):
        state["args"] = {"arch": "hubert"}
        state.pop("extra_state")

    bad = written_with(hubert_export, tmp_path / "bad.pt", edit)
    with pytest.raises(ExportVerificationError, match=r": args is not None; optimizer_history / extra_state missing$"):
        verify_export(bad, hubert.laser_path)


def test_a_source_without_task_state_needs_an_export_without_it(hubert, tmp_path):
    original = edited_source(hubert, tmp_path / "no_dicts.pt", lambda state: state.pop("task_state"))
    plan = plan_export(hubert.laser_path, upstream=original)
    output = str(tmp_path / "out.pt")
    export_checkpoint(hubert.laser_path, output, upstream=original)
    verify_weights(output, plan)
    with_dicts = written_with(output, tmp_path / "with.pt", lambda s: s.__setitem__("task_state", {"dictionaries": []}))
    with pytest.raises(ExportVerificationError, match=r"task_state \(label dictionaries\) differs"):
        verify_weights(with_dicts, plan)


def test_an_s3prl_or_unilm_file_without_its_weights_is_refused(hubert, wavlm, tmp_path):
    path = str(tmp_path / "empty.pt")
    torch.save({"cfg": {}}, path)
    with pytest.raises(ExportVerificationError, match=rf"^{path}: no 'model' state dict in the written file$"):
        verify_export(path, wavlm.laser_path)
    with pytest.raises(ExportVerificationError, match=rf"^{path}: no 'model_weight' state dict in the written file$"):
        verify_export(path, hubert.laser_path, fmt="s3prl")


# --------------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------------


def test_the_report_counts_the_tensors_and_parameters_of_the_merge_exactly(hubert, tmp_path):
    key = "encoder.layers.3.fc2.bias"  # trained block, left as it was by this run
    original = load_checkpoint(hubert.original)["model"]
    run_path = edited_run(hubert, tmp_path / "run.pt", model={PREFIX["hubert"] + key: original[key]},
                          optimizer_history=[{"num_updates": 42}])
    output = str(tmp_path / "out.pt")
    report = export_checkpoint(run_path, output)
    block_keys = [k for k in original if k.startswith("encoder.layers.3.")]
    replaced = [k for k in original if in_trained_blocks(k)]
    assert (report.output, report.fmt, report.kind) == (output, "fairseq", "hubert")
    assert (report.source_path, report.laser_path, report.num_updates) == (hubert.original, run_path, 42)
    assert report.num_layers == LAYERS and report.trained_blocks == [2, 3]
    assert report.replaced_tensors == len(replaced) == 2 * len(block_keys)
    assert report.changed_tensors == len(replaced) - 1
    assert report.replaced_parameters == sum(original[k].numel() for k in replaced)
    assert report.unchanged_tensors == len(original) - len(replaced)
    assert report.unchanged_parameters == sum(v.numel() for k, v in original.items() if not in_trained_blocks(k))
    assert report.head_parameters == 8 * 32 + 8
    assert report.sha256 == hashlib.sha256(Path(output).read_bytes()).hexdigest()
    assert report.notes == []


def test_the_summary_states_the_merge_line_by_line(hubert, tmp_path):
    output = str(tmp_path / "out.pt")
    report = export_checkpoint(hubert.laser_path, output)
    report.notes.append("a note")
    lines = report.summary().splitlines()
    assert lines[0] == f"exported {output} (hubert, fairseq format), verified"
    assert lines[1] == f"  source upstream : {hubert.original} (4 blocks)"
    assert lines[2] == f"  LASER checkpoint: {hubert.laser_path} (100 updates)"
    assert lines[3] == (f"  blocks replaced : [2, 3] -> {report.replaced_tensors} tensors, "
                        f"{report.replaced_parameters:,} parameters ({report.changed_tensors} tensors changed by training)")
    assert lines[4] == (f"  unchanged       : {report.unchanged_tensors} tensors, {report.unchanged_parameters:,} "
                        f"parameters, bit-identical to the source")
    assert lines[5] == "  dropped         : projection head, 264 parameters"
    assert lines[6:] == [f"  sha256          : {report.sha256}", "  note: a note"]


def test_a_stale_s3prl_conversion_beside_a_fairseq_export_is_noted(hubert, tmp_path):
    stale = tmp_path / "out.converted.pt"
    stale.write_bytes(b"old conversion")
    report = export_checkpoint(hubert.laser_path, str(tmp_path / "out.pt"))
    assert report.notes == [
        f"{stale} exists: s3prl's hubert_local(fairseq=True) reuses that conversion instead of this file; "
        f"delete it (or use --format s3prl)"
    ]
    assert export_checkpoint(hubert.laser_path, str(tmp_path / "out.pt"), fmt="s3prl", force=True).notes == []
    assert export_checkpoint(hubert.laser_path, str(tmp_path / "other.pt")).notes == []


def test_an_hf_report_hashes_the_safetensors_file_and_notes_the_dropped_hubert_head(hubert, wavlm, tmp_path):
    directory = tmp_path / "hf"
    directory.mkdir()
    (directory / "model.safetensors").write_bytes(b"weights")
    (directory / "out.converted.pt").write_bytes(b"x")
    plan = dataclasses.replace(plan_export(hubert.laser_path), fmt="hf")
    report = build_report(plan, str(directory))
    assert report.sha256 == hashlib.sha256(b"weights").hexdigest()
    head = {key: plan.merged[key].numel() for key in ("label_embs_concat", "final_proj.weight", "final_proj.bias")}
    assert report.notes == [
        f"HuBERT's pretraining head (label_embs_concat, final_proj.weight, final_proj.bias; {sum(head.values()):,} "
        f"parameters) has no place in transformers' HubertModel and was not written"
    ]
    wavlm_plan = dataclasses.replace(plan_export(wavlm.laser_path), fmt="hf")
    assert build_report(wavlm_plan, str(directory)).notes == []


def test_weights_file_is_the_output_or_the_safetensors_file_of_an_hf_directory():
    assert weights_file("/x/out", "hf") == "/x/out/model.safetensors"
    for fmt in ("fairseq", "s3prl", "unilm"):
        assert weights_file("/x/out.pt", fmt) == "/x/out.pt"


def test_sha256_of_is_the_files_sha256_in_any_size(tmp_path):
    empty, small, large = tmp_path / "empty", tmp_path / "small", tmp_path / "large"
    empty.write_bytes(b"")
    small.write_bytes(b"abc")
    data = bytes(range(256)) * (3 * 4096 + 7)  # 3 MiB and a bit: several chunks
    large.write_bytes(data)
    assert sha256_of(str(empty)) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert sha256_of(str(small)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_of(str(large)) == hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------------
# the command line (scripts/export_checkpoint.py, in process)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli():
    script = Path(__file__).resolve().parents[1] / "scripts" / "export_checkpoint.py"
    return runpy.run_path(str(script), run_name="export_checkpoint_cli")["main"]


def test_the_command_line_exports_and_prints_the_summary(cli, wavlm, tmp_path, capsys):
    output = str(tmp_path / "cli.pt")
    cli(["--checkpoint", wavlm.laser_path, "--output", output])
    printed = capsys.readouterr().out
    assert printed.startswith(f"exported {output} (wavlm, unilm format), verified\n")
    assert "blocks replaced : [2, 3]" in printed and f"sha256          : {sha256_of(output)}" in printed


def test_the_command_line_passes_format_upstream_and_force(cli, hubert, tmp_path, capsys):
    moved = edited_run(hubert, tmp_path / "moved.pt", cfg={"upstream_path": str(tmp_path / "away.pt")})
    output = tmp_path / "cli.pt"
    output.write_bytes(b"old")
    cli(["--checkpoint", moved, "--output", str(output), "--format", "s3prl", "--upstream", hubert.original, "--force"])
    assert capsys.readouterr().out.startswith(f"exported {output} (hubert, s3prl format), verified\n")
    assert "model_weight" in load_checkpoint(str(output))


def test_the_command_line_exits_with_the_error_naming_the_file(cli, hubert, tmp_path):
    existing = tmp_path / "existing.pt"
    existing.write_bytes(b"x")
    with pytest.raises(SystemExit) as exit:
        cli(["--checkpoint", hubert.laser_path, "--output", str(existing)])
    assert exit.value.code == f"error: {existing} exists; pass --force to replace it"
    with pytest.raises(SystemExit) as exit:
        cli(["--checkpoint", hubert.original, "--output", str(tmp_path / "a.pt")])
    assert exit.value.code.startswith(f"error: {hubert.original}: not a LASER training checkpoint")
    with pytest.raises(SystemExit) as exit:
        cli(["--checkpoint", str(tmp_path / "gone.pt"), "--output", str(tmp_path / "a.pt")])
    assert exit.value.code == f"error: {tmp_path / 'gone.pt'}: checkpoint file not found"
    with pytest.raises(SystemExit) as exit:
        cli(["--checkpoint", hubert.laser_path, "--output", str(tmp_path / "a.pt"), "--format", "wav2vec"])
    assert exit.value.code == 2
    assert sorted(os.listdir(tmp_path)) == ["existing.pt"]


def test_a_legacy_checkpoint_that_is_not_a_laser_run_is_refused_naming_its_arch(tmp_path):
    import argparse

    path = str(tmp_path / "wav2vec.pt")
    torch.save({"args": argparse.Namespace(arch="wav2vec2"), "cfg": None, "model": {}}, path)
    with pytest.raises(ExportError, match=r"cfg.model._name is 'wav2vec2', expected 'laser'"):
        read_laser_run(path)


def test_at_most_five_keys_of_each_kind_are_named(hubert, tmp_path):
    source = read_upstream_source(hubert.original)
    gone = [key for key in source.weights if key.startswith("encoder.layers.0.")][:6]
    run = read_laser_run(edited_run(hubert, tmp_path / "run.pt", model=dict.fromkeys((PREFIX["hubert"] + k for k in gone), None)))
    with pytest.raises(ExportError, match=rf"\(missing {re.escape(str(gone[:5]))}, unexpected"):
        trained_upstream_weights(run, source)


def test_an_input_reached_through_a_symlinked_directory_is_never_the_output(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(ExportError, match="this is an input of the export"):
        check_output_path(str(tmp_path / "link" / "gone.pt"), [str(tmp_path / "real" / "gone.pt")], force=True)


def test_the_export_never_writes_over_the_laser_checkpoint(wavlm, tmp_path):
    before = Path(wavlm.laser_path).read_bytes()
    with pytest.raises(ExportError, match=rf"^{wavlm.laser_path}: this is an input of the export"):
        export_checkpoint(wavlm.laser_path, wavlm.laser_path, force=True)
    assert Path(wavlm.laser_path).read_bytes() == before


def test_a_written_file_whose_weights_are_not_a_state_dict_is_refused(wavlm, tmp_path):
    path = str(tmp_path / "list.pt")
    torch.save({"cfg": {}, "model": [torch.ones(1)]}, path)
    with pytest.raises(ExportVerificationError, match=rf"^{path}: no 'model' state dict in the written file$"):
        verify_export(path, wavlm.laser_path)


def test_verification_compares_the_label_symbols_not_only_their_number(hubert, hubert_export, tmp_path):
    def rename(state):
        state["task_state"]["dictionaries"][0].symbols[-1] = "renamed"

    bad = written_with(hubert_export, tmp_path / "renamed.pt", rename)
    with pytest.raises(ExportVerificationError, match=r"task_state \(label dictionaries\) differs"):
        verify_export(bad, hubert.laser_path)


def test_a_fairseq_export_of_a_legacy_args_source_has_args_none(hubert):
    from checkpoint_shapes import with_legacy_args

    source = UpstreamSource("/s.pt", "hubert", "fairseq", with_legacy_args(load_checkpoint(hubert.original)))
    written = fairseq_hubert_checkpoint(source, {})
    assert written["args"] is None and source.state["args"] is not None
    assert written["cfg"]["model"]["encoder_layers"] == LAYERS


def test_the_written_cfg_shares_nothing_with_the_source_state(hubert):
    state = load_checkpoint(hubert.original)
    cfg = genuine_hubert_cfg(state)
    cfg["common"]["seed"] = 12345
    cfg["optimization"]["lr"].append(1.0)
    assert state["cfg"]["common"]["seed"] != 12345 and 1.0 not in state["cfg"]["optimization"]["lr"]


def test_only_keys_under_head_dot_are_the_dropped_head(hubert, tmp_path):
    run = read_laser_run(edited_run(hubert, tmp_path / "run.pt", model={"heads.weight": torch.ones(1)}))
    with pytest.raises(ExportError, match=r"unexpected \['heads.weight'\]"):
        trained_upstream_weights(run, read_upstream_source(hubert.original))


def test_a_cfg_section_left_as_a_namespace_keeps_its_hubert_fields(hubert):
    import argparse

    state = {"args": None, "cfg": {"model": argparse.Namespace(encoder_layers=4, upstream_path="/x.pt"), "task": None}}
    cfg = genuine_hubert_cfg(state)
    assert cfg["model"] == {"encoder_layers": 4, "_name": "hubert"}
    assert cfg["task"] == {"_name": "hubert_pretraining"}


def test_a_fairseq_export_keeps_the_sources_extra_state(hubert):
    state = load_checkpoint(hubert.original)
    state["extra_state"] = {"metrics": {"loss": 1.5}, "previous_training_time": 12.0}
    written = fairseq_hubert_checkpoint(UpstreamSource("/s.pt", "hubert", "fairseq", state), {})
    assert written["extra_state"] == {"metrics": {"loss": 1.5}, "previous_training_time": 12.0}


def test_any_existing_output_path_needs_force_not_only_a_regular_file(tmp_path):
    fifo = tmp_path / "out.pt"
    os.mkfifo(fifo)
    with pytest.raises(ExportError, match=rf"^{fifo} exists; pass --force to replace it$"):
        check_output_path(str(fifo), [], force=False)


def test_the_report_names_the_upstream_given_with_upstream(hubert, tmp_path):
    run_path = edited_run(hubert, tmp_path / "moved.pt", cfg={"upstream_path": str(tmp_path / "away.pt")})
    report = export_checkpoint(run_path, str(tmp_path / "out.pt"), upstream=hubert.original)
    assert report.source_path == hubert.original and report.laser_path == run_path
    assert f"  source upstream : {hubert.original} (4 blocks)" in report.summary().splitlines()


def test_the_frozen_check_names_the_first_three_differing_tensors_in_source_order(hubert):
    source = read_upstream_source(hubert.original)
    trained = trained_upstream_weights(read_laser_run(hubert.laser_path), source)
    keys = [key for key in source.weights if key.startswith("encoder.layers.0.")][:4]
    changed = dict(trained, **{key: trained[key] + 1.0 for key in keys})
    with pytest.raises(ExportError, match=rf"^run.pt: 4 frozen tensors \(e.g. {re.escape(str(keys[:3]))}\) differ"):
        check_frozen_weights_unchanged(changed, source, range(2, 4), "run.pt")


def test_a_trained_block_saved_in_higher_precision_is_verified_against_its_rounding(hubert):
    plan = plan_export(hubert.laser_path)
    key = "encoder.layers.3.fc1.weight"
    precise = plan.trained[key].double() + 1e-12  # below float32 resolution
    trained = dict(plan.trained, **{key: precise})
    plan = dataclasses.replace(plan, trained=trained, merged=merge_weights(plan.source.weights, trained, plan.trained_blocks))
    assert plan.merged[key].dtype == torch.float32 and torch.equal(plan.merged[key], precise.float())
    check_written_weights(dict(plan.merged), list(plan.merged), plan, "out.pt")


def test_a_failed_verification_is_an_export_error_the_command_line_reports(cli, wavlm, tmp_path, monkeypatch):
    import laser_fairseq.export as export

    real_save = torch.save
    monkeypatch.setattr(export.torch, "save", lambda state, path: real_save(dict(state, model={}), path))
    output = tmp_path / "out.pt"
    with pytest.raises(SystemExit) as exit:
        cli(["--checkpoint", wavlm.laser_path, "--output", str(output)])
    assert exit.value.code.startswith("error: ") and "its keys differ from the source upstream's" in exit.value.code
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------------------------------
# what the remaining mutants of export.py showed untested
# --------------------------------------------------------------------------------------------------


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


def test_a_cfg_saved_as_an_omegaconf_object_is_written_plain_and_resolved():
    import enum

    from omegaconf import OmegaConf

    class Mode(enum.Enum):
        default = "default"

    cfg = OmegaConf.create({
        "model": {"_name": "hubert", "extractor_mode": Mode.default, "label_rate": "${task.label_rate}"},
        "task": {"_name": "hubert_pretraining", "label_rate": 50.0},
    })
    sections = genuine_hubert_cfg({"cfg": cfg})
    assert sections["model"]["extractor_mode"] == "default" and type(sections["model"]["extractor_mode"]) is str
    assert sections["model"]["label_rate"] == 50.0 and sections["task"]["label_rate"] == 50.0


def test_a_unilm_export_shares_no_cfg_object_with_its_source(wavlm):
    source = read_upstream_source(wavlm.original)
    before = copy.deepcopy(source.state["cfg"])
    written = unilm_wavlm_checkpoint(source, {})
    for value in written["cfg"].values():
        if isinstance(value, dict):
            value["changed"] = True
    written["cfg"]["encoder_layers"] = -1
    assert source.state["cfg"] == before


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


def test_the_checkpoint_is_written_to_a_temporary_file_beside_the_output(hubert, tmp_path, monkeypatch):
    saved = []
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda state, path: (saved.append(str(path)), real_save(state, path))[1])
    output = tmp_path / "deep" / "out.pt"
    export_checkpoint(hubert.laser_path, str(output))
    assert len(saved) == 1 and os.path.dirname(saved[0]) == str(output.parent)
    assert os.path.basename(saved[0]).startswith("out.pt.tmp-") and os.listdir(output.parent) == ["out.pt"]


@pytest.fixture(scope="module")
def hf_files(tmp_path_factory):
    """A tiny transformers HubertModel directory and a LASER checkpoint trained (in memory) from it."""
    from laser_fairseq.tiny_upstream import save_tiny_hf_directory

    folder = tmp_path_factory.mktemp("hf")
    original = str(folder / "hubert_hf")
    save_tiny_hf_directory(original, "hubert", layers=LAYERS, seed=5)
    laser = laser_checkpoint_with_new_top_blocks(original, trained=len(TRAINED))
    laser["cfg"]["model"]["upstream_path"] = original
    laser_path = str(folder / "checkpoint_last.pt")
    torch.save(laser, laser_path)
    return Files(original, laser_path, laser)


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


def test_verify_export_reads_the_upstream_given_when_the_recorded_one_moved(hubert, tmp_path):
    moved = edited_run(hubert, tmp_path / "moved.pt", cfg={"upstream_path": str(tmp_path / "gone.pt")})
    output = str(tmp_path / "out.pt")
    export_checkpoint(moved, output, upstream=hubert.original)
    verify_export(output, moved, upstream=hubert.original)
    with pytest.raises(ExportError, match="gone.pt"):
        verify_export(output, moved)


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
