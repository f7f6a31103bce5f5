"""fairseq data-parallel LASER training on 2 CPU ranks (gloo), launched with torchrun.

fairseq saves checkpoints on rank 0 only, so the runs go through tests/fairseq_rank_dump.py, which starts
fairseq-hydra-train unchanged and saves every rank's final model and optimizer state. Two backends:

- ``legacy_ddp``: fairseq's own gradient all-reduce, the backend that runs on CPU as is;
- ``pytorch_ddp`` (fairseq's default, what GPU runs use): torch's DistributedDataParallel with fairseq's
  ``find_unused_parameters=False``. torch refuses ``device_ids`` for a CPU module, so the harness drops them
  (``--cpu-ddp``); everything else is fairseq's GPU code path. DDP raises at the second update if a parameter
  that requires grad gets none; the frozen trunk has requires_grad=False, so it must stay silent.

A stop signal (task.stop_signals) sent to one rank only stops both after the same update.
"""

import os
import socket
import subprocess
import sys

import pytest
import torch

from laser_fairseq.checkpoint_io import load_checkpoint
from laser_fairseq.hydra_command import Verbatim, hydra_train_command, run_folder_overrides
from laser_fairseq.tiny_upstream import make_tiny_hubert, save_checkpoint
from laser_fairseq.checkout import REPO

TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")
HARNESS = os.path.join(REPO, "tests", "fairseq_rank_dump.py")
MAX_UPDATE = 3
TRAINED_BLOCKS = ("encoder.layers.2.", "encoder.layers.3.")  # the top K=2 of the tiny model's 4 blocks


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun_command(upstream, run_dir, ddp_backend):
    harness_options = ["--cpu-ddp"] if ddp_backend == "pytorch_ddp" else []
    return [
        TORCHRUN, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        HARNESS, os.path.join(run_dir, "ranks"), *harness_options,
        *hydra_train_command(os.path.join(REPO, "examples", "laser", "config"), "demo", {
            "task.data": os.path.join(REPO, "manifests", "demo"),
            "model.upstream_path": upstream,
            **run_folder_overrides(run_dir),
            "hydra.run.dir": Verbatim(os.path.join(run_dir, "hydra") + "${oc.env:RANK}"),  # one folder a rank
            "optimization.max_update": MAX_UPDATE,
            "dataset.disable_validation": True,
            "common.log_interval": 1,
            "distributed_training.distributed_world_size": 2,
            "distributed_training.distributed_rank": Verbatim("${oc.env:RANK}"),  # from torchrun's environment
            "distributed_training.distributed_init_method": "env://",
            "distributed_training.distributed_no_spawn": True,
            "distributed_training.distributed_backend": "gloo",
            "distributed_training.ddp_backend": ddp_backend,
        })[1:],  # the harness runs fairseq-hydra-train's main itself: its arguments without the executable
    ]


def run_two_ranks(upstream, run_dir, ddp_backend):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    done = subprocess.run(torchrun_command(upstream, run_dir, ddp_backend), cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    with open(os.path.join(run_dir, "run.log"), "w") as log:
        log.write(done.stdout)
    assert done.returncode == 0, done.stdout[-5000:]
    ranks = [torch.load(os.path.join(run_dir, "ranks", f"rank{r}.pt"), weights_only=False) for r in (0, 1)]
    return {"output": done.stdout, "ranks": ranks, "checkpoint": os.path.join(run_dir, "checkpoints", "checkpoint_last.pt")}


@pytest.fixture(scope="module")
def runs(upstream, tmp_path_factory):
    return {backend: run_two_ranks(upstream, str(tmp_path_factory.mktemp(backend)), backend)
            for backend in ("legacy_ddp", "pytorch_ddp")}


def differing_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    return [key for key in a if not torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key]))]


def assert_same_optimizer_state(a: dict, b: dict):
    assert a["state"].keys() == b["state"].keys()
    for index in a["state"]:
        assert not differing_tensors(a["state"][index], b["state"][index]), index


@pytest.mark.parametrize("backend", ["legacy_ddp", "pytorch_ddp"])
def test_both_ranks_train_together_and_end_with_identical_parameters(runs, backend):
    run = runs[backend]
    rank0, rank1 = run["ranks"]
    assert (rank0["rank"], rank1["rank"]) == (0, 1)
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["num_updates"] == rank1["num_updates"] == MAX_UPDATE
    assert "bsz=16" in run["output"]  # 8 pairs per rank, summed over both ranks in each logged update
    assert not differing_tensors(rank0["model"], rank1["model"])
    assert_same_optimizer_state(rank0["optimizer"], rank1["optimizer"])
    saved = load_checkpoint(run["checkpoint"])["model"]  # rank 0's checkpoint_last.pt
    assert not differing_tensors(saved, rank0["model"])


