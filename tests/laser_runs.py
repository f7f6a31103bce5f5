"""Running real `fairseq-hydra-train` LASER jobs from tests, and reading back what they wrote."""

import os
import re
import subprocess
import sys
from typing import List, Sequence, Tuple


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAIRSEQ_HYDRA_TRAIN = os.path.join(os.path.dirname(sys.executable), "fairseq-hydra-train")


def laser_train_command(upstream: str, run_dir: str, max_update: int, overrides: Sequence[str] = ()) -> List[str]:
    """The demo config on the bundled corpus, written into ``run_dir``."""
    return [
        FAIRSEQ_HYDRA_TRAIN,
        "--config-dir", os.path.join(REPO, "examples", "laser", "config"),
        "--config-name", "demo",
        f"common.user_dir={os.path.join(REPO, 'laser_fairseq')}",
        f"task.data={os.path.join(REPO, 'manifests', 'demo')}",
        f"model.upstream_path={upstream}",
        f"checkpoint.save_dir={os.path.join(run_dir, 'checkpoints')}",
        f"common.tensorboard_logdir={os.path.join(run_dir, 'tensorboard')}",
        f"hydra.run.dir={os.path.join(run_dir, 'hydra')}",
        f"optimization.max_update={max_update}",
        *overrides,
    ]


def run_laser_training(upstream: str, run_dir: str, max_update: int, overrides: Sequence[str] = ()) -> str:
    """Run to completion; return the combined output (the test fails with it if the run fails)."""
    result = subprocess.run(
        laser_train_command(upstream, run_dir, max_update, overrides),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900,
    )
    with open(os.path.join(run_dir, f"run-{max_update}.log"), "w") as log:
        log.write(result.stdout)
    assert result.returncode == 0, result.stdout[-4000:]
    return result.stdout


def logged_values(output: str, tag: str, key: str = "loss") -> List[Tuple[int, float]]:
    """[(num_updates, value)] of ``key`` from fairseq's simple-format log lines tagged ``tag``."""
    points = []
    for line in output.splitlines():
        if f"][{tag}][" not in line:
            continue
        update = re.search(r"num_updates[= ](\d+)", line)
        value = re.search(rf"\b{key}[= ]([-+0-9.eE]+|nan|inf)", line)
        if update and value:
            points.append((int(update.group(1)), float(value.group(1))))
    return points
