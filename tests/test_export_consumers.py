"""Exported LASER checkpoints, tested with their real consumers: fairseq's loader, a fairseq CTC fine-tuning
run (hubert_ctc via w2v_path) and s3prl's hubert_local / wavlm_local.

One module-scoped setup trains tiny HuBERT and WavLM upstreams for 2 LASER updates with fairseq-hydra-train
(both runs in parallel) and exports them; the tests share it.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from checkpoint_shapes import max_difference_to_transformers, start_laser_run, wait_laser_runs, with_legacy_args
from laser_fairseq.cli.export_checkpoint import main
from laser_fairseq.checkpoint_io import SAFE_GLOBALS, load_checkpoint
from laser_fairseq.export import (
    ExportError,
    ExportVerificationError,
    export_checkpoint,
    verify_export,
)
from laser_fairseq.checkout import REPO
from laser_fairseq.hydra_command import hydra_train_command
from laser_fairseq.models.trained_upstream import open_upstream
from laser_fairseq.tiny_upstream import make_tiny_hubert, make_tiny_wavlm, save_checkpoint

DEMO = Path(REPO) / "manifests" / "demo"
LAYERS = 4
TOP_BLOCKS = (2, 3)  # K = 2 of 4
ATOL = 1e-5


def _one_thread_env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny originals, their LASER checkpoints and default-format exports (+ HuBERT in s3prl format)."""
    root = tmp_path_factory.mktemp("export")
    paths = {}
    runs, run_dirs = [], []
    for kind, make in (("hubert", make_tiny_hubert), ("wavlm", make_tiny_wavlm)):
        original = root / f"tiny_{kind}.pt"
        save_checkpoint(make(layers=LAYERS, dim=64), str(original))
        run_dirs.append(str(root / f"laser_{kind}"))
        runs.append(start_laser_run(str(original), run_dirs[-1], max_update=2))  # 2 updates, no validation
        paths[f"{kind}_original"] = original
    for kind, checkpoint in zip(("hubert", "wavlm"), wait_laser_runs(runs, run_dirs)):
        paths[f"{kind}_laser"] = Path(checkpoint)
    for kind, fmt in (("hubert", None), ("hubert", "s3prl"), ("wavlm", None)):
        name = f"{kind}_export" + (f"_{fmt}" if fmt else "")
        paths[name] = root / f"{name}.pt"
        paths[f"{name}_report"] = export_checkpoint(str(paths[f"{kind}_laser"]), str(paths[name]), fmt=fmt)
    paths["root"] = root
    return paths


def waveform(seconds: float = 1.3, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, int(16000 * seconds), generator=generator)


def laser_upstream(laser_checkpoint: Path):
    """Our own view of the trained upstream: the LASER checkpoint opened by laser_fairseq, eval mode."""
    return open_upstream(str(laser_checkpoint)).upstream.eval()


def trained_weights(laser_checkpoint: Path, prefix: str) -> dict:
    state = load_checkpoint(str(laser_checkpoint))["model"]
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def in_top_blocks(key: str) -> bool:
    return any(key.startswith(f"encoder.layers.{index}.") for index in TOP_BLOCKS)


def assert_merged(weights: dict, original: dict, trained: dict):
    """Frozen tensors bit-identical to the original file, top blocks equal to the trained ones."""
    assert set(weights) == set(original)
    for key, value in weights.items():
        expected = trained[key] if in_top_blocks(key) else original[key]
        assert value.dtype == original[key].dtype, key
        assert torch.equal(value, expected), key
    assert any(not torch.equal(weights[key], original[key]) for key in weights if in_top_blocks(key))


def max_hidden_state_diff(theirs, ours) -> float:
    assert len(theirs) == len(ours)
    for a, b in zip(theirs, ours):
        assert a.shape == b.shape
    return max((a - b).abs().max().item() for a, b in zip(theirs, ours))


# --------------------------------------------------------------------------------------------------
# fairseq
# --------------------------------------------------------------------------------------------------


