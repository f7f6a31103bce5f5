"""The phone probe: a linear frame classifier of phone labels, its frame accuracy and phone error rate.

The classifier is linear discriminant analysis (LDA): Gaussian classes with one shared covariance,
shrunk towards the identity, on standardised features. Its class scores are linear in the frame,
w_k^T z + b_k with w_k = (S_w + a I)^-1 m_k and b_k = log p_k - m_k^T w_k / 2 (m_k class means, S_w the
pooled within-class covariance, p_k class frequencies, a the shrinkage), and it is solved in closed form
from sufficient statistics, so training frames are streamed and never kept: :class:`ProbeStatistics`
accumulates the frame count, the frame sum (C,), the raw second moment sum x x^T (C, C), the per-class
frame sums (C, P) and the class counts (P,), all in float64.

The shrinkage is chosen by frame accuracy on held-out training utterances, never on the test utterances:
:class:`ProbeTrainer` takes the fitting utterances first, then scores every candidate shrinkage on each
held-out utterance as it arrives, and finally refits on all of them with the best one.
(Measured against ridge regression on one-hot targets and softmax regression: docs/phone_probe.md.)

The phone error rate collapses repeated frame labels into one phone, then drops silence, in both the
prediction and the reference, and pools the edit distance over utterances:
PER = sum of edit distances / sum of reference phones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import editdistance
import numpy as np

DEFAULT_SHRINKAGES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # added to the standardised covariance
FLUSH_FRAMES = 2048  # frames buffered before one matmul: per-utterance products are too small to be fast


class FrameBuffer:
    """Collects the (frames, labels) of utterances and hands them over as one float64 batch."""

    def __init__(self):
        self._parts: List[Tuple[np.ndarray, np.ndarray]] = []
        self._frames = 0

    def add(self, frames: np.ndarray, labels: np.ndarray) -> bool:
        """Keep an utterance's (T, C) frames and (T,) labels; True once FLUSH_FRAMES frames are waiting."""
        self._parts.append((frames, np.asarray(labels)))
        self._frames += len(frames)
        return self._frames >= FLUSH_FRAMES

    def take(self) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """((N, C) float64 frames, (N,) labels) of everything waiting, or None; empties the buffer."""
        if not self._parts:
            return None
        frames = np.concatenate([frames for frames, _ in self._parts]).astype(np.float64)
        labels = np.concatenate([labels for _, labels in self._parts])
        self._parts, self._frames = [], 0
        return frames, labels


