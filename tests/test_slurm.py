"""examples/laser/slurm/laser.sbatch's pre-emption path, run for real on CPU: signal -> save -> requeue -> same end.

The script runs as SLURM would start it (bash, SLURM_* variables set, the LASER_* settings in the
environment, hydra overrides as its arguments) on a tiny HuBERT with the demo config; only ``scontrol`` is a
stand-in on PATH that records its arguments. USR1 goes to the batch shell alone, as ``--signal=B:USR1``
sends it; the script's trap forwards it to the training. The interrupted job is started again with the same
command, as a requeued job is, and must end bit-identical (model and optimizer) to the same script run
uninterrupted. That finished run, started once more (a requeue that came after the end), must train
nothing. One torch thread per run; two runs at a time on the 2 cores.
"""

import os
import signal
import stat
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from laser_fairseq.preemption import StopSignalError, parse_signals, run_config
from laser_runs import REPO, assert_bit_identical, saved_update

SCRIPT = os.path.join(REPO, "examples", "laser", "slurm", "laser.sbatch")
MAX_UPDATE = 10
SIGNAL_AFTER = 3  # USR1 once update 3 is logged: the stop lands at update 4 or 5, well before the end
JOB_ID = "4242"


def job_environment(upstream, run_dir, bin_dir):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        SLURM_JOB_ID=JOB_ID, SLURM_NTASKS="1", SLURM_SUBMIT_DIR=REPO, SLURM_RESTART_COUNT="0",
        LASER_CONFIG="demo", LASER_DATA=os.path.join(REPO, "manifests", "demo"), LASER_UPSTREAM=upstream,
        LASER_RUN=str(run_dir), LASER_PAIRS="2", LASER_VENV=sys.prefix,
    )
    return env


OVERRIDES = [
    f"optimization.max_update={MAX_UPDATE}", f"lr_scheduler.total_num_update={MAX_UPDATE}",
    "task.max_sample_size=16000", "dataset.disable_validation=true", "common.log_interval=1",
]


def fake_scontrol(bin_dir):
    """An ``scontrol`` that appends its arguments to bin_dir/scontrol.calls."""
    os.makedirs(bin_dir, exist_ok=True)
    path = os.path.join(bin_dir, "scontrol")
    with open(path, "w") as handle:
        handle.write(f'#!/bin/bash\necho "$@" >> {os.path.join(bin_dir, "scontrol.calls")}\n')
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return os.path.join(bin_dir, "scontrol.calls")


def start_job(upstream, run_dir, bin_dir, log_name):
    log = open(os.path.join(run_dir, log_name), "w")
    process = subprocess.Popen(["bash", SCRIPT, *OVERRIDES], cwd=str(run_dir), stdout=log, stderr=subprocess.STDOUT,
                               env=job_environment(upstream, run_dir, bin_dir), start_new_session=True)
    log.close()
    return process


def finish(process, run_dir, log_name, timeout=300):
    status = process.wait(timeout=timeout)
    with open(os.path.join(run_dir, log_name)) as handle:
        output = handle.read()
    return status, output