def test_fairseq_loads_exported_hubert_like_the_original(trained):
    from fairseq import checkpoint_utils

    with torch.serialization.safe_globals(SAFE_GLOBALS):
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(trained["hubert_export"])])
    model = models[0].eval()
    assert cfg.model._name == "hubert" and cfg.task._name == "hubert_pretraining"
    assert not os.path.exists(cfg.task.data)  # no label files were needed: dictionaries come from task_state

    exported = load_checkpoint(str(trained["hubert_export"]))
    assert exported["args"] is None and not any(key.startswith("head.") for key in exported["model"])
    assert "laser" not in repr(exported["cfg"]).lower()
    original = load_checkpoint(str(trained["hubert_original"]))["model"]
    assert_merged(model.state_dict(), original, trained_weights(trained["hubert_laser"], "upstream.model."))

    source = waveform()
    with torch.no_grad():
        theirs, _ = model.extract_features(source, padding_mask=None, mask=False)
        ours, _ = laser_upstream(trained["hubert_laser"])(source)
    diff = (theirs - ours).abs().max().item()
    print(f"fairseq extract_features vs LASER upstream: max |diff| = {diff:.3g}")
    assert theirs.shape == ours.shape and diff <= ATOL


def test_hubert_ctc_finetuning_starts_from_export(trained, tmp_path):
    """fairseq-hydra-train, audio_finetuning + hubert_ctc(_fixed) + ctc on the demo letters, 2 updates.

    The encoder is kept frozen for these updates so the saved CTC checkpoint shows the exported weights
    were loaded (hubert_ctc loads w2v_path with strict=False, so starting alone would prove nothing).
    """
    data = ctc_data(tmp_path / "data")
    out = tmp_path / "ctc"
    command = hydra_train_command(os.path.join(REPO, "examples", "ctc", "config"), "hubert_ctc_demo", {
        "task.data": str(data), "model.w2v_path": str(trained["hubert_export"]), "checkpoint.save_dir": str(out),
        "hydra.run.dir": str(out / "hydra"), "optimization.max_update": 2, "model.freeze_finetune_updates": 10,
        "dataset.disable_validation": True,
    })
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=_one_thread_env(), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "num_updates 2" in result.stdout + result.stderr

    ctc = load_checkpoint(str(out / "checkpoint_last.pt"))
    assert ctc["cfg"]["model"]["_name"] == "hubert_ctc_fixed"
    encoder = {k[len("w2v_encoder.w2v_model."):]: v for k, v in ctc["model"].items() if k.startswith("w2v_encoder.w2v_model.")}
    exported = load_checkpoint(str(trained["hubert_export"]))["model"]
    assert set(exported) - set(encoder) == {"final_proj.weight", "final_proj.bias"}  # removed for fine-tuning
    assert all(torch.equal(encoder[key], exported[key]) for key in encoder)


def ctc_data(directory: Path) -> Path:
    """The demo manifests with an absolute root line (fairseq joins the root to the working directory)."""
    directory.mkdir()
    for split in ("train", "valid"):
        lines = (DEMO / f"{split}.tsv").read_text().splitlines()
        (directory / f"{split}.tsv").write_text("\n".join([str(DEMO / lines[0])] + lines[1:]) + "\n")
        shutil.copy(DEMO / f"{split}.ltr", directory)
    shutil.copy(DEMO / "dict.ltr.txt", directory)
    return directory


def test_legacy_args_source_exports_with_a_plain_cfg(trained, tmp_path):
    """A source written by older fairseq (args Namespace, cfg None) is exported with a converted cfg."""
    from fairseq import checkpoint_utils

    legacy = with_legacy_args(load_checkpoint(str(trained["hubert_original"])))
    legacy_path = tmp_path / "legacy_hubert.pt"
    torch.save(legacy, legacy_path)
    output = tmp_path / "exported.pt"
    export_checkpoint(str(trained["hubert_laser"]), str(output), upstream=str(legacy_path))

    exported = load_checkpoint(str(output))
    assert exported["args"] is None and isinstance(exported["cfg"], dict)
    assert exported["cfg"]["model"]["encoder_layers"] == LAYERS
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(output)])
    reference = load_checkpoint(str(trained["hubert_export"]))["model"]
    assert all(torch.equal(value, reference[key]) for key, value in models[0].state_dict().items())


# --------------------------------------------------------------------------------------------------
# s3prl (import the hubconf modules directly: `import s3prl.hub` fails with torchaudio >= 2.9)
# --------------------------------------------------------------------------------------------------


def s3prl_vs_laser(expert, laser_run, seed: int, label: str):
    """(LASER's hidden states, max |difference| to s3prl's ``expert``) on the same random waveform; printed."""
    source = waveform(seed=seed)
    with torch.no_grad():
        ours = laser_upstream(laser_run).hidden_states(source)
        theirs = expert.eval()([source[0]])["hidden_states"]
    diff = max_hidden_state_diff(theirs, ours)
    print(f"{label} vs LASER upstream: max |diff| = {diff:.3g}")
    return ours, diff


