"""A fairseq dataset of (original, perturbed) waveform pairs read from a tsv manifest."""

import logging
import math
from typing import Dict, List, Optional

import numpy as np
import torch

from .. import quiet_fairseq  # noqa: F401  (before any fairseq import: keeps the caller's logging setup)
from fairseq.data import FairseqDataset
from torch import Tensor

from .audio import AudioError, read_audio
from .frames import FRAME_WINDOW
from .manifest import Manifest
from .perturbation import SpeedPitchPerturber

logger = logging.getLogger(__name__)

# Samples the HuBERT / WavLM convolutional front end needs for one frame (kernel 10 stride 5, then 3/2 x4,
# 2/2 x2): shorter inputs make torch's conv1d fail.


class PairedPerturbedAudioDataset(FairseqDataset):
    """Each item is an utterance and its speed + pitch perturbed copy, in random order.

    Every random draw (crop offset, speed factor, pitch shift, view order) comes from a generator seeded
    with (seed, epoch, index), so an item is the same whatever worker makes it and a resumed run sees the
    same data. With ``fixed_perturbations`` (validation) the epoch is ignored.

    Items shorter than ``min_sample_size`` are left out when the dataset is built; the count is logged.
    Longer than ``max_sample_size``: cropped before perturbing, so both views carry the same content.
    """

    def __init__(
        self,
        manifest: Manifest,
        perturber: SpeedPitchPerturber,
        sample_rate: int,
        max_sample_size: int,
        min_sample_size: int,
        seed: int,
        fixed_perturbations: bool = False,
        shuffle: bool = True,
    ):
        super().__init__()
        needed = math.ceil(FRAME_WINDOW * max(perturber.speed_factors))
        if min_sample_size < needed:
            raise ValueError(
                f"task.min_sample_size={min_sample_size} is too small: with speed factor "
                f"{max(perturber.speed_factors)} an utterance needs at least {needed} samples so that its perturbed "
                f"copy still covers the CNN's receptive field ({FRAME_WINDOW} samples); raise it"
            )
        self.perturber = perturber
        self.sample_rate = sample_rate
        self.max_sample_size = max_sample_size
        self.seed = seed
        self.fixed_perturbations = fixed_perturbations
        self.shuffle = shuffle
        self.epoch = 1

        kept = [entry for entry in manifest.entries if entry.num_samples >= min_sample_size]
        skipped = len(manifest.entries) - len(kept)
        if skipped:
            logger.warning(
                f"{manifest.path}: left out {skipped} of {len(manifest.entries)} utterances shorter than "
                f"min_sample_size={min_sample_size} samples"
            )
        if not kept:
            raise ValueError(
                f"{manifest.path}: every utterance is shorter than min_sample_size={min_sample_size}; "
                f"lower task.min_sample_size"
            )
        self.manifest_path = manifest.path
        self.entries = kept
        self.sizes = np.array([min(e.num_samples, max_sample_size) for e in kept], dtype=np.int64)
        longest_view = 1.0 / min(perturber.speed_factors)
        self._tokens_per_sample = 1.0 + max(1.0, longest_view)

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def _rng(self, index: int) -> np.random.Generator:
        epoch = 0 if self.fixed_perturbations else self.epoch
        return np.random.default_rng([self.seed, epoch, index])

    def __getitem__(self, index: int) -> Dict:
        entry = self.entries[index]
        rng = self._rng(index)
        where = f"{self.manifest_path}:{entry.line}"
        wav = read_audio(entry.path, self.sample_rate, where=where)
        if wav.shape[0] != entry.num_samples:
            raise AudioError(
                f"{where}: {entry.path} has {wav.shape[0]} samples but the manifest says {entry.num_samples}; "
                f"regenerate the manifest (scripts/prepare_librispeech.py)"
            )
        wav = self._crop(wav, rng)
        view_a, view_b, perturbation = self.perturber.views(wav, rng)
        return {"id": index, "view_a": view_a, "view_b": view_b, "perturbation": perturbation}

    def _crop(self, wav: Tensor, rng: np.random.Generator) -> Tensor:
        excess = wav.shape[0] - self.max_sample_size
        if excess <= 0:
            return wav
        start = int(rng.integers(excess + 1))
        return wav[start : start + self.max_sample_size]

    def collater(self, samples: List[Dict]) -> Dict:
        samples = [s for s in samples if s is not None]
        if not samples:
            return {}
        source_a, padding_mask_a = _pad([s["view_a"] for s in samples])
        source_b, padding_mask_b = _pad([s["view_b"] for s in samples])
        return {
            "id": torch.tensor([s["id"] for s in samples], dtype=torch.long),
            "nsentences": len(samples),
            "net_input": {
                "source_a": source_a,
                "padding_mask_a": padding_mask_a,
                "source_b": source_b,
                "padding_mask_b": padding_mask_b,
            },
        }

    def num_tokens(self, index: int) -> int:
        """Samples of both views (the perturbed one counted at its longest possible length)."""
        return int(math.ceil(self.sizes[index] * self._tokens_per_sample))

    def size(self, index: int) -> int:
        return int(self.sizes[index])

    def ordered_indices(self) -> np.ndarray:
        """Indices sorted by length (longest first), random order among equal lengths when shuffling."""
        if self.shuffle:
            order = [np.random.default_rng([self.seed, self.epoch]).permutation(len(self)), self.sizes]
            return np.lexsort(order)[::-1]
        return np.argsort(self.sizes, kind="stable")[::-1]

    @property
    def supports_prefetch(self) -> bool:
        return False

    @property
    def can_reuse_epoch_itr_across_epochs(self) -> bool:
        # Items depend on the epoch: a reused iterator keeps persistent workers whose dataset copies never
        # see set_epoch, so they would repeat epoch 1's perturbations forever.
        return False


def _pad(waveforms: List[Tensor]):
    """Right-pad (S_i,) waveforms into (B, S_max) with a (B, S_max) bool mask (True = padding), or None."""
    longest = max(w.shape[0] for w in waveforms)
    batch = waveforms[0].new_zeros((len(waveforms), longest))
    mask = torch.zeros((len(waveforms), longest), dtype=torch.bool)
    for row, wav in enumerate(waveforms):
        batch[row, : wav.shape[0]] = wav
        mask[row, wav.shape[0] :] = True
    return batch, (mask if mask.any() else None)
