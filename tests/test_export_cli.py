"""The export's command line (laser_fairseq/cli/export_checkpoint.py, in process): flags passed through, the
summary printed, errors as the exit message.
"""

import os

import pytest
import torch

from export_files import edited_run, hubert, wavlm
from laser_fairseq.cli.export_checkpoint import main
from laser_fairseq.checkpoint_io import load_checkpoint
from laser_fairseq.files import sha256_of


@pytest.fixture(scope="module")
def cli():
    return main


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


def test_a_failed_verification_is_an_export_error_the_command_line_reports(cli, wavlm, tmp_path, monkeypatch):
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda state, path: real_save(dict(state, model={}), path))
    output = tmp_path / "out.pt"
    with pytest.raises(SystemExit) as exit:
        cli(["--checkpoint", wavlm.laser_path, "--output", str(output)])
    assert exit.value.code.startswith("error: ") and "its keys differ from the source upstream's" in exit.value.code
    assert os.listdir(tmp_path) == []
