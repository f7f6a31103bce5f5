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


def test_the_training_split_is_shuffled_with_fresh_perturbations_the_others_are_fixed(valid_task, tmp_path):
    valid = valid_task.datasets["valid"]
    assert valid.shuffle is False and valid.fixed_perturbations is True
    task = LaserTask(task_config(tmp_path))
    task.load_dataset("train")
    assert task.datasets["train"].shuffle is True and task.datasets["train"].fixed_perturbations is False


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


# ----------------------------------------------------------------------------------------------- a step


@pytest.fixture(scope="module")
def one_step(valid_task, tmp_path_factory):
    """A tiny LASER model, its criterion, fairseq's Adam over its trainable parameters and one valid batch."""
    from fairseq.optim.adam import FairseqAdam, FairseqAdamConfig
    from omegaconf import OmegaConf

    from laser_fairseq.criterions.laser_criterion import LaserCriterion, LaserCriterionConfig
    from laser_fairseq.models.laser_model import LaserModel, LaserModelConfig
    from laser_fairseq.tiny_upstream import make_tiny_hubert, save_checkpoint

    upstream = str(tmp_path_factory.mktemp("upstream") / "tiny_hubert.pt")
    save_checkpoint(make_tiny_hubert(), upstream)
    model = LaserModel.build_model(LaserModelConfig(upstream_path=upstream, trainable_layers=2))
    criterion = LaserCriterion(LaserCriterionConfig(soft_dtw_backend="torch"), valid_task)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = FairseqAdam(OmegaConf.structured(FairseqAdamConfig(lr=[1e-4], tpu=False)), trainable)
    sample = next(iter(batch_iterator(valid_task, max_sentences=2).next_epoch_itr(shuffle=False)))
    return model, criterion, optimizer, sample, trainable


def gradients_after_step(task, one_step, update_num, ignore_grad=False):
    model, criterion, optimizer, sample, trainable = one_step
    optimizer.zero_grad()
    flag = (ignore_grad,) if ignore_grad else ()  # fairseq's default, not passed: False
    loss, sample_size, logging_output = task.train_step(sample, model, criterion, optimizer, update_num, *flag)
    assert torch.isfinite(loss) and sample_size == logging_output["sample_size"] == 2
    assert model.training
    return [p.grad.abs().sum().item() for p in trainable if p.grad is not None]


def test_a_step_trains_and_a_stop_signal_ends_the_run_after_it(valid_task, one_step, tmp_path, caplog):
    """train_step is fairseq's step (forward, loss, backward, ignore_grad honoured) after asking the stop
    signals; a recorded signal sets the run's stop_time_hours so that fairseq stops after this update."""
    from omegaconf import OmegaConf

    from laser_fairseq.preemption import STOP_NOW_HOURS, StopSignals

    task = LaserTask(task_config(tmp_path))
    assert task.stop_signals is None  # built in Python: no launch, no signal handling
    model = one_step[0]
    seen = []
    model.set_num_updates = lambda n: seen.append(n)  # fairseq's step hands the update number to the model
    grads = gradients_after_step(task, one_step, update_num=5)
    assert seen == [5]
    del model.set_num_updates
    assert len(grads) == len(one_step[4]) and sum(grads) > 0
    assert sum(gradients_after_step(task, one_step, update_num=6, ignore_grad=True)) == 0

    run = OmegaConf.create({"optimization": {"stop_time_hours": 0.0}})
    task.stop_signals = StopSignals([], run)
    gradients_after_step(task, one_step, update_num=7)
    assert run.optimization.stop_time_hours == 0.0 and not task.stop_signals.stopping
    task.stop_signals.received = 10  # what the handler records on SIGUSR1
    assert sum(gradients_after_step(task, one_step, update_num=8)) > 0  # the update in progress still trains
    assert run.optimization.stop_time_hours == STOP_NOW_HOURS and task.stop_signals.stopping
    assert "received SIGUSR1: saving a checkpoint after update 9 and stopping" in caplog.text


def launch_config(save_dir, max_update=10, **task):
    """The task config as fairseq-hydra-train hands it over: a child of the whole run's config."""
    from omegaconf import OmegaConf

    run = OmegaConf.create({"optimization": {"max_update": max_update, "stop_time_hours": 0.0, "max_epoch": 0}})
    run.task = OmegaConf.structured(task_config(save_dir, **task))
    return run


def checkpoint_at(save_dir, num_updates: int) -> None:
    """A checkpoint_last.pt as fairseq's trainer writes it, reduced to what resuming reads."""
    os.makedirs(save_dir, exist_ok=True)
    torch.save({"model": {"w": torch.zeros(2)},
                "extra_state": {"train_iterator": {"epoch": 1, "iterations_in_epoch": 1, "version": 2}},
                "optimizer_history": [{"criterion_name": "LaserCriterion", "num_updates": num_updates}]},
               os.path.join(save_dir, LAST))


@pytest.mark.parametrize("done, expected_max_epoch", [(None, 0), (4, 0), (10, -1)])
def test_a_training_launch_handles_stop_signals_and_trains_nothing_when_finished(
        tmp_path, caplog, done, expected_max_epoch):
    import signal

    from laser_fairseq.preemption import StopSignals

    save_dir = str(tmp_path / "checkpoints")
    if done is not None:
        checkpoint_at(save_dir, done)
    run = launch_config(save_dir, stop_signals=["USR2"])
    before = signal.getsignal(signal.SIGUSR2)
    try:
        task = LaserTask.setup_task(run.task)
        assert isinstance(task.stop_signals, StopSignals) and task.stop_signals.signals == [signal.SIGUSR2]
        assert task.stop_signals.run_cfg is run and signal.getsignal(signal.SIGUSR2) == task.stop_signals._record
    finally:
        signal.signal(signal.SIGUSR2, before)
    assert run.optimization.max_epoch == expected_max_epoch  # -1: fairseq skips its epoch loop
    assert ("the run is finished, nothing is trained" in caplog.text) == (expected_max_epoch == -1)


def test_loading_a_trained_model_or_a_task_config_alone_handles_no_signal(tmp_path):
    checkpoint_at(str(tmp_path / "checkpoints"), 10)
    run = launch_config(str(tmp_path / "checkpoints"))
    assert LaserTask.setup_task(run.task, from_checkpoint=True).stop_signals is None
    assert run.optimization.max_epoch == 0
    assert LaserTask.setup_task(task_config(str(tmp_path / "checkpoints"))).stop_signals is None
