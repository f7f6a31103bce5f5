"""What an export reports (laser_fairseq/export/report.py): exact counts of the merge, the sha256 of the
written weights, the summary lines and the notes.
"""

import dataclasses
import hashlib
from pathlib import Path


from export_files import LAYERS, PREFIX, edited_run, hubert, in_trained_blocks, wavlm
from laser_fairseq.checkpoint_io import load_checkpoint
from laser_fairseq.export import build_report, export_checkpoint, plan_export, weights_file


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


def test_the_report_names_the_upstream_given_with_upstream(hubert, tmp_path):
    run_path = edited_run(hubert, tmp_path / "moved.pt", cfg={"upstream_path": str(tmp_path / "away.pt")})
    report = export_checkpoint(run_path, str(tmp_path / "out.pt"), upstream=hubert.original)
    assert report.source_path == hubert.original and report.laser_path == run_path
    assert f"  source upstream : {hubert.original} (4 blocks)" in report.summary().splitlines()


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
