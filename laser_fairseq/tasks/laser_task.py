"""The ``laser`` task: batches of (original, perturbed) utterance pairs read from fairseq tsv manifests."""

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from .. import quiet_fairseq  # noqa: F401  (before any fairseq import: keeps the caller's logging setup)
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II, MISSING

from ..checkpoint_recovery import LAST, ensure_resumable
from ..preemption import StopSignals, finished, parse_signals, run_config, train_nothing
from ..data.manifest import read_manifest
from ..data.paired_dataset import PairedPerturbedAudioDataset
from ..data.perturbation import SpeedPitchPerturber

logger = logging.getLogger(__name__)


@dataclass
class LaserTaskConfig(FairseqDataclass):
    data: str = field(
        default=MISSING,
        metadata={"help": "folder holding {split}.tsv manifests (root line, then path<TAB>num_samples)"},
    )
    sample_rate: int = field(
        default=16_000, metadata={"help": "sample rate the upstream expects; other rates are refused"}
    )
    max_sample_size: int = field(
        default=400_000,
        metadata={"help": "longer utterances are cropped (at a random offset) to this many samples before "
                          "perturbing"},
    )
    min_sample_size: int = field(
        default=8_000,
        metadata={"help": "shorter utterances are left out of the split (counted in the log)"},
    )
    speed_factors: List[float] = field(
        default_factory=lambda: [0.9, 1.0, 1.1],
        metadata={"help": "speed perturbation factors, one drawn uniformly per item"},
    )
    pitch_shifts: List[float] = field(
        default_factory=lambda: [-2.0, 2.0],
        metadata={"help": "pitch shifts in semitones, one drawn uniformly per item after the speed change"},
    )
    pitch_tolerance: float = field(
        default=0.05,
        metadata={"help": "largest error in semitones allowed for the fast rational pitch ratio"},
    )
    swap_views: bool = field(
        default=True, metadata={"help": "present the original and the perturbed view in random order"}
    )
    persistent_workers: bool = field(
        default=False,
        metadata={"help": "keep data-loader workers alive after a loader is exhausted (the installed fairseq's "
                          "default). false: every epoch's and every validation's workers exit when their loader "
                          "is done, instead of when garbage collection finds the loader, which can stall a "
                          "checkpoint save by up to 5 s per worker"},
    )
    seed: int = II("common.seed")
    train_subset: str = II("dataset.train_subset")
    save_dir: str = field(
        default=II("checkpoint.save_dir"),
        metadata={"help": "set from checkpoint.save_dir: checked at start-up so that a checkpoint_last.pt torn "
                          "by a kill is replaced by the newest intact checkpoint before fairseq resumes"},
    )
    stop_signals: List[str] = field(
        default_factory=lambda: ["SIGUSR1"],
        metadata={"help": "signals on which a training process saves a checkpoint after the current update and "
                          "exits with status 0 (all ranks agree on the update), so that the same command resumes; "
                          "SIGUSR1 is what examples/laser/slurm/laser.sbatch forwards before the time limit. "
                          "[] leaves every signal's default action (SIGUSR1 kills the process)"},
    )
    restore_file: str = field(
        default=II("checkpoint.restore_file"),
        metadata={"help": "set from checkpoint.restore_file: the start-up check runs only for the default "
                          "checkpoint_last.pt"},
    )


@register_task("laser", dataclass=LaserTaskConfig)
class LaserTask(FairseqTask):
    """Self-supervised fine-tuning on pairs of an utterance and its speed + pitch perturbed copy."""

    cfg: LaserTaskConfig

    def __init__(self, cfg: LaserTaskConfig):
        super().__init__(cfg)
        self.stop_signals = None  # a StopSignals on a training launch (setup_task)
        self.perturber = SpeedPitchPerturber(
            sample_rate=cfg.sample_rate,
            speed_factors=tuple(cfg.speed_factors),
            pitch_shifts=tuple(cfg.pitch_shifts),
            pitch_tolerance=cfg.pitch_tolerance,
            swap_views=cfg.swap_views,
        )

    @classmethod
    def setup_task(cls, cfg: LaserTaskConfig, **kwargs):
        task = cls(cfg)
        if not kwargs.get("from_checkpoint"):  # a training launch, not a trained model being loaded
            signals = parse_signals(cfg.stop_signals)
            resumed_updates = _make_resumable(cfg)
            run = run_config(cfg)
            if run is not None:
                if resumed_updates is not None and finished(resumed_updates, run):
                    logger.warning(
                        f"{os.path.join(cfg.save_dir, LAST)} holds {resumed_updates} updates, "
                        f"optimization.max_update={run.optimization.max_update}: the run is finished, nothing is "
                        f"trained (raise optimization.max_update and lr_scheduler.total_num_update to train on)"
                    )
                    train_nothing(run)
                task.stop_signals = StopSignals(signals, run).install()
        return task

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        """fairseq's step (``FairseqTask.train_step``, same signature), after the ranks have agreed whether a
        stop signal asks to end after this update."""
        if self.stop_signals is not None:
            self.stop_signals.check(update_num)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def get_batch_iterator(self, dataset, *args, **kwargs):
        """fairseq's batch iterator; without data workers, also without fairseq's prefetch thread.

        That daemon thread (``dataset.data_buffer_size`` batches ahead) can still be inside torch when the
        interpreter exits after training, which aborts the finished run (``terminate called without an
        active exception``, exit 134). Batches are then made in the main process, as they are requested.
        """
        if kwargs.get("num_workers", 0) == 0 and kwargs.get("data_buffer_size", 0) > 0:
            kwargs["data_buffer_size"] = 0
        return super().get_batch_iterator(dataset, *args, **kwargs)

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        manifest = read_manifest(os.path.join(self.cfg.data, f"{split}.tsv"))
        is_train = split == self.cfg.train_subset
        self.datasets[split] = PairedPerturbedAudioDataset(
            manifest,
            self.perturber,
            sample_rate=self.cfg.sample_rate,
            max_sample_size=self.cfg.max_sample_size,
            min_sample_size=self.cfg.min_sample_size,
            seed=self.cfg.seed,
            fixed_perturbations=not is_train,
            shuffle=is_train,
        )
        logger.info(f"{split}: {len(self.datasets[split])} utterance pairs from {manifest.path}")

    def max_positions(self):
        return (sys.maxsize, sys.maxsize)

    @property
    def source_dictionary(self):
        return None

    @property
    def target_dictionary(self):
        return None


def _make_resumable(cfg: LaserTaskConfig) -> Optional[int]:
    """Rank 0 replaces a torn checkpoint_last.pt before fairseq, on every rank, looks for it.

    Returns the number of updates fairseq will resume from (rank 0's answer on every rank), None when it
    starts from scratch or from another restore_file.
    """
    if cfg.restore_file != LAST:
        return None
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    answer = [None]
    if not distributed or torch.distributed.get_rank() == 0:
        point = ensure_resumable(cfg.save_dir)
        answer[0] = None if point is None else point.num_updates
    if distributed:
        torch.distributed.broadcast_object_list(answer, src=0)
    return answer[0]
