"""Training runs of the effect table: one fairseq-hydra-train LASER job per (variant, seed, settings).

Layout under the output folder::

    runs/<variant>/lr<lr>-u<updates>/seed<seed>/   checkpoints/, tensorboard/, hydra/, train.log, done.json
    commands.sh                                    every command run, in order (appended)

A run is finished when ``done.json`` exists: it records the exact command, so re-running with the same
settings skips it, and different settings in the same folder are refused instead of mixed. A killed run is
re-run with the same command, and fairseq resumes it from its ``checkpoint_last.pt``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from ..checkpoint_recovery import LAST
from ..files import read_json, write_json
from ..hydra_command import Verbatim, hydra_train_command, run_folder_overrides
from .variants import Variant

DONE = "done.json"


@dataclass(frozen=True)
class TrainingSettings:
    """What every trained variant shares."""

    upstream: str
    data: str
    lr: float
    max_update: int
    config_dir: str
    config_name: str
    overrides: Tuple[str, ...] = ()  # extra fairseq-hydra-train overrides, applied last

    @property
    def warmup_updates(self) -> int:
        """The paper's proportion: 1,000 warm-up updates of 3,600."""
        return max(1, round(self.max_update * 1000 / 3600))

    @property
    def tag(self) -> str:
        return f"lr{self.lr:g}-u{self.max_update}"


@dataclass(frozen=True)
class Run:
    variant: Variant
    seed: int
    settings: TrainingSettings

    @property
    def key(self) -> str:
        """``<variant>/lr<lr>-u<updates>/seed<seed>``: the run's folder below ``runs/``."""
        return f"{self.variant.name}/{self.settings.tag}/seed{self.seed}"

    def folder(self, out: str) -> str:
        return os.path.join(out, "runs", self.key)

    def checkpoint(self, out: str) -> str:
        return os.path.join(run_folder_overrides(self.folder(out))["checkpoint.save_dir"], LAST)


class RunError(RuntimeError):
    """A run that failed or whose folder holds another configuration; the message says what to do."""


def training_command(run: Run, out: str) -> List[str]:
    """The fairseq-hydra-train command of ``run``: settings, then the variant's criterion, then extra overrides."""
    settings, folder = run.settings, run.folder(out)
    keyed = {
        "task.data": settings.data,
        "model.upstream_path": settings.upstream,
        **run_folder_overrides(folder),
        "common.seed": run.seed,
        "optimization.lr": Verbatim(f"[{settings.lr:g}]"),
        "optimization.max_update": settings.max_update,
        "lr_scheduler.total_num_update": settings.max_update,
        "lr_scheduler.warmup_updates": settings.warmup_updates,
    }
    return hydra_train_command(settings.config_dir, settings.config_name, keyed,
                               [*run.variant.criterion_overrides, *settings.overrides])


def finished(run: Run, out: str) -> Optional[dict]:
    """The run's ``done.json`` if it finished with exactly this command; RunError if it holds another."""
    path = os.path.join(run.folder(out), DONE)
    if not os.path.exists(path):
        return None
    done = read_json(path)
    if done.get("command") != training_command(run, out):
        raise RunError(
            f"{path}: this run finished with another command than the one asked now; settings that change "
            f"the training (upstream, data, config, overrides) need another --out folder.\n"
            f"  then: {shlex.join(done.get('command', []))}\n  now:  {shlex.join(training_command(run, out))}"
        )
    return done


def train(run: Run, out: str, log=print) -> dict:
    """Train ``run`` unless it finished; resume it if it was killed. Returns its ``done.json`` content."""
    done = finished(run, out)
    if done is not None:
        log(f"[{run.key}] finished earlier: {done['checkpoint']}")
        return done
    folder = run.folder(out)
    os.makedirs(folder, exist_ok=True)
    command = training_command(run, out)
    record_command(out, command)
    log(f"[{run.key}] training ({run.settings.max_update} updates)")
    started = time.monotonic()
    with open(os.path.join(folder, "train.log"), "a", encoding="utf-8") as train_log:
        result = subprocess.run(command, stdout=train_log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RunError(f"[{run.key}] fairseq-hydra-train exited with {result.returncode}; see "
                       f"{os.path.join(folder, 'train.log')}")
    checkpoint = run.checkpoint(out)
    done = {"command": command, "checkpoint": checkpoint, "seconds": round(time.monotonic() - started, 1)}
    write_json(os.path.join(folder, DONE), done, sort_keys=True)
    return done


def record_command(out: str, command: Sequence[str]):
    """Append ``command`` to ``out/commands.sh`` (the exact commands behind the table)."""
    with open(os.path.join(out, "commands.sh"), "a", encoding="utf-8") as handle:
        handle.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}\n{shlex.join(command)}\n")