def test_s3prl_hubert_local_reads_fairseq_export(trained):
    from s3prl.upstream.hubert.hubconf import hubert_local

    with torch.serialization.safe_globals(SAFE_GLOBALS):  # s3prl converts it with fairseq's loader
        expert = hubert_local(ckpt=str(trained["hubert_export"]), fairseq=True)
    ours, diff = s3prl_vs_laser(expert, trained["hubert_laser"], 1, "s3prl hubert_local(fairseq=True)")
    assert len(ours) == LAYERS + 1 and diff <= ATOL


def test_s3prl_hubert_local_reads_s3prl_format_export(trained):
    from s3prl.upstream.hubert.hubconf import hubert_local

    expert = hubert_local(ckpt=str(trained["hubert_export_s3prl"]))  # plain containers: weights-only as is
    assert_merged(
        expert.model.state_dict(),
        load_checkpoint(str(trained["hubert_original"]))["model"],
        trained_weights(trained["hubert_laser"], "upstream.model."),
    )
    ours, diff = s3prl_vs_laser(expert, trained["hubert_laser"], 2, "s3prl hubert_local (s3prl format)")
    assert diff <= ATOL


def test_s3prl_wavlm_local_reads_unilm_export(trained):
    from s3prl.upstream.wavlm.hubconf import wavlm_local

    exported = load_checkpoint(str(trained["wavlm_export"]))
    original = load_checkpoint(str(trained["wavlm_original"]))
    assert set(exported) == {"cfg", "model"} and exported["cfg"] == original["cfg"]
    assert "encoder.pos_conv.0.weight_g" in exported["model"]
    expert = wavlm_local(ckpt=str(trained["wavlm_export"]))
    assert_merged(expert.model.state_dict(), original["model"], trained_weights(trained["wavlm_laser"], "upstream."))
    ours, diff = s3prl_vs_laser(expert, trained["wavlm_laser"], 3, "s3prl wavlm_local")
    assert len(ours) == LAYERS + 1 and diff <= ATOL


