"""An independent soft-DTW reference for the tests: plain Python, float64, cell by cell, +inf borders
(written from the definition in laser_fairseq/losses/soft_dtw.py, sharing no code with it)."""

from __future__ import annotations

import math

import numpy as np
import torch


def ref_sdtw(x: np.ndarray, y: np.ndarray, gamma: float) -> float:
    """sdtw_gamma of x (n, d) and y (m, d), squared Euclidean cost, straight from the recursion."""
    n, m = len(x), len(y)
    R = [[math.inf] * (m + 1) for _ in range(n + 1)]
    R[0][0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost = float(sum((float(a) - float(b)) ** 2 for a, b in zip(x[i - 1], y[j - 1])))
            prev = (R[i - 1][j - 1], R[i - 1][j], R[i][j - 1])
            lo = min(prev)
            softmin = lo - gamma * math.log(sum(math.exp(-(p - lo) / gamma) for p in prev))
            R[i][j] = cost + softmin
    return R[n][m]


def ref_divergence(x: np.ndarray, y: np.ndarray, gamma: float) -> float:
    return ref_sdtw(x, y, gamma) - 0.5 * (ref_sdtw(x, x, gamma) + ref_sdtw(y, y, gamma))


def ref_batch(fn, x, y, xl, yl, gamma):
    """Apply a per-pair reference to every (trimmed) pair of a padded batch -> list of floats."""
    x, y = x.detach().double().numpy(), y.detach().double().numpy()
    return [fn(x[b, :int(xl[b])], y[b, :int(yl[b])], gamma) for b in range(len(x))]


def padded_batch(seed: int, xl, yl, d: int = 3, dtype=torch.float64, pad_value=0.0):
    """Random padded batch with the given lengths; padded frames hold ``pad_value``."""
    g = torch.Generator().manual_seed(seed)
    xl, yl = torch.tensor(xl), torch.tensor(yl)
    x = torch.randn(len(xl), int(xl.max()) + 1, d, generator=g, dtype=torch.float64)
    y = torch.randn(len(yl), int(yl.max()) + 2, d, generator=g, dtype=torch.float64)
    for b in range(len(xl)):
        x[b, xl[b]:] = pad_value
        y[b, yl[b]:] = pad_value
    return x.to(dtype), y.to(dtype), xl, yl
