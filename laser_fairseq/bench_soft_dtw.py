"""Soft-DTW divergences side by side: the problems, the float64 reference and the error measures that the
soft-DTW benchmark (benchmarks/soft_dtw.py) and the GPU check (``laser-gpu-check``) share.

An implementation is ``fn(x, y, x_lengths, y_lengths, gamma) -> (B,)`` divergences for x (B, N, d), y (B, M, d)
and lengths (B,); a factory returns one, or a string saying why it cannot run ("not installed").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass
class Inputs:
    """One benchmark problem: x (B, N, d), y (B, M, d) float32, lengths (B,) int64."""

    x: "torch.Tensor"
    y: "torch.Tensor"
    x_lengths: "torch.Tensor"
    y_lengths: "torch.Tensor"
    gamma: float

    @property
    def equal_lengths(self) -> bool:
        return bool((self.x_lengths == self.x.shape[1]).all() and (self.y_lengths == self.y.shape[1]).all())


def make_inputs(batch: int, x_lengths, y_lengths, dim: int, gamma: float, seed: int) -> Inputs:
    """L2-normalised frames (like the LASER head's output); y is a noisy, shorter view of x."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x_lengths = torch.as_tensor(x_lengths, dtype=torch.long)
    y_lengths = torch.as_tensor(y_lengths, dtype=torch.long)
    n, m = int(x_lengths.max()), int(y_lengths.max())
    x = torch.randn(batch, n, dim, generator=g)
    idx = torch.linspace(0, n - 1, m).round().long()
    y = x[:, idx] + 0.7 * torch.randn(batch, m, dim, generator=g)
    x = torch.nn.functional.normalize(x, dim=-1)
    y = torch.nn.functional.normalize(y, dim=-1)
    for b in range(batch):  # padding content must not matter
        x[b, x_lengths[b]:] = 0.0
        y[b, y_lengths[b]:] = 0.0
    return Inputs(x, y, x_lengths, y_lengths, gamma)


def run_once(fn: Callable, inp: Inputs):
    """Forward + backward of ``fn(x, y, x_lengths, y_lengths, gamma) -> (B,)`` -> (values, gx, gy)."""
    x = inp.x.clone().requires_grad_(True)
    y = inp.y.clone().requires_grad_(True)
    d = fn(x, y, inp.x_lengths, inp.y_lengths, inp.gamma)
    d.sum().backward()
    return d.detach(), x.grad, y.grad


def float64_reference(inp: Inputs, backend: str = "numba"):
    """Divergences and gradients in float64 on the CPU (default: our numba float64 kernel, exact DP, no
    thresholds)."""
    from laser_fairseq.losses import soft_dtw_divergence

    ref = Inputs(inp.x.double().cpu(), inp.y.double().cpu(), inp.x_lengths.cpu(), inp.y_lengths.cpu(), inp.gamma)
    return run_once(lambda x, y, xl, yl, g: soft_dtw_divergence(x, y, xl, yl, gamma=g, backend=backend), ref)


def errors(out, ref) -> tuple[float, float, float, float]:
    """Max |value error|, the same relative to max |value|, max |gradient error| over x and y, and
    the same relative to max |gradient|."""
    v, gx, gy = (t.double().cpu() for t in out)
    rv, rgx, rgy = ref
    v_err = float((v - rv).abs().max())
    g_err = max(float((gx - rgx).abs().max()), float((gy - rgy).abs().max()))
    g_max = max(float(rgx.abs().max()), float(rgy.abs().max()))
    return v_err, v_err / float(rv.abs().max()), g_err, g_err / g_max


def per_pair(pair_fn: Callable) -> Callable:
    """Batch wrapper for implementations without length support: one call per trimmed pair."""
    import torch

    def fn(x, y, xl, yl, gamma):
        return torch.stack([pair_fn(x[b:b + 1, :xl[b]], y[b:b + 1, :yl[b]], gamma)[0] for b in range(x.shape[0])])

    return fn


def ours(backend: str):
    from laser_fairseq.losses import soft_dtw_divergence

    def factory():
        return lambda x, y, xl, yl, gamma: soft_dtw_divergence(x, y, xl, yl, gamma=gamma, backend=backend)

    return factory


def pysdtw_divergence(use_cuda: bool):
    """pysdtw's divergence (three calls: xy, xx, yy) on its CPU or its CUDA (numba.cuda) kernel."""
    try:
        import pysdtw
    except ImportError:
        return "not installed"
    from torch.nn.utils.rnn import pack_padded_sequence

    cache = {}

    def fn(x, y, xl, yl, gamma):
        sdtw = cache.setdefault(gamma, pysdtw.SoftDTW(gamma=gamma, use_cuda=use_cuda))

        def packed(t, lengths):
            if bool((lengths == t.shape[1]).all()):
                return t
            return pack_padded_sequence(t, lengths, batch_first=True, enforce_sorted=False)

        px, py = packed(x, xl), packed(y, yl)
        return sdtw(px, py) - 0.5 * (sdtw(px, px) + sdtw(py, py))

    return fn


def _authors_kernels():
    """float64 numba DP in the style of the authors' code: scalar loops, inf borders, exp/log per cell."""
    import math

    import numba
    import numpy as np

    @numba.njit(cache=True)
    def forward(D, gamma):
        n, m = D.shape
        R = np.full((n + 2, m + 2), np.inf)
        R[0, 0] = 0.0
        for j in range(1, m + 1):
            for i in range(1, n + 1):
                r0 = -R[i - 1, j - 1] / gamma
                r1 = -R[i - 1, j] / gamma
                r2 = -R[i, j - 1] / gamma
                rmax = max(max(r0, r1), r2)
                rsum = math.exp(r0 - rmax) + math.exp(r1 - rmax) + math.exp(r2 - rmax)
                R[i, j] = D[i - 1, j - 1] - gamma * (math.log(rsum) + rmax)
        return R

    @numba.njit(cache=True)
    def backward(D_, R, gamma):
        n, m = D_.shape
        D = np.zeros((n + 2, m + 2))
        E = np.zeros((n + 2, m + 2))
        D[1:n + 1, 1:m + 1] = D_
        E[n + 1, m + 1] = 1.0
        R[:, m + 1] = -np.inf
        R[n + 1, :] = -np.inf
        R[n + 1, m + 1] = R[n, m]
        for j in range(m, 0, -1):
            for i in range(n, 0, -1):
                a = math.exp((R[i + 1, j] - R[i, j] - D[i + 1, j]) / gamma)
                b = math.exp((R[i, j + 1] - R[i, j] - D[i, j + 1]) / gamma)
                c = math.exp((R[i + 1, j + 1] - R[i, j] - D[i + 1, j + 1]) / gamma)
                E[i, j] = E[i + 1, j] * a + E[i, j + 1] * b + E[i + 1, j + 1] * c
        return E[1:n + 1, 1:m + 1]

    return forward, backward


def authors_recipe():
    """The LASER authors' loss recipe, re-implemented: float64 DP with inf borders (``_authors_kernels``), cost
    built by broadcasting to (N, M, d), CPU round trip, one pair (and problem) at a time."""
    import torch

    forward, backward = _authors_kernels()

    class SoftDTW64(torch.autograd.Function):
        @staticmethod
        def forward(ctx, D, gamma):
            D64 = D.detach().cpu().double().numpy()
            R = forward(D64, gamma)
            ctx.save_for_backward(D)
            ctx.R, ctx.D64, ctx.gamma = R, D64, gamma
            return torch.tensor(R[D64.shape[0], D64.shape[1]], dtype=D.dtype)

        @staticmethod
        def backward(ctx, grad):
            E = backward(ctx.D64, ctx.R.copy(), ctx.gamma)
            return grad * torch.from_numpy(E).to(ctx.saved_tensors[0].dtype), None

    def cost(a, b):  # broadcast (N, M, d), as in the authors' code
        return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)

    def pair(x, y, gamma):
        x, y = x[0], y[0]
        xy = SoftDTW64.apply(cost(x, y), gamma)
        xx = SoftDTW64.apply(cost(x, x), gamma)
        yy = SoftDTW64.apply(cost(y, y), gamma)
        return (xy - 0.5 * (xx + yy))[None]

    return per_pair(pair)
