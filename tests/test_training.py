"""Real `fairseq-hydra-train` LASER runs on the demo corpus, for a tiny HuBERT and a tiny WavLM in their
original formats: what changes, what must not, that the loss is finite and falls, that resuming works and that
checkpoint saves do not stall."""

import math
import os
import re

import pytest
import torch

from laser_fairseq.checkpoint_io import load_checkpoint
from laser_fairseq.models.trained_upstream import open_upstream
from laser_fairseq.tiny_upstream import make_tiny_hubert, make_tiny_wavlm, save_checkpoint

from laser_runs import logged_values, run_laser_trainings

UPDATES = 20
TRAINABLE = 2
MAKERS = {"hubert": make_tiny_hubert, "wavlm": make_tiny_wavlm}


OVERRIDES = ["common.log_interval=1", "dataset.validate_interval_updates=10", "checkpoint.save_interval_updates=10"]


@pytest.fixture(scope="module")
def laser_runs(tmp_path_factory):
    """For each kind, a 20-update LASER run (validation at 10 and 20), then a resume of the same run to 22
    updates; the two kinds run side by side (one thread each)."""
    runs = {}
    for kind in sorted(MAKERS):
        run_dir = str(tmp_path_factory.mktemp(f"laser_{kind}"))
        upstream = os.path.join(run_dir, f"tiny_{kind}.pt")
        save_checkpoint(MAKERS[kind](layers=4, dim=64, seed=0), upstream)
        runs[kind] = {"kind": kind, "upstream": upstream, "run_dir": run_dir,
                      "last": os.path.join(run_dir, "checkpoints", "checkpoint_last.pt")}
    outputs = run_laser_trainings([(r["upstream"], r["run_dir"], UPDATES, OVERRIDES) for r in runs.values()])
    for run, output in zip(runs.values(), outputs):
        run["output"] = output
        run["trained"] = load_checkpoint(run["last"])  # read before the resume below replaces it
    resumed = run_laser_trainings([(r["upstream"], r["run_dir"], UPDATES + 2, OVERRIDES) for r in runs.values()])
    for run, output in zip(runs.values(), resumed):
        run["resumed_output"] = output
    return runs


@pytest.fixture(params=sorted(MAKERS))
def laser_run(request, laser_runs):
    return laser_runs[request.param]


def upstream_tensors(path):
    return {k: v.clone() for k, v in open_upstream(path).upstream.original_state_dict().items()}


def test_only_the_last_blocks_and_the_head_change(laser_run, tmp_path):
    source = load_checkpoint(laser_run["upstream"])["model"]
    trained_path = tmp_path / "trained.pt"
    torch.save(laser_run["trained"], trained_path)
    trained = upstream_tensors(str(trained_path))
    assert set(trained) == set(source)
    layers = 4
    top = tuple(f"encoder.layers.{i}." for i in range(layers - TRAINABLE, layers))
    frozen = [k for k in source if not k.startswith(top)]
    changed_frozen = [k for k in frozen if not torch.equal(trained[k], source[k])]
    assert frozen and not changed_frozen, f"frozen tensors changed: {changed_frozen}"
    changed = [k for k in source if k.startswith(top) and not torch.equal(trained[k], source[k])]
    trainable = [k for k in source if k.startswith(top)]
    # every weight matrix of the trained blocks moves (a 1-element tensor such as grep_a might not)
    assert len(changed) >= 0.9 * len(trainable), sorted(set(trainable) - set(changed))
    head = {k: v for k, v in laser_run["trained"]["model"].items() if k.startswith("head.")}
    assert head["head.weight"].shape == (256, 64)


def test_losses_are_finite_and_fall(laser_run):
    train = logged_values(laser_run["output"], "train_inner")
    valid = logged_values(laser_run["output"], "valid")
    assert [u for u, _ in train] == list(range(1, UPDATES + 1))
    assert all(math.isfinite(v) for _, v in train + valid)
    first, last = [v for _, v in train[:5]], [v for _, v in train[-5:]]
    assert sum(last) / 5 < sum(first) / 5, train
    assert valid[-1][1] < valid[0][1], valid  # fixed validation perturbations: a like-for-like comparison
    for key in ("sdtw", "idm"):
        assert logged_values(laser_run["output"], "train_inner", key), f"{key} not logged"


def test_parameter_counts_are_logged(laser_run):
    assert "trainable /" in laser_run["output"] and "frozen parameters" in laser_run["output"]
    assert "training blocks [2, 3] + head" in laser_run["output"]


def test_resume_continues_at_the_right_update(laser_run):
    output = laser_run["resumed_output"]
    assert f"Loaded checkpoint {laser_run['last']}" in output and f"@ {UPDATES} updates)" in output
    resumed = [u for u, _ in logged_values(output, "train_inner")]
    assert resumed == [UPDATES + 1, UPDATES + 2]


def test_checkpoint_saves_do_not_stall(laser_run):
    """No save waits on garbage collection shutting down a finished loader's data worker (5 s per loader when
    workers persist); a save of these small checkpoints takes a fraction of a second."""
    output = laser_run["output"] + laser_run["resumed_output"]
    took = [float(seconds) for seconds in re.findall(r"writing took ([0-9.]+) seconds", output)]
    assert len(took) >= 3 and max(took) < 2.5, took


def test_tensorboard_logs_are_written(laser_run):
    run_dir = os.path.dirname(os.path.dirname(laser_run["last"]))
    for subset in ("train_inner", "valid"):
        folder = os.path.join(run_dir, "tensorboard", subset)
        assert any(name.startswith("events.out.tfevents") for name in os.listdir(folder))
