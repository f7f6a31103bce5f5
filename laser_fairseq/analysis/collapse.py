"""Two indicators of representation collapse, on pooled frames ``(N, C)`` of one layer.

- :func:`mean_pairwise_cosine` -- mean cosine similarity over all pairs of distinct frames: 1 when every
  frame points the same way (the collapse the soft-DTW-only ablation is expected to show), near 0 for
  frames spread in all directions;
- :func:`effective_rank` -- exp of the entropy of the normalised singular values of the centred frames
  (Roy & Vetterli 2007): how many directions the frames really use, between 1 and min(N, C).
"""

from __future__ import annotations

import math

import numpy as np


def mean_pairwise_cosine(frames: np.ndarray) -> float:
    """Mean of cos(f_i, f_j) over all ordered pairs i != j of the rows of ``frames`` (N, C), N >= 2.

    Exact, in O(N C): with unit rows u_i, sum_{i != j} u_i . u_j = ||sum_i u_i||^2 - N. Zero rows count as
    cosine 0 with everything.
    """
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 2 or frames.shape[0] < 2:
        raise ValueError(f"mean_pairwise_cosine needs an (N, C) array with N >= 2, got shape {frames.shape}")
    norms = np.linalg.norm(frames, axis=1, keepdims=True)
    units = np.divide(frames, norms, out=np.zeros_like(frames), where=norms > 0)
    count = units.shape[0]
    total = units.sum(axis=0)
    self_terms = float((units * units).sum())
    return float((total @ total - self_terms) / (count * (count - 1)))


def effective_rank(frames: np.ndarray) -> float:
    """exp(-sum p_k log p_k), p_k = s_k / sum(s) over the singular values s of the centred ``frames`` (N, C).

    1.0 for frames on one line, k for k orthogonal directions of equal spread; NaN when all frames are equal.
    """
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 2 or frames.shape[0] < 2:
        raise ValueError(f"effective_rank needs an (N, C) array with N >= 2, got shape {frames.shape}")
    centred = frames - frames.mean(axis=0)
    # singular values from the (C, C) Gram matrix: cheap for many frames of a few hundred dimensions
    eigenvalues = np.linalg.eigvalsh(centred.T @ centred)
    # eigenvalues within the solver's rounding of zero are zero (their square roots would not be)
    eigenvalues[eigenvalues <= eigenvalues.max() * frames.shape[1] * np.finfo(np.float64).eps] = 0.0
    singular = np.sqrt(eigenvalues)
    total = singular.sum()
    if total <= 0.0:
        return math.nan
    p = singular[singular > 0] / total
    return float(math.exp(-(p * np.log(p)).sum()))
