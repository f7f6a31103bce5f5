"""The ``laser`` task: batches of (original, perturbed) utterance pairs read from fairseq tsv manifests."""

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import List

from .. import quiet_fairseq  # noqa: F401  (before any fairseq import: keeps the caller's logging setup)
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II, MISSING

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
    seed: int = II("common.seed")
    train_subset: str = II("dataset.train_subset")


@register_task("laser", dataclass=LaserTaskConfig)
class LaserTask(FairseqTask):
    """Self-supervised fine-tuning on pairs of an utterance and its speed + pitch perturbed copy."""

    cfg: LaserTaskConfig

    def __init__(self, cfg: LaserTaskConfig):
        super().__init__(cfg)
        self.perturber = SpeedPitchPerturber(
            sample_rate=cfg.sample_rate,
            speed_factors=tuple(cfg.speed_factors),
            pitch_shifts=tuple(cfg.pitch_shifts),
            pitch_tolerance=cfg.pitch_tolerance,
            swap_views=cfg.swap_views,
        )

    @classmethod
    def setup_task(cls, cfg: LaserTaskConfig, **kwargs):
        return cls(cfg)

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
