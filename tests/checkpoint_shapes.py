"""Builders of the checkpoint shapes users hold, each made by the code that makes the real ones (fairseq's
trainer layout, fairseq's fine-tuning model, s3prl's converter, transformers' save_pretrained), and an
independent comparison of our hidden states with transformers' own forward."""

import argparse
import copy
import os
import subprocess
from typing import List, Sequence

import torch
import torch.nn.functional as F
from laser_fairseq.checkout import REPO

DEMO = os.path.join(REPO, "manifests", "demo")
CLUSTER_LABEL_DIR = "/checkpoint/wnhsu/experiments/hubert/kmeans_20210121/km_dataset_librivox.model_iter_2.all"


def without_dictionaries(state: dict, task_state=None) -> dict:
    """A fairseq HuBERT checkpoint as written before fairseq stored the label dictionaries: no task_state
    (or the given one) and a label_dir on the authors' cluster."""
    state = copy.deepcopy(state)
    state["cfg"]["task"].update(label_dir=CLUSTER_LABEL_DIR, labels=["layer6.km500"])
    if task_state is None:
        del state["task_state"]
    else:
        state["task_state"] = task_state
    return state


def legacy_namespace(cfg: dict) -> argparse.Namespace:
    """A flat args Namespace as fairseq < 0.10 wrote it, from a structured cfg."""
    flat = {}
    for section in ("common", "dataset", "optimization", "checkpoint", "distributed_training", "task", "model"):
        flat.update({key: value for key, value in cfg[section].items() if key != "_name"})
    flat.update(arch="hubert", task="hubert_pretraining", criterion="hubert", optimizer="adam",
                lr_scheduler="polynomial_decay")
    return argparse.Namespace(**flat)


def with_legacy_args(state: dict) -> dict:
    return dict(state, args=legacy_namespace(state["cfg"]), cfg=None)


def save_s3prl_converted(fairseq_checkpoint: str, output: str):
    """s3prl's own converter (what s3prl's hub downloads for hubert_base_ls960)."""
    from s3prl.upstream.hubert.convert import load_and_convert_fairseq_ckpt

    from laser_fairseq.checkpoint_io import SAFE_GLOBALS

    with torch.serialization.safe_globals(SAFE_GLOBALS):
        load_and_convert_fairseq_ckpt(fairseq_checkpoint, output)


def save_hubert_ctc(w2v_path: str, output: str, name: str = "hubert_ctc"):
    """A CTC fine-tuning checkpoint built by fairseq's own fine-tuning model from ``w2v_path`` (fairseq-fixed
    needs our hubert_ctc_fixed variant to build it; released checkpoints are named ``hubert_ctc``)."""
    from fairseq import tasks
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.tasks.audio_finetuning import AudioFinetuningConfig
    from omegaconf import OmegaConf

    from laser_fairseq.models.hubert_ctc_fixed import HubertCtcFixedConfig

    cfg = OmegaConf.structured(FairseqConfig())
    cfg.task = OmegaConf.structured(AudioFinetuningConfig(data=DEMO, labels="ltr"))
    cfg.task._name = "audio_finetuning"
    cfg.model = OmegaConf.structured(HubertCtcFixedConfig(w2v_path=w2v_path))
    cfg.model._name = "hubert_ctc_fixed"
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    plain["model"]["_name"] = name
    torch.save({
        "args": None, "cfg": plain, "model": model.state_dict(), "criterion": None,
        "optimizer_history": [{"criterion_name": "CtcCriterion", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": None}, "num_updates": 0}],
        "task_state": task.state_dict(), "extra_state": {"metrics": {}, "previous_training_time": 0.0},
        "last_optimizer_state": None,
    }, output)


# --------------------------------------------------------------------------------------------------
# LASER runs
# --------------------------------------------------------------------------------------------------


def start_laser_run(upstream: str, run_dir: str, max_update: int = 2) -> subprocess.Popen:
    """fairseq-hydra-train on the demo config, one thread, no validation; output in run_dir.log."""
    from laser_fairseq.demo import demo_train_command

    os.makedirs(run_dir, exist_ok=True)
    overrides = ["dataset.batch_size=2", "dataset.disable_validation=true"]
    command = demo_train_command(upstream, run_dir, max_update, overrides)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    log = open(f"{run_dir}.log", "w")
    return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)


def wait_laser_runs(runs: Sequence[subprocess.Popen], run_dirs: Sequence[str]) -> List[str]:
    """Wait for every run; fail with the end of the log of one that failed. Returns the checkpoints."""
    failed = [run_dir for run, run_dir in zip(runs, run_dirs) if run.wait(timeout=900) != 0]
    if failed:
        with open(f"{failed[0]}.log") as log:
            raise AssertionError(f"fairseq-hydra-train failed in {failed[0]}:\n{log.read()[-4000:]}")
    return [os.path.join(run_dir, "checkpoints", "checkpoint_last.pt") for run_dir in run_dirs]


# --------------------------------------------------------------------------------------------------
# comparing hidden states
# --------------------------------------------------------------------------------------------------


def padded_batch(lengths=(16000, 9600, 12345), seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    source = torch.zeros(len(lengths), max(lengths))
    for row, length in enumerate(lengths):
        source[row, :length] = 0.1 * torch.randn(length, generator=generator)
    mask = torch.arange(max(lengths))[None, :] >= torch.tensor(lengths)[:, None]
    return source, mask


def transformers_hidden_states(model, source: torch.Tensor, normalize: bool):
    """transformers' hidden states of one (1, S) utterance, the last one through the final layer norm."""
    if normalize:  # what its Wav2Vec2FeatureExtractor does before the model
        source = F.layer_norm(source, source.shape[-1:])
    with torch.no_grad():
        output = model(source, output_hidden_states=True)
    return list(output.hidden_states[:-1]) + [output.last_hidden_state]


def max_difference_to_transformers(model, upstream, normalize: bool) -> float:
    """Our upstream on a padded batch against transformers on each utterance alone, every layer."""
    source, mask = padded_batch()
    with torch.no_grad():
        ours = upstream.eval().hidden_states(source, mask)
    difference = 0.0
    for row, length in enumerate((~mask).sum(dim=1).tolist()):
        theirs = transformers_hidden_states(model.eval(), source[row : row + 1, :length], normalize)
        assert len(theirs) == len(ours)
        frames = theirs[0].shape[1]
        difference = max(difference, max((a[row, :frames] - b[0]).abs().max().item() for a, b in zip(ours, theirs)))
    return difference
