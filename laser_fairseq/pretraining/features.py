"""Frame features for k-means targets, dumped per shard as fairseq's ``simple_kmeans`` scripts do.

- MFCC: 13 Kaldi MFCCs (``torchaudio.compliance.kaldi.mfcc``, no energy, no dither) + deltas + delta-deltas,
  39-d, 25 ms windows every 10 ms: T = (S - 400) // 160 + 1 frames (100 Hz).
- HuBERT layer L: the output of transformer block L (1-based, fairseq's ``output_layer``, analysis row
  ``block<L>``) of a fairseq HuBERT checkpoint, without masking: T = the CNN's frame count (50 Hz).

A split's manifest is cut into ``nshard`` contiguous ranges (fairseq's rounding); shard ``rank`` is written
as ``{split}_{rank}_{nshard}.npy`` (float32, frames of all its utterances stacked) and
``{split}_{rank}_{nshard}.len`` (frames per utterance), the files fairseq's ``learn_kmeans.py`` and
``dump_km_label.py`` read. The frames are streamed into a memory-mapped .npy sized from the manifest's sample
counts; the .npy is renamed into place when complete and the .len written last, so a shard with a .len is
finished. Shards are independent: several processes (or GPUs) can dump different ranks of one split.
"""

from __future__ import annotations

import os
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio

from ..data.audio import SAMPLE_RATE, read_audio
from ..data.manifest import Manifest
from ..files import atomic_path, write_text

MFCC_WINDOW = 400
MFCC_HOP = 160

Progress = Callable[[int, int], None]  # (utterances done, total)


class FeatureError(ValueError):
    """Features that cannot be dumped; the message names the manifest line or checkpoint and what to do."""


class MfccReader:
    """(S,) waveform -> (T, 39) float32 MFCC + deltas + delta-deltas (fairseq's dump_mfcc_feature.py)."""

    rate = 100
    dim = 39

    def frames(self, num_samples: int) -> int:
        return 0 if num_samples < MFCC_WINDOW else (num_samples - MFCC_WINDOW) // MFCC_HOP + 1

    @torch.no_grad()
    def __call__(self, waveform: torch.Tensor) -> np.ndarray:
        mfcc = torchaudio.compliance.kaldi.mfcc(
            waveform=waveform.float().view(1, -1), sample_frequency=SAMPLE_RATE, use_energy=False
        ).T  # (13, T)
        deltas = torchaudio.functional.compute_deltas(mfcc)
        delta_deltas = torchaudio.functional.compute_deltas(deltas)
        return torch.cat([mfcc, deltas, delta_deltas]).T.contiguous().numpy().astype(np.float32)


class HubertLayerReader:
    """(S,) waveform -> (T, C) output of transformer block ``layer`` of a fairseq HuBERT checkpoint."""

    rate = 50

    def __init__(self, checkpoint: str, layer: int, device: str = "cpu"):
        from ..models.upstream import build_upstream

        upstream = build_upstream(checkpoint)
        num_layers = len(upstream.layers)
        if not 1 <= layer <= num_layers:
            raise FeatureError(f"{checkpoint}: layer {layer} asked, the model has transformer blocks 1..{num_layers}")
        self.model = upstream.model.eval().to(device)
        self.normalize = upstream.normalize
        self.layer = layer
        self.device = device
        self.dim = int(upstream.embed_dim)
        self.conv = [(conv.kernel_size[0], conv.stride[0]) for conv in _conv1d_layers(self.model.feature_extractor)]

    def frames(self, num_samples: int) -> int:
        length = num_samples
        for kernel, stride in self.conv:
            length = (length - kernel) // stride + 1 if length >= kernel else 0
        return length

    @torch.no_grad()
    def __call__(self, waveform: torch.Tensor) -> np.ndarray:
        source = waveform.float().to(self.device)
        if self.normalize:
            source = F.layer_norm(source, source.shape)
        features, _ = self.model.extract_features(
            source=source.view(1, -1), padding_mask=None, mask=False, output_layer=self.layer
        )
        return features[0].float().cpu().numpy()


