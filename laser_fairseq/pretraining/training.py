"""One iteration's training: fairseq's own ``hubert_pretraining`` task and ``hubert`` model (as
``hubert_resumable``: seeded masks, see ``models/hubert_resumable.py``) through ``fairseq-hydra-train``, then
the final checkpoint written as a clean fairseq HuBERT checkpoint.

- ``scratch``: fairseq builds a fresh model (seeded with ``common.seed``).
- ``previous`` (warm start): ``init.pt`` is written first, a fairseq-format checkpoint for the NEW label
  dictionary: the previous iteration's trunk (CNN, projections, mask embedding, transformer) copied, the
  label-dependent prediction head (``final_proj``, ``label_embs_concat``) freshly initialised as in a
  from-scratch model, since the targets changed. Training starts from it through fairseq's
  ``checkpoint.finetune_from_model`` (fresh optimizer, LR schedule and data iterator), which fairseq uses only
  while the save dir holds no checkpoint_last.pt, so a restart resumes instead of starting over.
- ``model.pt``: checkpoint_last.pt without optimizer state, with ``args=None``, a cfg of genuine fairseq
  fields (model ``hubert``, no user dir) and ``task_state["dictionaries"]``: it loads with fairseq's
  loader, ``laser_fairseq.models.upstream.build_upstream`` and s3prl's ``hubert_local(..., fairseq=True)``.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import List, Optional, Sequence

import torch

from ..checkout import REPO
from ..checkpoint_io import load_checkpoint, write_checkpoint
from ..checkpoint_recovery import LAST, ensure_resumable
from ..export.formats import genuine_hubert_cfg
from ..hydra_command import hydra_train_command, override_arguments
from ..models.hubert_checkpoint import PRETRAINING_HEAD
from .schedule import KEEP_INTERVAL_KEY, SAVE_INTERVAL_KEY, Iteration


class TrainingError(RuntimeError):
    """A training run that failed or ended unexpectedly; the message says where its log is."""


def train_command(
    iteration: Iteration, seed: int, data_dir: str, label_dir: str, save_dir: str, hydra_dir: str,
    start_overrides: Sequence[str], keep_every: Optional[int] = None,
) -> List[str]:
    """The fairseq-hydra-train command of one iteration (driver keys first, then the schedule's overrides);
    ``keep_every``: fairseq saves and keeps a checkpoint every that many updates (the quality curve's)."""
    config_dir, config_file = os.path.split(iteration.config_path)
    rate = iteration.target.label_rate
    driver_keys = {
        "common.seed": seed,
        "task.data": data_dir,
        "task.label_dir": label_dir,
        "task.labels": ["km"],
        "model.label_rate": rate,
        "task.label_rate": rate,
        "checkpoint.save_dir": save_dir,
        "optimization.max_update": iteration.max_update,
        "hydra.run.dir": hydra_dir,
    }
    if keep_every is not None:
        driver_keys.update({SAVE_INTERVAL_KEY: keep_every, KEEP_INTERVAL_KEY: -1})
    return hydra_train_command(config_dir, os.path.splitext(config_file)[0], driver_keys,
                               [*start_overrides, *override_arguments(iteration.overrides)])


def start_overrides(save_dir: str, init_checkpoint: Optional[str]) -> List[str]:
    """How training (re)starts.

    With a checkpoint_last.pt in ``save_dir`` fairseq resumes from it (its default restore_file), after
    ``ensure_resumable`` replaced a copy torn by a kill with the newest intact checkpoint; without one, a warm
    start begins from ``init_checkpoint`` and a scratch start from fairseq's fresh model.
    """
    if os.path.isdir(save_dir):
        ensure_resumable(save_dir)
    if os.path.exists(os.path.join(save_dir, LAST)) or init_checkpoint is None:
        return []
    return override_arguments({"checkpoint.finetune_from_model": init_checkpoint})


def run_training(command: Sequence[str], log_path: str, echo=None) -> None:
    """Run fairseq-hydra-train, appending its output to ``log_path``; ``echo(line)`` sees every line.

    SIGTERM / SIGINT to the driver are passed on to the training process (again for every repeat, e.g. a
    second Ctrl-C); once it has exited (its checkpoints stay for a resume) KeyboardInterrupt is raised.
    """
    received: List[int] = []

    def forward(signum, frame):  # only passes the signal on: waiting here would deadlock on a second signal
        received.append(signum)
        process.send_signal(signum)

    with open(log_path, "a", encoding="utf-8") as log:
        log.write("+ " + " ".join(command) + "\n")
        log.flush()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for line in process.stdout:
                log.write(line)
                log.flush()
                if echo is not None:
                    echo(line)
            code = process.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt(f"stopped by signal {received[0]}; re-run the same command to resume")
    if code != 0:
        raise TrainingError(f"fairseq-hydra-train exited with {code}; see {log_path}")


def fresh_model(cfg: dict, dictionaries: list, seed: int):
    """(task, seeded freshly initialised fairseq HubertModel) for a checkpoint cfg and label dictionaries."""
    from fairseq.tasks.hubert_pretraining import HubertPretrainingTask
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(cfg)
    task = HubertPretrainingTask(cfg.task)
    task.load_state_dict({"dictionaries": list(dictionaries)})
    torch.manual_seed(seed)
    return task, task.build_model(cfg.model)


def last_valid_metrics(log_path: str) -> dict:
    """The numbers of the last validation line of a fairseq training log ({} if there is none)."""
    metrics = {}
    with open(log_path, encoding="utf-8") as log:
        for line in log:
            if "][valid][" in line and " | valid on " in line:
                fields = [field.strip().split(" ", 1) for field in line.split(" | ")[2:]]
                metrics = {key: float(value) for key, value in (f for f in fields if len(f) == 2)
                           if _is_number(value)}
    return metrics


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def write_init_checkpoint(previous_model: str, dictionary_path: str, label_rate: int, seed: int, path: str):
    """A fairseq checkpoint for the new label dictionary: the previous trunk, a fresh prediction head."""
    from fairseq.data.dictionary import Dictionary

    previous = load_checkpoint(previous_model)
    cfg = dict(previous["cfg"])
    cfg["model"] = dict(cfg["model"], label_rate=float(label_rate))
    cfg["task"] = dict(cfg["task"], label_rate=float(label_rate))
    task, model = fresh_model(cfg, [Dictionary.load(dictionary_path)], seed)
    weights = model.state_dict()
    trunk = {key: value for key, value in previous["model"].items() if not key.startswith(PRETRAINING_HEAD)}
    mismatched = [key for key in weights if not key.startswith(PRETRAINING_HEAD) and
                  (key not in trunk or trunk[key].shape != weights[key].shape)]
    if mismatched or set(trunk) - set(weights):
        raise TrainingError(f"{previous_model}: its trunk does not fit the model of this iteration "
                            f"({(mismatched or sorted(set(trunk) - set(weights)))[:3]}); init: previous needs "
                            f"the same model shape")
    weights.update(trunk)
    history = [{"criterion_name": "HubertCriterion", "optimizer_name": "FairseqAdam",
                "lr_scheduler_state": {"best": None}, "num_updates": 0}]
    state = dict(previous, cfg=cfg, model=weights, task_state=task.state_dict(), last_optimizer_state=None,
                 optimizer_history=history, extra_state={"metrics": {}, "previous_training_time": 0.0})
    write_checkpoint(state, path)


def pretrained_checkpoint(training_state: dict) -> dict:
    """A trainer checkpoint as a clean fairseq HuBERT checkpoint (weights, genuine cfg, dictionaries)."""
    cfg = genuine_hubert_cfg(training_state)  # model section: HubertConfig fields, _name "hubert"
    if isinstance(cfg.get("common"), dict):
        cfg["common"]["user_dir"] = None
    history = [dict(entry) for entry in training_state.get("optimizer_history") or []][-1:]
    return {
        "args": None,
        "cfg": cfg,
        "model": training_state["model"],
        "criterion": None,
        "optimizer_history": history,
        "task_state": training_state["task_state"],
        "extra_state": training_state.get("extra_state") or {"metrics": {}, "previous_training_time": 0.0},
        "last_optimizer_state": None,
    }


def export_final_model(save_dir: str, max_update: int, path: str) -> int:
    """Write ``path`` from checkpoint_last.pt after checking it reached ``max_update``; returns its updates."""
    last = os.path.join(save_dir, LAST)
    state = load_checkpoint(last)
    updates = (state.get("optimizer_history") or [{}])[-1].get("num_updates")
    if updates != max_update:
        raise TrainingError(f"{last}: training stopped at {updates} updates, the schedule asks for {max_update}; "
                            f"check the training log (e.g. optimization.max_epoch reached first)")
    write_checkpoint(pretrained_checkpoint(state), path)
    return updates
