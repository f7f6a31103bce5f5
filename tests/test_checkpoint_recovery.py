"""ensure_resumable: a checkpoint_last.pt torn by a killed copy is replaced by the newest intact checkpoint,
nothing is deleted, and what cannot be repaired is refused with the reason, leaving the folder untouched.

The real kill-and-resume run (bit-identical to an uninterrupted run) is in test_resume.py."""

import hashlib
import logging
import os
import shutil

import pytest
import torch

from laser_fairseq.checkpoint_io import CheckpointError
from laser_fairseq.checkpoint_recovery import ResumePoint, ensure_resumable


class Unlisted:
    """A class outside the weights-only allow-list."""


def training_state(num_updates: int, epoch: int) -> dict:
    """What fairseq's trainer writes, reduced to the parts resuming reads."""
    weights = torch.full((64, 64), float(num_updates))
    return {
        "model": {"w": weights},
        "optimizer_history": [{"criterion_name": "LaserCriterion", "num_updates": num_updates}],
        "extra_state": {"train_iterator": {"epoch": epoch, "iterations_in_epoch": 1, "version": 2}},
        "last_optimizer_state": {"state": {0: {"exp_avg": weights.clone()}}},
    }


def save(folder, name: str, state, mtime: float) -> str:
    path = os.path.join(folder, name)
    torch.save(state, path)
    os.utime(path, (mtime, mtime))
    return path


def tear(path: str, keep: int = None) -> None:
    """Truncate ``path`` as a killed copy leaves it (half its size unless ``keep`` bytes are given)."""
    os.truncate(path, os.path.getsize(path) // 2 if keep is None else keep)


def snapshot(folder) -> dict:
    """{file name: sha256} of a folder."""
    return {name: hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(folder))}


@pytest.fixture
def run(tmp_path):
    """A save_dir as fairseq leaves it after the save at update 10: checkpoint_1_5.pt, checkpoint_2_10.pt and
    checkpoint_last.pt (a copy of checkpoint_2_10.pt, written last)."""
    folder = str(tmp_path / "checkpoints")
    os.makedirs(folder)
    save(folder, "checkpoint_1_5.pt", training_state(5, 1), 1000)
    newest = save(folder, "checkpoint_2_10.pt", training_state(10, 2), 2000)
    last = os.path.join(folder, "checkpoint_last.pt")
    shutil.copyfile(newest, last)
    os.utime(last, (2001, 2001))
    return folder


def test_an_intact_checkpoint_last_is_used_as_it_is(run):
    before = snapshot(run)
    point = ensure_resumable(run)
    assert point == ResumePoint(os.path.join(run, "checkpoint_last.pt"), epoch=2, num_updates=10)
    assert snapshot(run) == before


@pytest.mark.parametrize("keep", [None, 0, 1, -1], ids=["half", "empty", "one byte", "all but one byte"])
def test_a_torn_checkpoint_last_is_replaced_by_the_newest_intact_checkpoint(run, keep, caplog):
    last = os.path.join(run, "checkpoint_last.pt")
    tear(last, None if keep is None else (keep if keep >= 0 else os.path.getsize(last) + keep))
    before = snapshot(run)
    with caplog.at_level(logging.WARNING, logger="laser_fairseq.checkpoint_recovery"):
        point = ensure_resumable(run)
    newest = os.path.join(run, "checkpoint_2_10.pt")
    assert point == ResumePoint(last, epoch=2, num_updates=10, restored_from=newest)
    after = snapshot(run)
    (aside,) = [name for name in after if name.startswith("checkpoint_last.pt.torn-")]
    assert after[aside] == before["checkpoint_last.pt"]  # the torn file is kept, byte for byte
    assert after["checkpoint_last.pt"] == before["checkpoint_2_10.pt"]
    assert {name: after[name] for name in before if name != "checkpoint_last.pt"} == {
        name: digest for name, digest in before.items() if name != "checkpoint_last.pt"}
    assert torch.load(last, weights_only=True)["optimizer_history"][-1]["num_updates"] == 10
    (warning,) = [record.getMessage() for record in caplog.records]
    assert last in warning and os.path.join(run, aside) in warning and newest in warning


def test_a_torn_best_checkpoint_met_on_the_way_is_moved_aside(run):
    last = os.path.join(run, "checkpoint_last.pt")
    tear(last)
    best = os.path.join(run, "checkpoint_best.pt")
    shutil.copyfile(os.path.join(run, "checkpoint_2_10.pt"), best)
    tear(best)
    os.utime(best, (2000.5, 2000.5))  # copied after checkpoint_2_10.pt, before checkpoint_last.pt
    point = ensure_resumable(run)
    assert point.restored_from == os.path.join(run, "checkpoint_2_10.pt")
    names = os.listdir(run)
    assert "checkpoint_best.pt" not in names
    assert any(name.startswith("checkpoint_best.pt.torn-") for name in names)


