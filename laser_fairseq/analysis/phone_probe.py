"""The phone probe: a linear frame classifier of phone labels, its frame accuracy and phone error rate.

The classifier is ridge regression on one-hot phone targets with standardised features (argmax of the
class scores), solved in closed form from sufficient statistics, so training frames are streamed and never
kept: :class:`ProbeStatistics` accumulates, per layer, the frame count, the frame sum (C,), the raw second
moment sum x x^T (C, C), the cross moment sum x y^T (C, P) and the class counts (P,), all in float64.

:func:`fit_probe` chooses the ridge strength on held-out training utterances (``selection``, never the
test utterances) by their squared error, computed exactly from their statistics, then refits on all
training frames. Strengths are relative: lambda = strength x the number of frames fitted (standardised
features have unit variance, so this is a per-frame penalty comparable across layers and corpus sizes).

The phone error rate collapses repeated frame labels into one phone, then drops silence, in both the
prediction and the reference, and pools the edit distance over utterances:
PER = sum of edit distances / sum of reference phones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import editdistance
import numpy as np

DEFAULT_STRENGTHS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
FLUSH_FRAMES = 2048  # frames buffered before one matmul: per-utterance products are too small to be fast


class ProbeStatistics:
    """Sufficient statistics of (frames, labels) pairs for ridge regression on one-hot targets."""

    def __init__(self, dim: int, num_classes: int):
        self.dim, self.num_classes = dim, num_classes
        self._count = 0
        self._frame_sum = np.zeros(dim)
        self._second_moment = np.zeros((dim, dim))
        self._cross_moment = np.zeros((dim, num_classes))
        self._class_counts = np.zeros(num_classes)
        self._pending: List[Tuple[np.ndarray, np.ndarray]] = []
        self._pending_frames = 0

    def add(self, frames: np.ndarray, labels: np.ndarray):
        """(T, C) frames with their (T,) class indices."""
        if frames.ndim != 2 or frames.shape[1] != self.dim or len(labels) != len(frames):
            raise ValueError(f"expected (T, {self.dim}) frames and T labels, got {frames.shape} and {len(labels)}")
        self._pending.append((frames, np.asarray(labels)))
        self._pending_frames += len(frames)
        if self._pending_frames >= FLUSH_FRAMES:
            self._flush()

    def _flush(self):
        if not self._pending:
            return
        x = np.concatenate([frames for frames, _ in self._pending]).astype(np.float64)
        y = np.concatenate([labels for _, labels in self._pending])
        self._pending, self._pending_frames = [], 0
        self._count += len(x)
        self._frame_sum += x.sum(axis=0)
        self._second_moment += x.T @ x
        one_hot = np.zeros((len(y), self.num_classes))
        one_hot[np.arange(len(y)), y] = 1.0
        self._cross_moment += x.T @ one_hot
        self._class_counts += np.bincount(y, minlength=self.num_classes)

    def moments(self) -> Tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(n, sum x, sum x x^T, sum x y^T, sum y) with y the one-hot targets."""
        self._flush()
        return self._count, self._frame_sum, self._second_moment, self._cross_moment, self._class_counts

    def __add__(self, other: "ProbeStatistics") -> "ProbeStatistics":
        total = ProbeStatistics(self.dim, self.num_classes)
        for part in (self, other):
            n, s, xx, xy, c = part.moments()
            total._count += n
            total._frame_sum += s
            total._second_moment += xx
            total._cross_moment += xy
            total._class_counts += c
        return total


@dataclass(frozen=True)
class Standardised:
    """Moments of some frames in the coordinates z = (x - mean) / scale of a (possibly other) frame set."""

    count: int
    z_sum: np.ndarray  # (C,)
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
    return Standardised(n, (s - n * mean) / scale, centred / np.outer(scale, scale), (xy - np.outer(mean, c)) / scale[:, None], c)


def squared_error(part: Standardised, weight: np.ndarray, bias: np.ndarray) -> float:
    """sum over the part's frames of ||y - (W^T z + b)||^2, from its moments alone (y one-hot: ||y||^2 = 1)."""
    return float(
        part.count
        - 2.0 * np.sum(weight * part.zy)
        - 2.0 * bias @ part.y_sum
        + np.sum(weight * (part.zz @ weight))
        + 2.0 * bias @ (weight.T @ part.z_sum)
        + part.count * bias @ bias
    )


@dataclass(frozen=True)
class LinearProbe:
    weight: np.ndarray  # (C, P) on raw frames
    bias: np.ndarray  # (P,)
    strength: float  # the chosen relative ridge strength

    def predict(self, frames: np.ndarray) -> np.ndarray:
        """(T, C) frames -> (T,) class indices."""
        return np.argmax(np.asarray(frames, dtype=np.float64) @ self.weight + self.bias, axis=1)


def fit_probe(
    fit: ProbeStatistics, selection: ProbeStatistics, strengths: Sequence[float] = DEFAULT_STRENGTHS
) -> LinearProbe:
    """Ridge probe: the strength with the least squared error on ``selection`` when fitted on ``fit``
    (ties: the strongest), then refitted with that strength on both."""
    strength = choose_strength(fit, selection, strengths)
    total = fit + selection
    mean, scale = standardisation(total)
    part = standardised_moments(total, mean, scale)
    regularised = part.zz + strength * part.count * np.eye(fit.dim)
    target_mean = part.y_sum / part.count
    weight = np.linalg.solve(regularised, part.zy - np.outer(part.z_sum, target_mean))
    # back to raw frames: W^T (x - mean) / scale + b
    raw_weight = weight / scale[:, None]
    return LinearProbe(raw_weight, target_mean - mean @ raw_weight, float(strength))


def choose_strength(fit: ProbeStatistics, selection: ProbeStatistics, strengths: Sequence[float]) -> float:
    mean, scale = standardisation(fit)
    fitted = standardised_moments(fit, mean, scale)  # z_sum == 0 here: centred on its own mean
    held_out = standardised_moments(selection, mean, scale)
    eigenvalues, eigenvectors = np.linalg.eigh(fitted.zz)
    projected = eigenvectors.T @ fitted.zy
    bias = fitted.y_sum / fitted.count
    errors = []
    for strength in strengths:
        weight = eigenvectors @ (projected / (np.clip(eigenvalues, 0.0, None) + strength * fitted.count)[:, None])
        errors.append(squared_error(held_out, weight, bias))
    best = min(errors)
    return float(max(s for s, e in zip(strengths, errors) if e <= best * (1 + 1e-12)))


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
