"""numba.cuda kernel for the soft-DTW dynamic programme (backend ``"cuda"``).

One thread block per problem (for the divergence: xy, xx and yy of every pair, 3B blocks, each
with its own lengths). The block sweeps its ``(n, m)`` problem by anti-diagonals; the threads of
the block loop over the cells of a diagonal with a stride of the block size, so sequences of any
length work (no 1024-frame cap). ``__syncthreads`` separates diagonals. Padded cells are never
visited; their gradient is exactly 0.

Numerics: R is kept in float64 (the DP accumulates to hundreds, and the softmin weights need
differences of neighbouring R values to ~1e-7 relative), costs and gradients stay in the input
dtype. The border uses a large finite value instead of +inf. The backward is Cuturi & Blondel's E
recursion with the weights recomputed from R (cheap on a GPU; storing three weights per cell would
triple the memory): the weight of predecessor p in cell s is ``exp((R_s - C_s - R_p) / gamma)``.
For float32 costs the exponentials run in float32 on float64 differences.

Without a GPU the kernels run under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` set before
numba is imported); :class:`CudaDP` then accepts CPU tensors, which is how the tests check it.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from numba import cuda, float32, float64

BIG = 1e10
THREADS_PER_BLOCK = 256


def simulator_enabled() -> bool:
    """True when numba runs CUDA kernels in its CPU simulator."""
    from numba import config

    return bool(config.ENABLE_CUDASIM)


# ----------------------------------------------------------------------------------------------
# Kernels (built per exp precision)
# ----------------------------------------------------------------------------------------------


def _build(fast_exp: bool):
    """Forward and backward kernels; ``fast_exp`` evaluates exp/log in float32 (float32 inputs)."""

    @cuda.jit(device=True, inline=True)
    def wexp(d):
        if fast_exp:
            return float64(math.exp(float32(d)))
        return math.exp(d)

    @cuda.jit(device=True, inline=True)
    def wlog(s):
        if fast_exp:
            return float64(math.log(float32(s)))
        return math.log(s)

    @cuda.jit(device=True, inline=True)
    def problem_shape(p, B, nx, ny):
        """Problem p -> (kind, pair, rows, cols); kind 0 xy, 1 xx, 2 yy."""
        kind = p // B
        b = p - kind * B
        if kind == 0:
            return kind, b, nx[b], ny[b]
        if kind == 1:
            return kind, b, nx[b], nx[b]
        return kind, b, ny[b], ny[b]

    @cuda.jit(device=True, inline=True)
    def cost(kind, b, i, j, cxy, cxx, cyy):
        """C_ij (1-based cell indices) of problem (kind, b)."""
        if kind == 0:
            return cxy[b, i - 1, j - 1]
        if kind == 1:
            return cxx[b, i - 1, j - 1]
        return cyy[b, i - 1, j - 1]

    @cuda.jit
    def forward(cxy, cxx, cyy, nx, ny, gamma, R, values):
        """Block p: R[p] (n + 1, m + 1 used) and values[p] = R_nm."""
        p = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        kind, b, n, m = problem_shape(p, nx.shape[0], nx, ny)
        for i in range(tid, n + 1, nt):
            R[p, i, 0] = BIG
        for j in range(tid, m + 1, nt):
            R[p, 0, j] = BIG
        cuda.syncthreads()
        if tid == 0:
            R[p, 0, 0] = 0.0
        cuda.syncthreads()
        for k in range(2, n + m + 1):
            lo = max(1, k - m)
            hi = min(n, k - 1)
            for i in range(lo + tid, hi + 1, nt):
                j = k - i
                a = R[p, i - 1, j - 1]
                bb = R[p, i - 1, j]
                c = R[p, i, j - 1]
                r = min(a, bb, c)
                s = wexp((r - a) / gamma) + wexp((r - bb) / gamma) + wexp((r - c) / gamma)
                R[p, i, j] = cost(kind, b, i, j, cxy, cxx, cyy) + (r - gamma * wlog(s))
            cuda.syncthreads()
        if tid == 0:
            values[p] = R[p, n, m]

    @cuda.jit(device=True, inline=True)
    def weight(p, si, sj, pi, pj, kind, b, R, cxy, cxx, cyy, gamma):
        """Weight of predecessor (pi, pj) in the softmin of cell (si, sj)."""
        rs = R[p, si, sj] - cost(kind, b, si, sj, cxy, cxx, cyy)  # the softmin value of cell s
        return wexp((rs - R[p, pi, pj]) / gamma)

    @cuda.jit
    def backward(cxy, cxx, cyy, nx, ny, gamma, R, E, grads, gxy, gxx, gyy):
        """Block p: E[p] = dR_nm/dR_ij over the valid cells; g[b, i-1, j-1] = grads[p] * E_ij."""
        p = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        kind, b, n, m = problem_shape(p, nx.shape[0], nx, ny)
        g = grads[p]
        for k in range(n + m, 1, -1):
            lo = max(1, k - m)
            hi = min(n, k - 1)
            for i in range(lo + tid, hi + 1, nt):
                j = k - i
                if i == n and j == m:
                    e = 1.0
                else:
                    e = 0.0
                    if i < n:
                        e += E[p, i + 1, j] * weight(p, i + 1, j, i, j, kind, b, R, cxy, cxx, cyy, gamma)
                    if j < m:
                        e += E[p, i, j + 1] * weight(p, i, j + 1, i, j, kind, b, R, cxy, cxx, cyy, gamma)
                    if i < n and j < m:
                        e += E[p, i + 1, j + 1] * weight(p, i + 1, j + 1, i, j, kind, b, R, cxy, cxx, cyy,
                                                         gamma)
                E[p, i, j] = e
                if kind == 0:
                    gxy[b, i - 1, j - 1] = e * g
                elif kind == 1:
                    gxx[b, i - 1, j - 1] = e * g
                else:
                    gyy[b, i - 1, j - 1] = e * g
            cuda.syncthreads()

    return forward, backward


_KERNELS: dict = {}


def _kernels(fast_exp: bool):
    if fast_exp not in _KERNELS:
        _KERNELS[fast_exp] = _build(fast_exp)
    return _KERNELS[fast_exp]


# ----------------------------------------------------------------------------------------------
# Backend object
# ----------------------------------------------------------------------------------------------


def _dev(t: torch.Tensor):
    """Kernel argument for a tensor: a CUDA array view, or (simulator) a numpy view."""
    t = t.detach()
    if simulator_enabled():
        return t.cpu().numpy() if t.device.type != "cpu" else t.numpy()
    return cuda.as_cuda_array(t)


def _launch(kernel, blocks: int, device: torch.device):
    """Configured kernel on torch's current stream (simulator: default stream)."""
    threads = THREADS_PER_BLOCK
    if simulator_enabled() or device.type != "cuda":
        return kernel[blocks, threads]
    stream = cuda.external_stream(torch.cuda.current_stream(device).cuda_stream)
    return kernel[blocks, threads, stream]


