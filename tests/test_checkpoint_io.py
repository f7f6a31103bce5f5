"""Checkpoint reading keeps no link to the file: fairseq copies new checkpoints over checkpoint_last.pt in
place (shutil.copyfile), and tensors a caller holds must not change under it."""

import shutil

import torch

from laser_fairseq.checkpoint_io import load_checkpoint


def test_loaded_tensors_survive_the_file_being_rewritten_in_place(tmp_path):
    first, second = tmp_path / "first.pt", tmp_path / "second.pt"
    torch.save({"model": {"w": torch.arange(4096, dtype=torch.float32)}}, first)
    torch.save({"model": {"w": torch.full((4096,), 7.0)}}, second)
    loaded = load_checkpoint(str(first))
    shutil.copyfile(second, first)  # what fairseq does to checkpoint_last.pt
    assert torch.equal(loaded["model"]["w"], torch.arange(4096, dtype=torch.float32))
