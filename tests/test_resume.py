"""A LASER run killed with SIGKILL and restarted with the same command ends bit-identical to an uninterrupted one,
also when the kill tore checkpoint_last.pt (the task then resumes from the newest intact checkpoint).

All runs use one torch/numba thread (same arithmetic in every run, and two runs fit the 2 cores side by side).
fairseq reseeds torch with ``seed + num_updates`` before every update, the dataset seeds each item with
(seed, epoch, index), and checkpoint_last.pt carries the model, the optimizer, the LR scheduler and the
position in the epoch, so nothing that decides the remaining updates is lost with the process. fairseq
does not store RNG states in checkpoints: it reseeds torch with ``seed + num_updates`` before every update
(``Trainer._set_seed``), which is what makes dropout after a restart identical.
"""

import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from laser_fairseq.hydra_command import hydra_train_command, run_folder_overrides
from laser_runs import assert_bit_identical, saved_update
from laser_fairseq.checkout import REPO

# The demo's 65 training pairs make 9 batches of 8: epoch 1 is updates 1-9, epoch 2 starts at update 10.
# Saves at updates 5, 9 (end of epoch 1), 10 and 15. The run is killed as soon as the save at update 10
# is logged, i.e. somewhere in update 11, five updates before the next save: checkpoint_last.pt is then
# one batch into epoch 2, so the resumed run must rebuild epoch 2's batch order and skip the batch done.
MAX_UPDATE = 15
SAVE_EVERY = 5
RESUMED_FROM = 10
KILL_MARKER = f"(epoch 2 @ {RESUMED_FROM} updates"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def train_command(upstream, run_dir, num_workers):
    keyed = {
        "task.data": os.path.join(REPO, "manifests", "demo"),
        "model.upstream_path": upstream,
        **run_folder_overrides(run_dir),
        "optimization.max_update": MAX_UPDATE,
        "lr_scheduler.total_num_update": MAX_UPDATE,
        "checkpoint.save_interval_updates": SAVE_EVERY,
        "dataset.num_workers": num_workers,
        "task.max_sample_size": 16000,  # 1 s crops: cheaper updates, and the random crop is exercised
        "dataset.disable_validation": True,
        "common.log_interval": 1,
    }
    return hydra_train_command(os.path.join(REPO, "examples", "laser", "config"), "demo", keyed)


def start(command, log_path):
    """Start a run in its own process group, output (stdout + stderr) to ``log_path``."""
    env = dict(os.environ, **ONE_THREAD)
    log = open(log_path, "w")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    log.close()
    return process


def finish(process, log_path, timeout=400):
    process.wait(timeout=timeout)
    with open(log_path) as handle:
        output = handle.read()
    assert process.returncode == 0, output[-4000:]
    return output


def kill_when_logged(process, log_path, marker, timeout=400):
    """SIGKILL the whole process group (trainer and data workers) as soon as ``marker`` is logged."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log_path) as handle:
            output = handle.read()
        if marker in output:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return output
        assert process.poll() is None, f"run ended before logging {marker!r}:\n{output[-4000:]}"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError(f"{marker!r} not logged after {timeout} s")


def killed_and_resumed(upstream, run_dir, num_workers, tear_last=False):
    """Run until the save at RESUMED_FROM, SIGKILL, restart the same command; returns (checkpoint_last.pt, log).

    ``tear_last``: before restarting, truncate checkpoint_last.pt to half its size, as a kill during fairseq's
    plain copy of checkpoint_E_U.pt to checkpoint_last.pt leaves it.
    """
    command = train_command(upstream, str(run_dir), num_workers)
    first_log = str(run_dir / "first.log")
    first = start(command, first_log)
    kill_when_logged(first, first_log, KILL_MARKER)
    last = str(run_dir / "checkpoints" / "checkpoint_last.pt")
    assert saved_update(last) == RESUMED_FROM, "the kill must land between two checkpoint saves"
    if tear_last:
        os.truncate(last, os.path.getsize(last) // 2)
    resumed_log = str(run_dir / "resumed.log")
    output = finish(start(command, resumed_log), resumed_log)
    assert f"Loaded checkpoint {last} (epoch 2 @ {RESUMED_FROM} updates)" in output
    assert f"num_updates={RESUMED_FROM}," not in output and f"num_updates={RESUMED_FROM + 1}," in output
    assert saved_update(last) == MAX_UPDATE
    return last, output


def uninterrupted(upstream, run_dir):
    log = str(run_dir / "run.log")
    finish(start(train_command(upstream, str(run_dir), 0), log), log)
    return str(run_dir / "checkpoints" / "checkpoint_last.pt")


@pytest.fixture(scope="module")
def runs(upstream, tmp_path_factory):
    """Every run of this file, two at a time (one thread each: 2 cores): an uninterrupted one and three killed and
    resumed ones (num_workers=0; num_workers=1; num_workers=0 over a torn checkpoint_last.pt). Each test takes
    the result of the runs it checks (``.result()`` raises what failed in that run)."""
    folders = {name: tmp_path_factory.mktemp(name) for name in ("reference", "resumed0", "resumed1", "torn")}
    jobs = {
        "reference": lambda: uninterrupted(upstream, folders["reference"]),
        "resumed0": lambda: killed_and_resumed(upstream, folders["resumed0"], 0),
        "resumed1": lambda: killed_and_resumed(upstream, folders["resumed1"], 1),
        "torn": lambda: killed_and_resumed(upstream, folders["torn"], 0, tear_last=True),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
    return {"futures": futures, "folders": folders}


def test_killed_and_resumed_run_is_bit_identical_to_an_uninterrupted_one(runs):
    reference = runs["futures"]["reference"].result()
    resumed, _ = runs["futures"]["resumed0"].result()
    assert saved_update(reference) == MAX_UPDATE
    assert_bit_identical(reference, resumed)


def test_resume_with_a_data_loader_worker_is_bit_identical_too(runs):
    reference = runs["futures"]["reference"].result()
    resumed, _ = runs["futures"]["resumed1"].result()
    assert_bit_identical(reference, resumed)


def test_resume_over_a_torn_checkpoint_last_uses_the_newest_intact_one_and_is_bit_identical(runs):
    reference = runs["futures"]["reference"].result()
    resumed, output = runs["futures"]["torn"].result()
    checkpoints = runs["folders"]["torn"] / "checkpoints"
    (aside,) = [name for name in os.listdir(checkpoints) if name.startswith("checkpoint_last.pt.torn-")]
    warning = next(line for line in output.splitlines() if "is a torn copy" in line)
    intact = str(checkpoints / f"checkpoint_2_{RESUMED_FROM}.pt")
    assert resumed in warning and str(checkpoints / aside) in warning and intact in warning, warning
    assert_bit_identical(reference, resumed)