class CudaDP:
    """DP backend (see ``_TorchDP`` in :mod:`laser_fairseq.losses.soft_dtw` for the contract).

    Accepts one batch (xy) or three (xy, xx, yy) with rows/cols ``[x_len]/[y_len]`` or
    ``[x_len, x_len, y_len]/[y_len, x_len, y_len]``; xx/yy are computed as full problems.
    """

    @staticmethod
    def empty(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype, device=device)

    @staticmethod
    def forward(costs: Sequence[torch.Tensor], rows, cols, symmetric, gamma: float):
        """costs: list of 1 or 3 ``(B, ., .)`` tensors -> (list of ``(B,)`` float64 values, state)."""
        device = costs[0].device
        if len(costs) not in (1, 3):
            raise ValueError("CudaDP expects 1 or 3 cost batches")
        B = costs[0].shape[0]
        costs = [c.contiguous() for c in costs]
        nx = rows[0].to(device=device, dtype=torch.int64).contiguous()
        ny = cols[0].to(device=device, dtype=torch.int64).contiguous()
        side = max(max(c.shape[1], c.shape[2]) for c in costs) + 1
        P = B * len(costs)
        R = torch.empty((P, side, side), dtype=torch.float64, device=device)
        values = torch.empty(P, dtype=torch.float64, device=device)
        dummy = torch.zeros((1, 1, 1), dtype=costs[0].dtype, device=device)
        padded = costs + [dummy] * (3 - len(costs))
        forward, _ = _kernels(costs[0].dtype != torch.float64)
        _launch(forward, P, device)(*(_dev(c) for c in padded), _dev(nx), _dev(ny), float(gamma), _dev(R),
                                    _dev(values))
        state = (padded, nx, ny, float(gamma), R, len(costs), list(symmetric))
        return list(values.split(B)), state

    @staticmethod
    def backward(state, grads: Sequence[torch.Tensor]):
        """grads: list of ``(B,)`` -> list of ``G`` (xy) / ``G + G^T`` (xx, yy) matrices."""
        padded, nx, ny, gamma, R, count, symmetric = state
        device = R.device
        P = R.shape[0]
        E = torch.empty_like(R)
        g = torch.cat([gr.to(device=device, dtype=torch.float64) for gr in grads])
        mats = [torch.zeros_like(c) for c in padded]
        _, backward = _kernels(padded[0].dtype != torch.float64)
        _launch(backward, P, device)(*(_dev(c) for c in padded), _dev(nx), _dev(ny), gamma, _dev(R), _dev(E),
                                     _dev(g), *(_dev(mt) for mt in mats))
        out = []
        for mt, sym in zip(mats[:count], symmetric):
            out.append(mt + mt.transpose(1, 2) if sym else mt)
        return out