def test_a_checkpoint_saved_after_checkpoint_last_wins_when_it_has_more_updates(run):
    """A kill between a save's atomic write and its copy: checkpoint_last.pt is intact but one save behind."""
    last = os.path.join(run, "checkpoint_last.pt")
    shutil.copyfile(os.path.join(run, "checkpoint_1_5.pt"), last)
    os.utime(last, (1001, 1001))
    point = ensure_resumable(run)
    assert (point.num_updates, point.restored_from) == (10, os.path.join(run, "checkpoint_2_10.pt"))
    assert any(name.startswith("checkpoint_last.pt.older-") for name in os.listdir(run))


def test_a_newer_file_with_fewer_updates_does_not_replace_checkpoint_last(run):
    """Modification times only choose which files to open; the update counts decide."""
    os.utime(os.path.join(run, "checkpoint_1_5.pt"), (3000, 3000))  # e.g. copied in by hand later
    before = snapshot(run)
    assert ensure_resumable(run).restored_from is None
    assert snapshot(run) == before


def test_no_intact_checkpoint_is_refused_with_what_to_do_and_nothing_changes(tmp_path):
    folder = str(tmp_path)
    last = save(folder, "checkpoint_last.pt", training_state(10, 2), 2000)
    tear(last)
    best = save(folder, "checkpoint_best.pt", training_state(10, 2), 1999)
    tear(best)
    before = snapshot(folder)
    with pytest.raises(CheckpointError) as error:
        ensure_resumable(folder)
    message = str(error.value)
    assert last in message and "no intact checkpoint" in message and "checkpoint_best.pt" in message
    assert "to start from scratch, move" in message.lower() and "checkpoint.restore_file" in message
    assert snapshot(folder) == before


def test_a_complete_file_that_cannot_be_read_is_not_taken_for_a_torn_copy(run):
    last = os.path.join(run, "checkpoint_last.pt")
    state = training_state(10, 2)
    state["extra_state"]["unlisted"] = Unlisted()
    torch.save(state, last)
    before = snapshot(run)
    with pytest.raises(CheckpointError, match="Unlisted") as error:
        ensure_resumable(run)
    assert "allow-list" in str(error.value)
    assert snapshot(run) == before


def test_a_file_without_a_training_state_is_refused(run):
    last = os.path.join(run, "checkpoint_last.pt")
    torch.save({"model": {"w": torch.zeros(2)}}, last)
    with pytest.raises(CheckpointError, match="not a fairseq training checkpoint"):
        ensure_resumable(run)


def test_without_checkpoint_last_nothing_is_resumed_and_the_overwrite_is_announced(run, caplog):
    os.remove(os.path.join(run, "checkpoint_last.pt"))
    before = snapshot(run)
    with caplog.at_level(logging.WARNING, logger="laser_fairseq.checkpoint_recovery"):
        assert ensure_resumable(run) is None
    assert snapshot(run) == before
    assert "checkpoint_2_10.pt" in caplog.text and "starts from scratch" in caplog.text


def test_an_empty_or_missing_folder_means_a_fresh_start(tmp_path):
    assert ensure_resumable(str(tmp_path)) is None
    assert ensure_resumable(str(tmp_path / "not_yet_created")) is None


def test_unfinished_writes_are_named_in_a_warning_and_never_read(run, caplog):
    """A kill during fairseq's save leaves ``checkpoint_E_U.pt.tmp``, one during a restore (files.atomic_path)
    ``checkpoint_last.pt.tmp-<pid>``: neither is taken for a checkpoint, both are named."""
    leftovers = [os.path.join(run, "checkpoint_3_15.pt.tmp"), os.path.join(run, "checkpoint_last.pt.tmp-4321")]
    for path in leftovers:
        save(run, os.path.basename(path), training_state(15, 3), 3000)
    tear(os.path.join(run, "checkpoint_last.pt"))
    with caplog.at_level(logging.WARNING, logger="laser_fairseq.checkpoint_recovery"):
        point = ensure_resumable(run)
    assert point.restored_from == os.path.join(run, "checkpoint_2_10.pt") and point.num_updates == 10
    unfinished = [record.getMessage() for record in caplog.records if "unfinished write" in record.getMessage()]
    assert [message.split(" is ")[0] for message in unfinished] == sorted(leftovers)
    assert all(os.path.exists(path) for path in leftovers)