def _conv1d_layers(module: torch.nn.Module) -> List[torch.nn.Conv1d]:
    return [layer for layer in module.modules() if isinstance(layer, torch.nn.Conv1d)]


def shard_range(total: int, nshard: int, rank: int) -> Tuple[int, int]:
    """[start, end) of shard ``rank`` of ``nshard`` over ``total`` utterances (fairseq's feature_utils)."""
    if not 0 <= rank < nshard:
        raise FeatureError(f"shard rank {rank} is not in 0..{nshard - 1}")
    return round(total / nshard * rank), round(total / nshard * (rank + 1))


def shard_paths(directory: str, split: str, rank: int, nshard: int) -> Tuple[str, str]:
    stem = os.path.join(directory, f"{split}_{rank}_{nshard}")
    return f"{stem}.npy", f"{stem}.len"


def shard_done(directory: str, split: str, rank: int, nshard: int) -> bool:
    return os.path.isfile(shard_paths(directory, split, rank, nshard)[1])


def dump_shard(
    reader, manifest: Manifest, split: str, rank: int, nshard: int, directory: str,
    progress: Optional[Progress] = None,
) -> List[str]:
    """Write one shard's .npy and .len; returns their file names."""
    start, end = shard_range(len(manifest.entries), nshard, rank)
    entries = manifest.entries[start:end]
    expected = [reader.frames(entry.num_samples) for entry in entries]
    npy_path, len_path = shard_paths(directory, split, rank, nshard)
    with atomic_path(npy_path) as temporary:
        if sum(expected) == 0:  # a memory map cannot have zero length
            with open(temporary, "wb") as handle:  # a file object: np.save adds no ".npy"
                np.save(handle, np.zeros((0, reader.dim), dtype=np.float32))
        else:
            _stream_frames(reader, manifest, entries, expected, temporary, progress)
    write_text(len_path, "".join(f"{n}\n" for n in expected))
    return [os.path.basename(npy_path), os.path.basename(len_path)]


def _stream_frames(reader, manifest, entries, expected, path, progress):
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(sum(expected), reader.dim))
    offset = 0
    for done, (entry, count) in enumerate(zip(entries, expected), start=1):
        where = f"{manifest.path}:{entry.line}"
        waveform = read_audio(entry.path, SAMPLE_RATE, where=where)
        if len(waveform) != entry.num_samples:
            raise FeatureError(
                f"{where}: {entry.path} has {len(waveform)} samples, the manifest says {entry.num_samples}; "
                f"regenerate the manifest"
            )
        frames = reader(waveform)
        if frames.shape != (count, reader.dim):
            raise FeatureError(f"{where}: expected {count} x {reader.dim} feature frames, got {frames.shape}")
        array[offset:offset + count] = frames
        offset += count
        if progress is not None:
            progress(done, len(entries))
    array.flush()
    del array


def read_lengths(directory: str, split: str, rank: int, nshard: int) -> List[int]:
    with open(shard_paths(directory, split, rank, nshard)[1], encoding="utf-8") as handle:
        return [int(line) for line in handle]


def open_shard(directory: str, split: str, rank: int, nshard: int) -> Tuple[np.ndarray, List[int]]:
    """(frames memory-mapped read-only, lengths) of a finished shard."""
    npy_path, _ = shard_paths(directory, split, rank, nshard)
    lengths = read_lengths(directory, split, rank, nshard)
    frames = np.load(npy_path, mmap_mode="r")
    if frames.shape[0] != sum(lengths):
        raise FeatureError(f"{npy_path}: {frames.shape[0]} frames but its .len file lists {sum(lengths)}; "
                           f"redo the features stage (--force-stage)")
    return frames, lengths


def utterance_offsets(lengths: List[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
