"""laser_fairseq/hydra_command.py: the one fairseq-hydra-train command builder. The three commands built on it
(the effect table's runs, a pretraining iteration, the demo) are pinned argument by argument, as they were
before they shared the builder; override values parse back in hydra's own grammar."""

import os
import sys

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from laser_fairseq.evaluation.runs import Run, TrainingSettings, training_command
from laser_fairseq.evaluation.variants import VARIANTS
from laser_fairseq.hydra_command import (
    USER_DIR,
    Verbatim,
    fairseq_hydra_train,
    hydra_train_command,
    hydra_value,
    override_arguments,
)
from laser_fairseq.pretraining.schedule import Iteration, KmeansSettings, Target
from laser_fairseq.pretraining.training import train_command
from laser_runs import REPO, demo_train_command

HEAD = [fairseq_hydra_train(), "--config-dir"]


def test_user_dir_is_this_package_and_the_executable_is_this_environments():
    assert USER_DIR == os.path.join(REPO, "laser_fairseq")
    assert os.path.isfile(os.path.join(USER_DIR, "criterions", "laser_criterion.py"))
    assert fairseq_hydra_train() == os.path.join(os.path.dirname(sys.executable), "fairseq-hydra-train")


def test_effect_table_run_command_is_pinned():
    settings = TrainingSettings(upstream="/m/up.pt", data="/d", lr=3e-4, max_update=360, config_dir="/c",
                                config_name="tiny_hubert", overrides=("dataset.batch_size=4",))
    assert training_command(Run(VARIANTS["sdtw_only"], 2, settings), "/out") == HEAD + [
        "/c", "--config-name", "tiny_hubert",
        f"common.user_dir={USER_DIR}",
        "task.data=/d",
        "model.upstream_path=/m/up.pt",
        "checkpoint.save_dir=/out/runs/sdtw_only/lr0.0003-u360/seed2/checkpoints",
        "common.tensorboard_logdir=/out/runs/sdtw_only/lr0.0003-u360/seed2/tensorboard",
        "hydra.run.dir=/out/runs/sdtw_only/lr0.0003-u360/seed2/hydra",
        "common.seed=2",
        "optimization.lr=[0.0003]",
        "optimization.max_update=360",
        "lr_scheduler.total_num_update=360",
        "lr_scheduler.warmup_updates=100",
        "criterion.alpha=0.0",
        "dataset.batch_size=4",
    ]


@pytest.mark.parametrize("lr, written", [(1.0, "[1]"), (1.23456789e-3, "[0.00123457]"), (5e-5, "[5e-05]")])
def test_effect_table_learning_rate_keeps_its_short_form(lr, written):
    """Finished runs are recognised by their exact command (done.json): the LR stays written with ``:g``."""
    settings = TrainingSettings(upstream="/m/up.pt", data="/d", lr=lr, max_update=360, config_dir="/c",
                                config_name="tiny_hubert")
    assert f"optimization.lr={written}" in training_command(Run(VARIANTS["laser"], 2, settings), "/out")


def test_pretraining_iteration_command_is_pinned():
    iteration = Iteration(
        index=2, target=Target(kind="layer", layer=6), n_clusters=500, max_update=400, init="previous",
        config_path="/cfg/hubert_tiny.yaml", kmeans=KmeansSettings(),
        overrides={"optimization.lr": [0.0005], "model.encoder_layers": 4, "+task.x": "a b", "dataset.flag": True},
    )
    command = train_command(iteration, 7, "/data", "/labels", "/run/save", "/run/hydra",
                            ["checkpoint.finetune_from_model=/run/init.pt"])
    assert command == HEAD + [
        "/cfg", "--config-name", "hubert_tiny",
        f"common.user_dir={USER_DIR}",
        "common.seed=7",
        "task.data=/data",
        "task.label_dir=/labels",
        "task.labels=[km]",
        "model.label_rate=50",
        "task.label_rate=50",
        "checkpoint.save_dir=/run/save",
        "optimization.max_update=400",
        "hydra.run.dir=/run/hydra",
        "checkpoint.finetune_from_model=/run/init.pt",
        "optimization.lr=[0.0005]",
        "model.encoder_layers=4",
        "+task.x='a b'",
        "dataset.flag=true",
    ]


def test_demo_command_is_pinned():
    command = demo_train_command("/m/up.pt", "/r", 7, ["lr_scheduler.total_num_update=7"], data="/d")
    assert command == HEAD + [
        os.path.join(REPO, "examples", "laser", "config"), "--config-name", "demo",
        f"common.user_dir={USER_DIR}",
        "task.data=/d",
        "model.upstream_path=/m/up.pt",
        "checkpoint.save_dir=/r/checkpoints",
        "common.tensorboard_logdir=/r/tensorboard",
        "hydra.run.dir=/r/hydra",
        "optimization.max_update=7",
        "lr_scheduler.total_num_update=7",
    ]
    default_data = demo_train_command("/m/up.pt", "/r", 7)
    assert f"task.data={os.path.join(REPO, 'manifests', 'demo')}" in default_data
    assert default_data[-1] == "optimization.max_update=7"


def test_keyed_overrides_keep_their_order_and_extra_ones_come_last():
    command = hydra_train_command("/c", "n", {"b.y": 1, "a.x": [1, 2]}, ["z.z=3"])
    assert command[5:] == [f"common.user_dir={USER_DIR}", "b.y=1", "a.x=[1,2]", "z.z=3"]
    assert override_arguments({"k.v": Verbatim("[1e-05]"), "k.w": "[1e-05]"}) == ["k.v=[1e-05]", "k.w='[1e-05]'"]


@pytest.mark.parametrize("value", [[0.0005], [10, 1.5], True, False, None, 3, 2.5e-05, "(0.9,0.98)", "adam",
                                   "a b", "it's", "/abs/path.pt", "[(64,10,5)] + [(64,3,2)] * 4", "/tmp/a+b/c.pt",
                                   "back\\slash", "end\\", "q\\'uote", ["x y", "z"]])
def test_override_values_parse_back_in_hydra(value):
    parsed = OverridesParser.create().parse_override(f"a.b={hydra_value(value)}").value()
    assert parsed == value
