"""The ``laser`` task in-process: its batch iterator and its start-up repair of a torn checkpoint.

The fairseq-hydra-train runs of tests/test_training.py exercise the same code end to end; these tests pin
each decision of the task in a second or less, so that a wrong branch fails here first.
"""

import datetime
import os

import pytest
import torch
import torch.multiprocessing as mp

from laser_fairseq.checkpoint_io import CheckpointError
from laser_fairseq.checkpoint_recovery import LAST
from laser_fairseq.tasks.laser_task import LaserTask, LaserTaskConfig

import gloo_peer

DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "manifests", "demo")


def task_config(save_dir, restore_file=LAST, **overrides) -> LaserTaskConfig:
    return LaserTaskConfig(
        data=DEMO, seed=3, train_subset="train", max_sample_size=16_000, save_dir=str(save_dir),
        restore_file=restore_file, **overrides,
    )


def torn_checkpoint_last(folder) -> str:
    """A checkpoint_last.pt cut short by a kill, with no intact checkpoint beside it."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LAST)
    with open(path, "wb") as f:
        f.write(b"PK\x03\x04 a zip archive cut short")
    return path


# ---------------------------------------------------------------------------------------- batch iterator


@pytest.fixture(scope="module")
def valid_task(tmp_path_factory):
    task = LaserTask(task_config(tmp_path_factory.mktemp("save")))
    task.load_dataset("valid")
    return task


def batch_iterator(task, **kwargs):
    return task.get_batch_iterator(
        dataset=task.datasets["valid"], max_tokens=200_000, max_positions=task.max_positions(), seed=1, **kwargs
    )


@pytest.mark.parametrize("buffer_size", [1, 10])
def test_without_workers_there_is_no_prefetch_thread_and_batches_still_come(valid_task, buffer_size):
    assert batch_iterator(valid_task, data_buffer_size=buffer_size).buffer_size == 0  # fairseq's default: 0 workers
    iterator = batch_iterator(valid_task, num_workers=0, data_buffer_size=buffer_size)
    assert iterator.buffer_size == 0
    batches = list(iterator.next_epoch_itr(shuffle=False))
    dataset = valid_task.datasets["valid"]
    assert sorted(i for b in batches for i in b["id"].tolist()) == list(range(len(dataset)))
    for batch in batches:
        assert set(batch["net_input"]) == {"source_a", "source_b", "padding_mask_a", "padding_mask_b"}


def test_with_workers_fairseqs_prefetch_buffer_is_kept(valid_task):
    assert batch_iterator(valid_task, num_workers=1, data_buffer_size=10).buffer_size == 10
    assert batch_iterator(valid_task, num_workers=0).buffer_size == 0


def test_positional_arguments_reach_fairseq(valid_task):
    iterator = valid_task.get_batch_iterator(valid_task.datasets["valid"], 200_000, 2)
    assert max(len(b["id"]) for b in iterator.next_epoch_itr(shuffle=False)) == 2  # max_sentences=2


# ---------------------------------------------------------------------------------------------- set-up


def test_a_training_launch_repairs_checkpoint_last_before_fairseq_reads_it(tmp_path):
    torn_checkpoint_last(tmp_path)
    with pytest.raises(CheckpointError, match="torn copy"):  # nothing intact to restore: refused, named
        LaserTask.setup_task(task_config(tmp_path))


def test_loading_a_trained_model_or_another_restore_file_leaves_the_save_dir_alone(tmp_path):
    path = torn_checkpoint_last(tmp_path)
    torn = open(path, "rb").read()
    assert isinstance(LaserTask.setup_task(task_config(tmp_path), from_checkpoint=True), LaserTask)
    assert isinstance(LaserTask.setup_task(task_config(tmp_path, restore_file="/elsewhere/model.pt")), LaserTask)
    assert os.listdir(tmp_path) == [LAST] and open(path, "rb").read() == torn


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")
@pytest.mark.parametrize("rank", [0, 1])
def test_only_rank_zero_checks_the_save_dir_and_both_ranks_get_its_answer(tmp_path, rank, caplog):
    """This process is one rank of two (the other, spawned, only takes part in the broadcast of rank 0's
    answer). The save dir holds a checkpoint but no checkpoint_last.pt: the check warns that fairseq will
    start from scratch, on rank 0 only, and both ranks learn that there is nothing to resume from."""
    save_dir = tmp_path / "save"
    save_dir.mkdir()
    (save_dir / "checkpoint_3_300.pt").write_bytes(b"never read: there is no checkpoint_last.pt")
    init_file = str(tmp_path / "init")
    answer_file = str(tmp_path / "peer_answer.json")
    peer = mp.get_context("spawn").Process(target=gloo_peer.join_the_resume_broadcast,
                                           args=(1 - rank, 2, init_file, answer_file))
    peer.start()
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60)
    )
    try:
        with caplog.at_level("WARNING", logger="laser_fairseq.checkpoint_recovery"):
            LaserTask.setup_task(task_config(save_dir))
    finally:
        torch.distributed.destroy_process_group()
        peer.join(timeout=60)
    assert peer.exitcode == 0  # the peer got past the broadcast: this rank took part in it too
    if rank == 0:
        assert open(answer_file).read() == "null"  # what the peer received: nothing to resume from
    warned = "fairseq starts from scratch and will overwrite them" in caplog.text
    assert warned == (rank == 0)
