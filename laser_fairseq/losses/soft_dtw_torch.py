"""The pure-PyTorch soft-DTW backend (``backend="torch"``): the DP of many problems at once, on any device.

The definitions and the public API are in :mod:`laser_fairseq.losses.soft_dtw`. :class:`TorchDP`'s
``forward`` / ``backward`` define the contract of a cost-level DP (:class:`laser_fairseq.losses.soft_dtw_triton.TritonDP`
follows it too); ``BIG`` is the DP border value of every backend (numba and Triton import it from here).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

# Finite stand-in for +inf on the DP border: exp(-(BIG - finite) / gamma) underflows to exactly 0,
# and no inf - inf can produce NaN.
BIG = 1e10


def _skew_index(n: int, m: int, device: torch.device) -> torch.Tensor:
    """Flat index into an ``(n, m)`` matrix for every skewed slot ``(k, i)``, cell ``(i, k - i)``.

    Returns ``(n + m + 1, n + 1)`` int64; slots outside the matrix point at entry 0 (never read).
    """
    i = torch.arange(n + 1, device=device)
    k = torch.arange(n + m + 1, device=device)
    j = k[:, None] - i[None, :]
    inside = (i[None, :] >= 1) & (j >= 1) & (j <= m)
    return torch.where(inside, (i[None, :] - 1) * m + (j - 1), torch.zeros_like(j))


def _unskew_index(n: int, m: int, device: torch.device) -> torch.Tensor:
    """Flat index into a skewed ``(n + m + 1, n + 1)`` array for every cell: ``(n, m)`` int64."""
    i = torch.arange(1, n + 1, device=device)[:, None]
    j = torch.arange(1, m + 1, device=device)[None, :]
    return (i + j) * (n + 1) + i


def _softmin(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, gamma: float) -> torch.Tensor:
    """Stable ``softmin_gamma`` of three same-shaped tensors (min subtracted before the exps)."""
    r = torch.minimum(torch.minimum(a, b), c)
    s = torch.exp((r - a) / gamma) + torch.exp((r - b) / gamma) + torch.exp((r - c) / gamma)
    return r - gamma * torch.log(s)


def _softmin_weights(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, gamma: float):
    """Weights ``(w_a, w_b, w_c)`` of a stable softmin of three same-shaped tensors (its gradient); sum 1."""
    r = torch.minimum(torch.minimum(a, b), c)
    ea = torch.exp((r - a) / gamma)
    eb = torch.exp((r - b) / gamma)
    ec = torch.exp((r - c) / gamma)
    s = ea + eb + ec
    return ea / s, eb / s, ec / s


def _diag_range(k: int, n: int, m: int) -> tuple[int, int]:
    """Rows ``i`` of anti-diagonal ``k = i + j`` inside ``1 <= i <= n, 1 <= j <= m`` (inclusive)."""
    return max(1, k - m), min(n, k - 1)


def _torch_empty(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Uninitialised buffer for a cost batch (backends may allocate differently)."""
    return torch.empty(shape, dtype=dtype, device=device)


