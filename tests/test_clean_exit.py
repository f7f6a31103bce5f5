"""A finished run without data workers exits cleanly.

With ``dataset.num_workers=0`` fairseq would prefetch batches in a daemon thread (``dataset.data_buffer_size``
batches ahead) that is often still perturbing audio inside torch when a short run ends; the interpreter
then aborts the finished run at exit (``terminate called without an active exception``, exit 134). The
``laser`` task makes batches in the main process when there are no workers, whatever data_buffer_size says.
"""

import os

import pytest

from laser_runs import REPO, demo_train_command, run_side_by_side

DEMO = os.path.join(REPO, "manifests", "demo")

RUNS = 5
REPEATS = 8  # the demo's training list, 8 times over: more batches than fairseq's largest prefetch buffer (20)


def overrides(data: str):
    """One update of 16 pairs while the prefetch thread (without the fix) would make 20 batches more."""
    return [
        f"task.data={data}",
        "dataset.num_workers=0",
        "dataset.data_buffer_size=20",
        "dataset.batch_size=16",
        "dataset.disable_validation=true",
        "lr_scheduler.total_num_update=1",
    ]


@pytest.fixture(scope="module")
def long_manifest(tmp_path_factory):
    """A train.tsv listing the demo corpus REPEATS times (absolute root)."""
    folder = tmp_path_factory.mktemp("manifest")
    with open(os.path.join(DEMO, "train.tsv")) as handle:
        lines = handle.read().splitlines()
    root = os.path.join(DEMO, lines[0])
    (folder / "train.tsv").write_text("\n".join([root] + lines[1:] * REPEATS) + "\n")
    return str(folder)


def test_runs_without_data_workers_exit_cleanly_every_time(upstream, long_manifest, tmp_path):
    """RUNS runs, two at a time (their usual torch threads: the abort happens inside torch at exit)."""
    failures = []
    for first in range(0, RUNS, 2):
        batch = list(range(first, min(first + 2, RUNS)))
        run_dirs = [str(tmp_path / f"run{run}") for run in batch]
        for run_dir in run_dirs:
            os.makedirs(run_dir)
        results = run_side_by_side(
            [demo_train_command(upstream, run_dir, 1, overrides(long_manifest)) for run_dir in run_dirs],
            [os.path.join(run_dir, "run.log") for run_dir in run_dirs], timeout=600)
        for run, run_dir, (returncode, output) in zip(batch, run_dirs, results):
            if returncode != 0:
                failures.append((run, returncode, output[-1500:]))
            assert os.path.isfile(os.path.join(run_dir, "checkpoints", "checkpoint_last.pt")), output[-3000:]
    assert not failures, f"{len(failures)} of {RUNS} runs failed; first: {failures[0]}"