# --------------------------------------------------------------------------------------------------
# Hugging Face transformers
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["hubert", "wavlm"])
def test_transformers_loads_the_hf_export_of_an_original_upstream(trained, tmp_path, kind):
    import transformers

    output = tmp_path / "hf"
    report = export_checkpoint(str(trained[f"{kind}_laser"]), str(output), fmt="hf")
    assert report.fmt == "hf" and report.kind == kind
    model_class = transformers.HubertModel if kind == "hubert" else transformers.WavLMModel
    model, info = model_class.from_pretrained(str(output), output_loading_info=True)
    assert not any(info[name] for name in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    original_cfg = load_checkpoint(str(trained[f"{kind}_original"]))["cfg"]
    original_cfg = original_cfg["model"] if kind == "hubert" else original_cfg
    assert model.config.hidden_dropout == original_cfg["dropout"] and model.config.num_hidden_layers == LAYERS
    assert model.config.layerdrop == original_cfg["encoder_layerdrop"]
    if kind == "hubert":
        assert any("pretraining head (label_embs_concat, final_proj.weight, final_proj.bias" in note for note in report.notes)
    difference = max_difference_to_transformers(model, laser_upstream(trained[f"{kind}_laser"]), normalize=False)
    print(f"transformers {type(model).__name__} vs LASER upstream: max |diff| = {difference:.3g}")
    assert difference <= ATOL


# --------------------------------------------------------------------------------------------------
# safety and errors
# --------------------------------------------------------------------------------------------------


def test_report_describes_the_merge(trained):
    report = trained["hubert_export_report"]
    assert report.trained_blocks == list(TOP_BLOCKS) and report.num_updates == 2
    assert report.changed_tensors > 0 and report.head_parameters > 0
    assert report.sha256 in report.summary() and "verified" in report.summary()


def test_export_refuses_to_overwrite_and_never_touches_its_inputs(trained, tmp_path):
    laser = str(trained["wavlm_laser"])
    output = tmp_path / "out.pt"
    output.write_bytes(b"keep me")
    with pytest.raises(ExportError, match="--force"):
        export_checkpoint(laser, str(output))
    assert output.read_bytes() == b"keep me"

    before = {path: os.stat(path).st_mtime_ns for path in (laser, str(trained["wavlm_original"]))}
    for input_path in before:
        with pytest.raises(ExportError, match="input"):
            export_checkpoint(laser, input_path, force=True)
    assert before == {path: os.stat(path).st_mtime_ns for path in before}

    export_checkpoint(laser, str(output), force=True)
    assert load_checkpoint(str(output))["cfg"] == load_checkpoint(str(trained["wavlm_original"]))["cfg"]
    assert [name for name in os.listdir(tmp_path) if ".tmp-" in name] == []


def test_verification_catches_a_corrupted_merge(trained, tmp_path):
    corrupted = tmp_path / "corrupted.pt"
    state = load_checkpoint(str(trained["hubert_export"]))
    state["model"] = dict(state["model"])
    frozen_key = "encoder.layers.0.fc1.weight"
    state["model"][frozen_key] = state["model"][frozen_key].clone()
    state["model"][frozen_key][0, 0] += 1e-6
    torch.save(state, corrupted)
    with pytest.raises(ExportVerificationError, match="1 tensors differ"):
        verify_export(str(corrupted), str(trained["hubert_laser"]))
    verify_export(str(trained["hubert_export"]), str(trained["hubert_laser"]))  # the real one passes


def test_a_corrupted_write_is_never_left_in_place(trained, tmp_path, monkeypatch):
    real_save = torch.save

    def save_with_a_flipped_frozen_tensor(state, path):
        weights = dict(state["model"])
        weights["feature_extractor.conv_layers.0.0.weight"] = -weights["feature_extractor.conv_layers.0.0.weight"]
        real_save(dict(state, model=weights), path)

    monkeypatch.setattr(torch, "save", save_with_a_flipped_frozen_tensor)
    output = tmp_path / "out.pt"
    with pytest.raises(ExportVerificationError):
        export_checkpoint(str(trained["wavlm_laser"]), str(output))
    assert os.listdir(tmp_path) == []


def test_clear_errors_for_wrong_inputs(trained, tmp_path):
    laser = str(trained["hubert_laser"])
    with pytest.raises(ExportError, match="not a LASER training checkpoint"):
        export_checkpoint(str(trained["hubert_original"]), str(tmp_path / "a.pt"))

    moved = tmp_path / "moved_laser.pt"
    state = load_checkpoint(laser)
    state["cfg"]["model"]["upstream_path"] = str(tmp_path / "gone" / "tiny_hubert.pt")
    torch.save(state, moved)
    with pytest.raises(ExportError, match="--upstream"):
        export_checkpoint(str(moved), str(tmp_path / "b.pt"))
    export_checkpoint(str(moved), str(tmp_path / "b.pt"), upstream=str(trained["hubert_original"]))

    other_seed = tmp_path / "other_seed.pt"
    save_checkpoint(make_tiny_hubert(layers=LAYERS, dim=64, seed=7), str(other_seed))
    with pytest.raises(ExportError, match="not trained from"):
        export_checkpoint(laser, str(tmp_path / "c.pt"), upstream=str(other_seed))

    other_shape = tmp_path / "other_shape.pt"
    save_checkpoint(make_tiny_hubert(layers=LAYERS, dim=32), str(other_shape))
    with pytest.raises(ExportError, match="shape mismatches"):
        export_checkpoint(laser, str(tmp_path / "d.pt"), upstream=str(other_shape))

    with pytest.raises(ExportError, match="no weights of a wavlm upstream"):
        export_checkpoint(laser, str(tmp_path / "e.pt"), upstream=str(trained["wavlm_original"]))
    with pytest.raises(ExportError, match="--format unilm does not apply"):
        export_checkpoint(laser, str(tmp_path / "f.pt"), fmt="unilm")
    assert sorted(os.listdir(tmp_path)) == ["b.pt", "moved_laser.pt", "other_seed.pt", "other_shape.pt"]


def test_command_line(trained, tmp_path):
    script = Path(REPO) / "scripts" / "export_checkpoint.py"
    output = tmp_path / "cli.pt"
    argv = ["--checkpoint", str(trained["wavlm_laser"]), "--output", str(output)]
    first = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "blocks replaced : [2, 3]" in first.stdout and "sha256" in first.stdout

    with pytest.raises(SystemExit, match="pass --force"):  # the same command, in process
        main(argv)
