"""Where an export may be written and the check of what was written (laser_fairseq/export/verify.py): never
over an input, over an output only with --force, atomically, and every tensor of the trained blocks too.
"""

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from export_files import (
    corrupted_copy,
    edited_source,
    files,
    hubert,
    hubert_export,
    in_trained_blocks,
    wavlm,
    written_with,
)
from laser_fairseq.checkpoint_io import load_checkpoint
from laser_fairseq.export import (
    ExportError,
    ExportVerificationError,
    check_output_path,
    check_written_weights,
    export_checkpoint,
    merge_weights,
    plan_export,
    verify_export,
    verify_weights,
)
from laser_fairseq.files import atomic_path


NAMES = "cfg.model/_name or cfg.task/_name is not hubert / hubert_pretraining"


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


def test_an_input_reached_through_a_symlinked_directory_is_never_the_output(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(ExportError, match="this is an input of the export"):
        check_output_path(str(tmp_path / "link" / "gone.pt"), [str(tmp_path / "real" / "gone.pt")], force=True)


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


def test_any_existing_output_path_needs_force_not_only_a_regular_file(tmp_path):
    fifo = tmp_path / "out.pt"
    os.mkfifo(fifo)
    with pytest.raises(ExportError, match=rf"^{fifo} exists; pass --force to replace it$"):
        check_output_path(str(fifo), [], force=False)


def test_the_export_never_writes_over_the_laser_checkpoint(wavlm, tmp_path):
    before = Path(wavlm.laser_path).read_bytes()
    with pytest.raises(ExportError, match=rf"^{wavlm.laser_path}: this is an input of the export"):
        export_checkpoint(wavlm.laser_path, wavlm.laser_path, force=True)
    assert Path(wavlm.laser_path).read_bytes() == before


def test_the_temporary_file_sits_beside_the_output_and_names_the_process(tmp_path):
    with atomic_path(str(tmp_path / "out.pt")) as temporary:  # what write_verified saves to
        assert temporary == f"{tmp_path}/out.pt.tmp-{os.getpid()}"
        Path(temporary).write_bytes(b"x")
    assert os.listdir(tmp_path) == ["out.pt"]


def test_the_checkpoint_is_written_to_a_temporary_file_beside_the_output(hubert, tmp_path, monkeypatch):
    saved = []
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda state, path: (saved.append(str(path)), real_save(state, path))[1])
    output = tmp_path / "deep" / "out.pt"
    export_checkpoint(hubert.laser_path, str(output))
    assert len(saved) == 1 and os.path.dirname(saved[0]) == str(output.parent)
    assert os.path.basename(saved[0]).startswith("out.pt.tmp-") and os.listdir(output.parent) == ["out.pt"]


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
    def save_half_then_fail(state, path):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    output = tmp_path / "out.pt"
    output.write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"):
        export_checkpoint(wavlm.laser_path, str(output), force=True)
    assert os.listdir(tmp_path) == ["out.pt"] and output.read_bytes() == b"old"


def test_a_failed_verification_keeps_the_previous_output(wavlm, tmp_path, monkeypatch):
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda state, path: real_save(dict(state, model={}), path))
    output = tmp_path / "out.pt"
    output.write_bytes(b"old")
    with pytest.raises(ExportVerificationError, match=r"keys differ from the source upstream's"):
        export_checkpoint(wavlm.laser_path, str(output), force=True)
    assert os.listdir(tmp_path) == ["out.pt"] and output.read_bytes() == b"old"


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


def test_a_trained_block_saved_in_higher_precision_is_verified_against_its_rounding(hubert):
    plan = plan_export(hubert.laser_path)
    key = "encoder.layers.3.fc1.weight"
    precise = plan.trained[key].double() + 1e-12  # below float32 resolution
    trained = dict(plan.trained, **{key: precise})
    plan = dataclasses.replace(plan, trained=trained, merged=merge_weights(plan.source.weights, trained, plan.trained_blocks))
    assert plan.merged[key].dtype == torch.float32 and torch.equal(plan.merged[key], precise.float())
    check_written_weights(dict(plan.merged), list(plan.merged), plan, "out.pt")


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


def test_verification_compares_the_label_symbols_not_only_their_number(hubert, hubert_export, tmp_path):
    def rename(state):
        state["task_state"]["dictionaries"][0].symbols[-1] = "renamed"

    bad = written_with(hubert_export, tmp_path / "renamed.pt", rename)
    with pytest.raises(ExportVerificationError, match=r"task_state \(label dictionaries\) differs"):
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


def test_a_written_file_whose_weights_are_not_a_state_dict_is_refused(wavlm, tmp_path):
    path = str(tmp_path / "list.pt")
    torch.save({"cfg": {}, "model": [torch.ones(1)]}, path)
    with pytest.raises(ExportVerificationError, match=rf"^{path}: no 'model' state dict in the written file$"):
        verify_export(path, wavlm.laser_path)