def signal_batch_shell_when_logged(process, log_path, marker, timeout=300):
    """USR1 to the batch shell only (what --signal=B:USR1 does) once ``marker`` is in the log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log_path) as handle:
            if marker in handle.read():
                process.send_signal(signal.SIGUSR1)
                return
        assert process.poll() is None, f"the job ended before {marker!r} was logged"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError(f"{marker!r} not logged after {timeout} s")


@pytest.fixture(scope="module")
def jobs(upstream, tmp_path_factory):
    """(reference, pre-empted) run folders and the logs of every start of the script."""
    reference, preempted = tmp_path_factory.mktemp("reference"), tmp_path_factory.mktemp("preempted")
    calls = {}
    for run_dir in (reference, preempted):
        calls[run_dir] = fake_scontrol(str(run_dir / "bin"))
    first_reference = start_job(upstream, reference, reference / "bin", "job1.log")
    first = start_job(upstream, preempted, preempted / "bin", "job1.log")
    signal_batch_shell_when_logged(first, str(preempted / "job1.log"), f"num_updates={SIGNAL_AFTER},")
    logs = {"preempted": [finish(first, preempted, "job1.log")], "reference": [finish(first_reference, reference, "job1.log")]}
    stopped_at = saved_update(str(preempted / "checkpoints" / "checkpoint_last.pt"))
    last = reference / "checkpoints" / "checkpoint_last.pt"
    before = (last.read_bytes(), os.path.getmtime(last))
    # the requeued job, and a second start of the finished reference run, side by side
    second = start_job(upstream, preempted, preempted / "bin", "job2.log")
    again = start_job(upstream, reference, reference / "bin", "job2.log")
    logs["preempted"].append(finish(second, preempted, "job2.log"))
    logs["reference"].append(finish(again, reference, "job2.log"))
    return dict(reference=reference, preempted=preempted, logs=logs, calls=calls, stopped_at=stopped_at,
                reference_before=before)


def read_calls(path):
    return open(path).read().splitlines() if os.path.exists(path) else []


def test_usr1_saves_a_checkpoint_mid_run_and_requeues_the_job(jobs):
    status, output = jobs["logs"]["preempted"][0]
    assert status == 0, output[-4000:]
    assert SIGNAL_AFTER < jobs["stopped_at"] < MAX_UPDATE, output[-4000:]
    assert "received SIGUSR1: saving a checkpoint after update" in output
    assert f"Saved checkpoint {jobs['preempted'] / 'checkpoints' / 'checkpoint_last.pt'}" in output
    assert f"num_updates={jobs['stopped_at'] + 1}," not in output  # stopped, nothing trained after the save
    assert read_calls(jobs["calls"][jobs["preempted"]]) == [f"requeue {JOB_ID}"]


def test_the_requeued_job_resumes_and_ends_bit_identical_to_an_uninterrupted_run(jobs):
    status, output = jobs["logs"]["preempted"][1]
    assert status == 0, output[-4000:]
    stopped_at = jobs["stopped_at"]
    assert f"(epoch 1 @ {stopped_at} updates)" in output and f"num_updates={stopped_at + 1}," in output
    assert f"num_updates={stopped_at}," not in output
    reference_status, reference_output = jobs["logs"]["reference"][0]
    assert reference_status == 0 and "received SIGUSR1" not in reference_output, reference_output[-4000:]
    last = "checkpoints/checkpoint_last.pt"
    assert saved_update(str(jobs["preempted"] / last)) == saved_update(str(jobs["reference"] / last)) == MAX_UPDATE
    assert_bit_identical(str(jobs["reference"] / last), str(jobs["preempted"] / last))
    assert read_calls(jobs["calls"][jobs["preempted"]]) == [f"requeue {JOB_ID}"]  # not requeued again


def test_starting_a_finished_run_again_trains_nothing(jobs):
    status, output = jobs["logs"]["reference"][1]
    assert status == 0, output[-4000:]
    assert f"holds {MAX_UPDATE} updates, optimization.max_update={MAX_UPDATE}: the run is finished" in output
    assert "num_updates=" not in output and "Saved checkpoint" not in output
    last = jobs["reference"] / "checkpoints" / "checkpoint_last.pt"
    assert (last.read_bytes(), os.path.getmtime(last)) == jobs["reference_before"]
    assert read_calls(jobs["calls"][jobs["reference"]]) == []


def test_the_script_refuses_pairs_that_do_not_split_over_the_tasks(upstream, tmp_path):
    env = dict(job_environment(upstream, tmp_path, tmp_path), SLURM_NTASKS="3")
    result = subprocess.run(["bash", SCRIPT], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "2 pairs per update cannot be split over 3 tasks" in result.stderr


def test_stop_signal_names():
    assert [s.name for s in parse_signals(["USR1", "sigterm", "SIGINT"])] == ["SIGUSR1", "SIGTERM", "SIGINT"]
    for bad in ("SIGKILL", "USR3", "stop"):
        with pytest.raises(StopSignalError, match="is not a signal a process can handle"):
            parse_signals([bad])


def test_a_task_config_without_a_run_has_no_run_config():
    run = OmegaConf.create({"optimization": {"stop_time_hours": 0.0}, "task": {"data": "x"}})
    assert run_config(run.task) is run
    assert run_config(OmegaConf.create({"data": "x"})) is None