class ProbeStatistics:
    """Sufficient statistics of (frames, class labels) pairs for linear discriminant analysis."""

    def __init__(self, dim: int, num_classes: int):
        self.dim, self.num_classes = dim, num_classes
        self._count = 0
        self._frame_sum = np.zeros(dim)
        self._second_moment = np.zeros((dim, dim))
        self._cross_moment = np.zeros((dim, num_classes))
        self._class_counts = np.zeros(num_classes)
        self._buffer = FrameBuffer()

    def add(self, frames: np.ndarray, labels: np.ndarray):
        """(T, C) frames with their (T,) class indices."""
        if frames.ndim != 2 or frames.shape[1] != self.dim or len(labels) != len(frames):
            raise ValueError(f"expected (T, {self.dim}) frames and T labels, got {frames.shape} and {len(labels)}")
        if self._buffer.add(frames, labels):
            self._flush()

    def _flush(self):
        batch = self._buffer.take()
        if batch is None:
            return
        x, y = batch
        self._count += len(x)
        self._frame_sum += x.sum(axis=0)
        self._second_moment += x.T @ x
        one_hot = np.zeros((len(y), self.num_classes))
        one_hot[np.arange(len(y)), y] = 1.0
        self._cross_moment += x.T @ one_hot
        self._class_counts += np.bincount(y, minlength=self.num_classes)

    def moments(self) -> Tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(n, sum x, sum x x^T, sum x y^T, sum y) with y the one-hot class of x."""
        self._flush()
        return self._count, self._frame_sum, self._second_moment, self._cross_moment, self._class_counts


@dataclass(frozen=True)
class Standardised:
    """Moments of frames in the coordinates z = (x - mean) / scale."""

    count: int
    zz: np.ndarray  # (C, C) sum z z^T
    zy: np.ndarray  # (C, P) sum z y^T
    y_sum: np.ndarray  # (P,)


def standardisation(stats: ProbeStatistics) -> Tuple[np.ndarray, np.ndarray]:
    """(mean, scale) of the frames; constant features get scale 1."""
    n, s, xx, _, _ = stats.moments()
    mean = s / n
    variance = np.clip(np.diag(xx) / n - mean**2, 0.0, None)
    scale = np.sqrt(variance)
    scale[scale <= 1e-12 * np.maximum(1.0, np.abs(mean))] = 1.0
    return mean, scale


def standardised_moments(stats: ProbeStatistics, mean: np.ndarray, scale: np.ndarray) -> Standardised:
    n, s, xx, xy, c = stats.moments()
    centred = xx - np.outer(s, mean) - np.outer(mean, s) + n * np.outer(mean, mean)
    return Standardised(n, centred / np.outer(scale, scale), (xy - np.outer(mean, c)) / scale[:, None], c)


@dataclass(frozen=True)
class LinearProbe:
    weight: np.ndarray  # (C, P) on raw frames
    bias: np.ndarray  # (P,), -inf for classes never seen in training
    shrinkage: float

    def predict(self, frames: np.ndarray) -> np.ndarray:
        """(T, C) frames -> (T,) class indices."""
        return np.argmax(np.asarray(frames, dtype=np.float64) @ self.weight + self.bias, axis=1)


def discriminants(stats: ProbeStatistics, shrinkages: Sequence[float]) -> List[LinearProbe]:
    """The LDA probe of these statistics for every shrinkage (one eigendecomposition for all)."""
    mean, scale = standardisation(stats)
    moments = standardised_moments(stats, mean, scale)
    seen = moments.y_sum > 0
    class_means = moments.zy[:, seen] / moments.y_sum[seen]  # (C, P_seen), z = (x - mean) / scale
    within = (moments.zz - moments.zy[:, seen] @ class_means.T) / moments.count
    eigenvalues, eigenvectors = np.linalg.eigh(within)
    projected = eigenvectors.T @ class_means
    log_prior = np.log(moments.y_sum[seen] / moments.count)
    probes = []
    for shrinkage in shrinkages:
        weight = eigenvectors @ (projected / (np.clip(eigenvalues, 0.0, None) + shrinkage)[:, None])
        bias = log_prior - 0.5 * np.sum(class_means * weight, axis=0)
        raw_weight = np.zeros((stats.dim, stats.num_classes))
        raw_bias = np.full(stats.num_classes, -np.inf)
        raw_weight[:, seen] = weight / scale[:, None]  # w^T (x - mean) / scale + b on raw frames
        raw_bias[seen] = bias - mean @ raw_weight[:, seen]
        probes.append(LinearProbe(raw_weight, raw_bias, float(shrinkage)))
    return probes


def predict_utterances(probe: LinearProbe, sequences: Sequence[np.ndarray]) -> List[np.ndarray]:
    """Per utterance (T_u, C) frames -> (T_u,) class indices, a few thousand frames per matmul (small
    products are dominated by BLAS threading overhead)."""
    predicted: List[np.ndarray] = []
    for chunk in _chunks(sequences):
        labels = probe.predict(np.concatenate(chunk))
        predicted += np.split(labels, np.cumsum([len(frames) for frames in chunk])[:-1])
    return predicted


def _chunks(sequences: Sequence[np.ndarray]):
    """Consecutive groups of sequences holding at least FLUSH_FRAMES frames (the last may hold fewer)."""
    chunk, frames = [], 0
    for sequence in sequences:
        chunk.append(sequence)
        frames += len(sequence)
        if frames >= FLUSH_FRAMES:
            yield chunk
            chunk, frames = [], 0
    if chunk:
        yield chunk


class ProbeTrainer:
    """One layer's probe from streamed utterances: every fitting utterance first, then the held-out ones,
    which score each candidate shrinkage and then join the final fit."""

    def __init__(self, dim: int, num_classes: int, shrinkages: Sequence[float] = DEFAULT_SHRINKAGES):
        self.statistics = ProbeStatistics(dim, num_classes)
        self.shrinkages = tuple(shrinkages)
        self._candidates: Optional[List[LinearProbe]] = None
        self._hits = np.zeros(len(self.shrinkages), dtype=np.int64)
        self._held_out = FrameBuffer()  # held-out frames not scored yet

    def add(self, frames: np.ndarray, labels: np.ndarray, held_out: bool):
        """(T, C) frames and their (T,) class indices; ``held_out`` ones choose the shrinkage."""
        if held_out:
            if self._candidates is None:
                self._candidates = discriminants(self.statistics, self.shrinkages)
            if self._held_out.add(frames, labels):
                self._score_held_out()
        elif self._candidates is not None:
            raise ValueError("every fitting utterance must be added before the held-out ones")
        self.statistics.add(frames, labels)

    def _score_held_out(self):
        """Held-out hits of every candidate, all candidates in one matmul."""
        batch = self._held_out.take()
        if batch is None:
            return
        frames, labels = batch
        weights = np.concatenate([c.weight for c in self._candidates], axis=1)  # (C, K P)
        biases = np.concatenate([c.bias for c in self._candidates])
        scores = (frames @ weights + biases).reshape(len(frames), len(self._candidates), -1)
        self._hits += np.sum(np.argmax(scores, axis=2) == labels[:, None], axis=0)

    def finish(self) -> LinearProbe:
        """The probe refitted on every utterance with the shrinkage of the most held-out hits (ties: the
        strongest)."""
        if self._candidates is None:
            raise ValueError("no held-out utterances: the shrinkage cannot be chosen")
        self._score_held_out()
        best = self._hits.max()
        shrinkage = max(s for s, hits in zip(self.shrinkages, self._hits) if hits == best)
        return discriminants(self.statistics, [shrinkage])[0]

    @property
    def class_counts(self) -> np.ndarray:
        return self.statistics.moments()[4]


# --------------------------------------------------------------------------------------------- scores


def collapse(frame_labels: Sequence[int], silence: Optional[int]) -> List[int]:
    """Frame labels -> phone sequence: runs of one label become one phone, then silence is dropped."""
    phones, previous = [], None
    for label in np.asarray(frame_labels).tolist():
        if label != previous and label != silence:
            phones.append(label)
        previous = label
    return phones


@dataclass(frozen=True)
class PhoneScores:
    accuracy: float  # fraction of frames whose label is predicted
    error_rate: float  # pooled edit distance / reference phones (NaN if the references have no phone)
    frames: int
    reference_phones: int


def score(predicted: Sequence[np.ndarray], reference: Sequence[np.ndarray], silence: Optional[int]) -> PhoneScores:
    """Frame accuracy and PER of per-utterance predicted frame labels against the reference frame labels."""
    hits = frames = errors = phones = 0
    for guess, truth in zip(predicted, reference):
        if len(guess) != len(truth):
            raise ValueError(f"{len(guess)} predicted frame labels for {len(truth)} reference labels")
        hits += int(np.sum(np.asarray(guess) == np.asarray(truth)))
        frames += len(truth)
        truth_phones = collapse(truth, silence)
        errors += editdistance.eval(collapse(guess, silence), truth_phones)
        phones += len(truth_phones)
    return PhoneScores(hits / frames, errors / phones if phones else float("nan"), frames, phones)


def majority_chance(class_counts: np.ndarray, reference: Sequence[np.ndarray], silence: Optional[int]) -> PhoneScores:
    """The scores of always predicting the most frequent training class (the chance level)."""
    majority = int(np.argmax(class_counts))
    return score([np.full(len(labels), majority) for labels in reference], reference, silence)
