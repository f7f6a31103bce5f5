"""Pairwise squared Euclidean distances between two batches of frame sequences."""

from __future__ import annotations

from typing import Optional

import torch


def squared_distances(a: torch.Tensor, b: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Squared Euclidean distances between every frame of ``a`` and every frame of ``b``.

    Computed as ``||a_i||^2 + ||b_j||^2 - 2 <a_i, b_j>`` with one batched matmul (never by
    broadcasting to ``(B, N, M, d)``) and clamped at 0 to remove the small negative values the
    cancellation can produce. Differentiable; no square root, so no NaN gradient at distance 0.

    Args:
        a: ``(B, N, d)``.
        b: ``(B, M, d)``, same batch size, dtype and device as ``a``.
        out: optional ``(B, N, M)`` buffer written in place (not differentiable; for no-grad use).

    Returns:
        ``(B, N, M)`` tensor, entry ``[k, i, j] = ||a[k, i] - b[k, j]||^2``.
    """
    if a.dim() != 3 or b.dim() != 3:
        raise ValueError(f"squared_distances expects a (B, N, d) and b (B, M, d), got a {tuple(a.shape)} "
                         f"and b {tuple(b.shape)}")
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError(f"squared_distances: batch and feature sizes must match, got a {tuple(a.shape)} "
                         f"and b {tuple(b.shape)}")
    a_sq = (a * a).sum(-1).unsqueeze(2)  # (B, N, 1)
    b_sq = (b * b).sum(-1).unsqueeze(1)  # (B, 1, M)
    if out is not None:
        torch.add(a_sq, b_sq, out=out)
        out.baddbmm_(a, b.transpose(1, 2), alpha=-2.0)
        return out.clamp_min_(0.0)
    dist = torch.baddbmm(a_sq + b_sq, a, b.transpose(1, 2), alpha=-2.0)
    return dist.clamp_min(0.0)