class TorchDP:
    """Soft-DTW DP in pure PyTorch on skewed (anti-diagonal-major) storage.

    Slot ``[p, k, i]`` holds cell ``(i, j = k - i)`` of problem ``p``. Anti-diagonal ``k`` depends
    only on ``k - 1`` and ``k - 2``, and its predecessors are contiguous slices there, so each step
    is a handful of vectorised ops over all problems and the whole diagonal.

    Each diagonal is stored relative to its minimum, whose running level is kept in float64
    (``base``): R reaches hundreds along a path, and float32 differences of such values would cost
    ~1e-4 of relative accuracy in the softmin weights at gamma = 0.1.
    """

    empty = staticmethod(_torch_empty)

    @staticmethod
    def forward(costs: Sequence[torch.Tensor], rows: Sequence[torch.Tensor], cols: Sequence[torch.Tensor],
                symmetric: Sequence[bool], gamma: float):
        """Run the DP of several problem batches in one go.

        Args:
            costs: list of ``(B_t, N_t, M_t)`` cost tensors.
            rows, cols: lists of ``(B_t,)`` int64 valid lengths.
            symmetric: per batch, whether its costs are symmetric (xx, yy); this backend computes the
                full DP anyway.
            gamma: softmin temperature.

        Returns:
            (list of ``(B_t,)`` values, state for :meth:`backward`).
        """
        n = max(c.shape[1] for c in costs)
        m = max(c.shape[2] for c in costs)
        C = torch.cat([F.pad(c, (0, m - c.shape[2], 0, n - c.shape[1])) for c in costs])  # (P, n, m)
        r_len = torch.cat(list(rows))
        c_len = torch.cat(list(cols))
        P = C.shape[0]
        device = C.device
        K = n + m + 1
        Cs = C.reshape(P, n * m)[:, _skew_index(n, m, device)]  # (P, K, n + 1)
        R = torch.full((P, K, n + 1), BIG, dtype=C.dtype, device=device)
        R[:, 0, 0] = 0.0
        base = torch.zeros((P, K), dtype=torch.float64, device=device)  # level of each diagonal
        rows_idx = torch.arange(n + 1, device=device)
        for k in range(2, K):
            lo, hi = _diag_range(k, n, m)
            shift = (base[:, k - 2] - base[:, k - 1]).to(C.dtype)[:, None]
            val = Cs[:, k, lo:hi + 1] + _softmin(R[:, k - 2, lo - 1:hi] + shift, R[:, k - 1, lo - 1:hi],
                                                 R[:, k - 1, lo:hi + 1], gamma)
            # level: minimum over the problem's valid cells (0 once it has none left)
            i = rows_idx[lo:hi + 1]
            valid = (i[None, :] <= r_len[:, None]) & ((k - i)[None, :] <= c_len[:, None])
            level = torch.amin(torch.where(valid, val, BIG), dim=1)  # (min(dim=) is slow: OpenMP per call)
            level = torch.where(level < 0.5 * BIG, level, torch.zeros((), dtype=level.dtype, device=device))
            R[:, k, lo:hi + 1] = val - level[:, None]
            base[:, k] = base[:, k - 1] + level
        p = torch.arange(P, device=device)
        values = R[p, r_len + c_len, r_len].to(torch.float64) + base[p, r_len + c_len]
        state = (R, base, r_len, c_len, [tuple(c.shape) for c in costs], list(symmetric), n, m, gamma)
        return list(values.split([c.shape[0] for c in costs])), state

    @staticmethod
    def backward(state, grads: Sequence[torch.Tensor]):
        """grads[t]: ``(B_t,)`` d loss / d value -> list of ``(B_t, N_t, M_t)`` matrices ``G_t``.

        ``G_t = d loss / d cost`` for a non-symmetric batch, ``G_t + G_t^T`` for a symmetric one.
        Entries outside the valid lengths are exactly 0.
        """
        R, base, r_len, c_len, shapes, symmetric, n, m, gamma = state
        P, K, _ = R.shape
        device = R.device
        # softmin weights of every cell w.r.t. its three predecessors, all cells at once
        Rp = F.pad(R, (1, 0, 2, 0), value=BIG)  # Rp[:, k + 2, i + 1] = R[:, k, i]
        shift = F.pad((base[:, :-2] - base[:, 1:-1]).to(R.dtype), (2, 0))[:, :, None]  # level k-2 vs k-1
        wd, wu, wl = _softmin_weights(Rp[:, :-2, :-1] + shift, Rp[:, 1:-1, :-1], Rp[:, 1:-1, 1:], gamma)
        i = torch.arange(n + 1, device=device)
        j = torch.arange(K, device=device)[:, None] - i
        valid = ((i >= 1) & (j >= 1) & (i <= r_len[:, None, None]) & (j <= c_len[:, None, None]))
        zero = torch.zeros((), dtype=R.dtype, device=device)
        # pad by 2 diagonals and 1 row at the end so successors of the last cells read zeros
        wd, wu, wl = (F.pad(torch.where(valid, w, zero), (0, 1, 0, 2)) for w in (wd, wu, wl))
        E = torch.zeros((P, K + 2, n + 2), dtype=R.dtype, device=device)
        p = torch.arange(P, device=device)
        E[p, r_len + c_len, r_len] = 1.0  # seed: d R_nm / d R_nm
        for k in range(K - 1, 1, -1):
            lo, hi = _diag_range(k, n, m)
            E[:, k, lo:hi + 1] += (wd[:, k + 2, lo + 1:hi + 2] * E[:, k + 2, lo + 1:hi + 2]
                                   + wu[:, k + 1, lo + 1:hi + 2] * E[:, k + 1, lo + 1:hi + 2]
                                   + wl[:, k + 1, lo:hi + 1] * E[:, k + 1, lo:hi + 1])
        E = E[:, :K, :n + 1].reshape(P, K * (n + 1))[:, _unskew_index(n, m, device)]  # (P, n, m)
        g = torch.cat(list(grads)).to(E.dtype)
        E = E * g[:, None, None]
        out, start = [], 0
        for (b, nt, mt), sym in zip(shapes, symmetric):
            g_t = _flush_tiny(E[start:start + b, :nt, :mt])
            out.append(_symmetrize(g_t) if sym else g_t)
            start += b
        return out



def _symmetrize(g: torch.Tensor) -> torch.Tensor:
    """``G + G^T`` of a batch of square matrices ``(B, N, N)``."""
    return g + g.transpose(1, 2)


def _flush_tiny(g: torch.Tensor) -> torch.Tensor:
    """Zero float32 entries below 2^-100 so the following matmuls never meet denormal numbers.

    (A denormal operand makes sgemm several times slower; the entries dropped are ~1e-30 of the
    largest, invisible in float32 results.) float64 is left exact.
    """
    if g.dtype != torch.float32:
        return g
    return torch.where(g.abs() < 2.0 ** -100, torch.zeros((), dtype=g.dtype, device=g.device), g)
