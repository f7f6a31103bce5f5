"""Running real `fairseq-hydra-train` LASER jobs from tests, and reading back what they wrote."""

import os
import subprocess
from typing import List, Sequence, Tuple

import torch

from laser_fairseq.checkpoint_io import load_checkpoint
# what `make demo` runs and reads, and what laser-gpu-check checks of a run
from laser_fairseq.demo import check_laser_run, demo_train_command, logged_values  # noqa: F401
from laser_fairseq.tiny_upstream import save_checkpoint
from laser_fairseq.checkout import REPO


def save_tiny_upstreams(folder, makers) -> dict:
    """Write ``makers[name]()`` (a tiny upstream checkpoint dict) to ``folder/name.pt`` -> {name: path}."""
    paths = {}
    for name, make in makers.items():
        paths[name] = os.path.join(str(folder), f"{name}.pt")
        save_checkpoint(make(), paths[name])
    return paths


def saved_update(checkpoint_path):
    state = load_checkpoint(checkpoint_path)
    return state["optimizer_history"][-1]["num_updates"]


def assert_bit_identical(path_a, path_b):
    """torch.equal on every tensor of the model state and of the optimizer state."""
    a, b = load_checkpoint(path_a), load_checkpoint(path_b)
    assert a["model"].keys() == b["model"].keys()
    different = [key for key in a["model"] if not torch.equal(a["model"][key], b["model"][key])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:5]}"
    optimizer_a, optimizer_b = a["last_optimizer_state"]["state"], b["last_optimizer_state"]["state"]
    assert optimizer_a.keys() == optimizer_b.keys()
    for index in optimizer_a:
        for name, value in optimizer_a[index].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(optimizer_b[index][name])), (index, name)


ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def run_side_by_side(commands: Sequence[Sequence[str]], logs: Sequence[str], env=None, timeout=900) -> List[Tuple[int, str]]:
    """Start every command at once (with 2 cores, two runs side by side take about the time of one), output
    (stdout + stderr) to its log; wait for all -> [(returncode, output)] in order. Failures are the caller's."""
    processes = []
    for command, log_path in zip(commands, logs):
        with open(log_path, "w") as log:
            processes.append(subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env))
    results = []
    try:
        for process, log_path in zip(processes, logs):
            process.wait(timeout=timeout)
            with open(log_path) as log:
                results.append((process.returncode, log.read()))
    finally:  # never leave a run behind when one times out
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def run_laser_trainings(jobs: Sequence[Tuple[str, str, int, Sequence[str]]]) -> List[str]:
    """``jobs``: (upstream, run_dir, max_update, overrides) each; all run side by side with one thread each.
    Returns their outputs; the test fails with the output of a run that failed (logs: run_dir/run-MAX.log)."""
    commands = [demo_train_command(upstream, run_dir, max_update, overrides)
                for upstream, run_dir, max_update, overrides in jobs]
    logs = [os.path.join(run_dir, f"run-{max_update}.log") for _, run_dir, max_update, _ in jobs]
    results = run_side_by_side(commands, logs, env=dict(os.environ, **ONE_THREAD))
    for (returncode, output), log in zip(results, logs):
        assert returncode == 0, f"{log}:\n{output[-4000:]}"
    return [output for _, output in results]
