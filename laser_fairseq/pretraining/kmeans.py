"""k-means targets: fit on a sample of the training frames, assign every frame to its nearest centroid.

Follows fairseq's ``learn_kmeans.py``: scikit-learn ``MiniBatchKMeans`` (k-means++ init, ``n_init`` trials,
mini-batches, no reassignment) on the frames of a random ``sample_fraction`` of the training utterances of
every shard. The model is kept as a plain float32 centroid array (``centroids.npy``), not a pickle.
Assignment is fairseq's ``ApplyKmeans``: argmin_k ||x - c_k||^2 computed as ||x||^2 - 2 x.c_k + ||c_k||^2.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import List

import numpy as np

from .features import open_shard, utterance_offsets
from .schedule import KmeansSettings

ASSIGN_CHUNK = 65536  # frames per distance matrix


@dataclass
class KmeansFit:
    centroids: np.ndarray  # (K, D) float32
    inertia: float  # mean squared distance of the sampled frames to their nearest centroid
    seconds: float  # of the fit


def sample_frames(feature_dir: str, split: str, nshard: int, fraction: float, seed: int) -> tuple:
    """(frames (N, D) float32, utterances sampled): ``ceil(fraction * n)`` random utterances of every shard."""
    chunks: List[np.ndarray] = []
    utterances = 0
    for rank in range(nshard):
        frames, lengths = open_shard(feature_dir, split, rank, nshard)
        if not lengths:
            continue
        offsets = utterance_offsets(lengths)
        count = min(len(lengths), math.ceil(len(lengths) * fraction))
        chosen = np.sort(np.random.default_rng([seed, rank]).choice(len(lengths), count, replace=False))
        chunks += [np.asarray(frames[offsets[i]:offsets[i + 1]]) for i in chosen]
        utterances += count
    if not chunks:
        raise ValueError(f"{feature_dir}: no {split} frames to fit k-means on")
    return np.concatenate(chunks).astype(np.float32, copy=False), utterances


def fit_kmeans(frames: np.ndarray, n_clusters: int, settings: KmeansSettings, seed: int) -> KmeansFit:
    """scikit-learn MiniBatchKMeans with fairseq's learn_kmeans.py settings."""
    from sklearn.cluster import MiniBatchKMeans

    if len(frames) < n_clusters:
        raise ValueError(f"k-means with {n_clusters} clusters needs at least as many frames, the sample has "
                         f"{len(frames)}; raise kmeans.sample_fraction or lower n_clusters")
    started = time.monotonic()
    model = MiniBatchKMeans(
        n_clusters=n_clusters,
        init="k-means++",
        max_iter=settings.max_iter,
        batch_size=settings.batch_size,
        tol=settings.tol,
        max_no_improvement=settings.max_no_improvement,
        n_init=settings.n_init,
        reassignment_ratio=settings.reassignment_ratio,
        compute_labels=False,
        random_state=seed,
    )
    model.fit(frames)
    seconds = time.monotonic() - started
    centroids = model.cluster_centers_.astype(np.float32)
    inertia = float(np.mean(nearest_distance(frames, centroids)))
    return KmeansFit(centroids, inertia, seconds)


def _squared_distances(frames: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames, dtype=np.float32)
    return (
        (frames ** 2).sum(1, keepdims=True) - 2.0 * frames @ centroids.T + (centroids ** 2).sum(1)[None, :]
    )


def assign(frames: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(N,) int64 index of the nearest centroid of every frame."""
    out = np.empty(len(frames), dtype=np.int64)
    for start in range(0, len(frames), ASSIGN_CHUNK):
        out[start:start + ASSIGN_CHUNK] = _squared_distances(frames[start:start + ASSIGN_CHUNK], centroids).argmin(1)
    return out


def nearest_distance(frames: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(N,) squared distance of every frame to its nearest centroid (clipped at 0 against rounding)."""
    out = np.empty(len(frames), dtype=np.float64)
    for start in range(0, len(frames), ASSIGN_CHUNK):
        out[start:start + ASSIGN_CHUNK] = np.maximum(
            _squared_distances(frames[start:start + ASSIGN_CHUNK], centroids).min(1), 0.0
        )
    return out


def label_lines(feature_dir: str, split: str, nshard: int, centroids: np.ndarray) -> List[str]:
    """One line per utterance of the split (shards in order): its frames' cluster ids, space-separated."""
    lines: List[str] = []
    for rank in range(nshard):
        frames, lengths = open_shard(feature_dir, split, rank, nshard)
        labels = assign(frames, centroids) if len(frames) else np.zeros(0, dtype=np.int64)
        offsets = utterance_offsets(lengths)
        lines += [" ".join(map(str, labels[offsets[i]:offsets[i + 1]])) for i in range(len(lengths))]
    return lines


def dictionary_text(n_clusters: int) -> str:
    """fairseq's dict.km.txt: every cluster id with a dummy count, as the simple_kmeans recipe writes it."""
    return "".join(f"{k} 1\n" for k in range(n_clusters))