def test_pytorch_ddp_runs_without_find_unused_parameters(runs):
    rank0 = runs["pytorch_ddp"]["ranks"][0]
    assert rank0["wrapper"] == "CpuDistributedDataParallel"
    assert rank0["find_unused_parameters"] is False
    # DDP's complaint about parameters without gradients (it would stop the run at update 2)
    assert "Expected to have finished reduction" not in runs["pytorch_ddp"]["output"]
    assert runs["legacy_ddp"]["ranks"][0]["wrapper"] == "LegacyDistributedDataParallel"


def test_only_the_top_blocks_and_head_changed(runs, upstream):
    initial = load_checkpoint(upstream)["model"]
    trained = runs["pytorch_ddp"]["ranks"][0]["model"]
    for key, value in initial.items():
        after = trained[f"upstream.model.{key}"]
        if key.startswith(TRAINED_BLOCKS) and value.is_floating_point():
            assert not torch.equal(after, value), f"{key} was not trained"
        else:
            assert torch.equal(after, value), f"frozen {key} changed"


def test_both_backends_average_gradients_the_same_way(runs):
    legacy, ddp = runs["legacy_ddp"]["ranks"][0]["model"], runs["pytorch_ddp"]["ranks"][0]["model"]
    for key in legacy:
        torch.testing.assert_close(ddp[key], legacy[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("kind", ["hubert", "wavlm"])
@pytest.mark.parametrize("trainable_layers", [1, 2, 4])
def test_every_trainable_parameter_gets_a_gradient(tmp_path, kind, trainable_layers):
    """DDP's condition for find_unused_parameters=False, for both upstream kinds and any K (in process)."""
    from laser_fairseq.criterions.laser_criterion import LaserCriterion, LaserCriterionConfig
    from laser_fairseq.models.laser_model import LaserModel, LaserModelConfig
    from laser_fairseq.tiny_upstream import make_tiny_wavlm

    path = str(tmp_path / f"tiny_{kind}.pt")
    save_checkpoint(make_tiny_hubert() if kind == "hubert" else make_tiny_wavlm(), path)
    model = LaserModel.build_model(LaserModelConfig(upstream_path=path, trainable_layers=trainable_layers)).train()
    generator = torch.Generator().manual_seed(0)
    source_a, source_b = torch.randn(2, 6000, generator=generator), torch.randn(2, 5400, generator=generator)
    padding_a = torch.zeros(2, 6000, dtype=torch.bool)
    padding_a[1, 4000:] = True
    sample = {"net_input": {"source_a": source_a, "padding_mask_a": padding_a, "source_b": source_b,
                            "padding_mask_b": None}}
    loss, _, _ = LaserCriterion(LaserCriterionConfig(), task=None)(model, sample)
    loss.backward()
    without_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    frozen_with_grad = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
    assert not without_grad and not frozen_with_grad
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("head.") for n in trainable)
    assert all(n.startswith("head.") or ".layers." in n for n in trainable)


def rank_pid(launcher_pid: int, rank: int) -> int:
    """The pid of the process torchrun started with RANK=rank (read from /proc)."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{name}/environ", "rb") as environ:
                variables = environ.read().split(b"\0")
        except OSError:
            continue
        if parent == launcher_pid and f"RANK={rank}".encode() in variables:
            return int(name)
    raise AssertionError(f"no process with RANK={rank} under {launcher_pid}")


def test_a_stop_signal_to_one_rank_stops_both_after_the_same_update(upstream, tmp_path):
    """USR1 to rank 1 only: the ranks agree (all_reduce) and both stop after the same update; rank 0 saves."""
    import signal
    import time

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    command = [arg.replace(f"max_update={MAX_UPDATE}", "max_update=40") for arg in
               torchrun_command(upstream, str(tmp_path), "legacy_ddp")]
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while "num_updates=2," not in log_path.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-4000:]
        time.sleep(0.05)
    os.kill(rank_pid(process.pid, 1), signal.SIGUSR1)
    assert process.wait(timeout=300) == 0, log_path.read_text()[-4000:]
    output = log_path.read_text()
    assert "received SIGUSR1: saving a checkpoint" in output
    assert "received a signal on another rank: saving a checkpoint" in output
    ranks = [torch.load(str(tmp_path / "ranks" / f"rank{r}.pt"), weights_only=False) for r in (0, 1)]
    stopped = ranks[0]["num_updates"]
    assert 2 < stopped < 40 and ranks[1]["num_updates"] == stopped
    assert load_checkpoint(str(tmp_path / "checkpoints" / "checkpoint_last.pt"))["optimizer_history"][-1]["num_updates"] == stopped
