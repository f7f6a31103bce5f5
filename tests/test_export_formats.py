"""The original formats (laser_fairseq/export/formats.py): which formats a source exports to, and what a
fairseq HuBERT, s3prl or unilm WavLM export holds.
"""

import copy

import pytest
import torch

from export_files import LAYERS, edited_source, hubert, source_of, wavlm
from laser_fairseq.checkpoint_io import load_checkpoint
from laser_fairseq.export import (
    ExportError,
    ExportVerificationError,
    choose_format,
    export_checkpoint,
    fairseq_hubert_checkpoint,
    genuine_hubert_cfg,
    plan_export,
    s3prl_hubert_checkpoint,
    unilm_wavlm_checkpoint,
    verify_export,
)
from laser_fairseq.models.upstream import UpstreamSource, read_upstream_source


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


def test_a_fairseq_export_of_a_legacy_args_source_has_args_none(hubert):
    from checkpoint_shapes import with_legacy_args

    source = UpstreamSource("/s.pt", "hubert", "fairseq", with_legacy_args(load_checkpoint(hubert.original)))
    written = fairseq_hubert_checkpoint(source, {})
    assert written["args"] is None and source.state["args"] is not None
    assert written["cfg"]["model"]["encoder_layers"] == LAYERS


def test_a_fairseq_export_keeps_the_sources_extra_state(hubert):
    state = load_checkpoint(hubert.original)
    state["extra_state"] = {"metrics": {"loss": 1.5}, "previous_training_time": 12.0}
    written = fairseq_hubert_checkpoint(UpstreamSource("/s.pt", "hubert", "fairseq", state), {})
    assert written["extra_state"] == {"metrics": {"loss": 1.5}, "previous_training_time": 12.0}


def test_the_written_cfg_shares_nothing_with_the_source_state(hubert):
    state = load_checkpoint(hubert.original)
    cfg = genuine_hubert_cfg(state)
    cfg["common"]["seed"] = 12345
    cfg["optimization"]["lr"].append(1.0)
    assert state["cfg"]["common"]["seed"] != 12345 and 1.0 not in state["cfg"]["optimization"]["lr"]


def test_a_cfg_section_left_as_a_namespace_keeps_its_hubert_fields(hubert):
    import argparse

    state = {"args": None, "cfg": {"model": argparse.Namespace(encoder_layers=4, upstream_path="/x.pt"), "task": None}}
    cfg = genuine_hubert_cfg(state)
    assert cfg["model"] == {"encoder_layers": 4, "_name": "hubert"}
    assert cfg["task"] == {"_name": "hubert_pretraining"}


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
