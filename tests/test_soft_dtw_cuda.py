"""The numba.cuda soft-DTW kernel, run under numba's CUDA simulator (no GPU needed).

NUMBA_ENABLE_CUDASIM must be set before numba is imported, so the check runs in a fresh
subprocess and does not affect the other tests. On a machine with a GPU, the same kernel is also
compared with the CPU path directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

SIMULATOR_CHECK = textwrap.dedent(
    r"""
    import math, sys
    import numpy as np
    import torch
    from laser_fairseq.losses import soft_dtw, soft_dtw_divergence
    from laser_fairseq.losses import soft_dtw_cuda
    from numba import config
    assert config.ENABLE_CUDASIM

    soft_dtw_cuda.THREADS_PER_BLOCK = 3  # fewer threads than cells: the threads loop over each diagonal

    def ref_sdtw(x, y, gamma):
        n, m = len(x), len(y)
        R = [[math.inf] * (m + 1) for _ in range(n + 1)]
        R[0][0] = 0.0
        for i in range(1, n + 1):
            for j in range(1, m + 1):
                cost = float(((x[i - 1] - y[j - 1]) ** 2).sum())
                prev = (R[i - 1][j - 1], R[i - 1][j], R[i][j - 1])
                lo = min(prev)
                R[i][j] = cost + lo - gamma * math.log(sum(math.exp(-(p - lo) / gamma) for p in prev))
        return R[n][m]

    def ref_div(x, y, gamma):
        return ref_sdtw(x, y, gamma) - 0.5 * (ref_sdtw(x, x, gamma) + ref_sdtw(y, y, gamma))

    g = torch.Generator().manual_seed(0)
    xl, yl = torch.tensor([5, 2, 7]), torch.tensor([4, 6, 1])
    x = torch.randn(3, 8, 3, generator=g, dtype=torch.float64)
    y = torch.randn(3, 7, 3, generator=g, dtype=torch.float64)
    for b in range(3):
        x[b, xl[b]:] = 0.0
        y[b, yl[b]:] = 0.0
    gamma = 0.2
    xn, yn = x.numpy(), y.numpy()
    want_div = [ref_div(xn[b, :xl[b]], yn[b, :yl[b]], gamma) for b in range(3)]
    want_sdtw = [ref_sdtw(xn[b, :xl[b]], yn[b, :yl[b]], gamma) for b in range(3)]

    # float64: values exact, gradients equal to the (independently tested) torch backend
    xc, yc = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    d = soft_dtw_divergence(xc, yc, xl, yl, gamma=gamma, backend="cuda")
    np.testing.assert_allclose(d.detach().numpy(), want_div, atol=1e-10)
    np.testing.assert_allclose(soft_dtw(x, y, xl, yl, gamma=gamma, backend="cuda").numpy(), want_sdtw, atol=1e-10)
    d.sum().backward()
    xt, yt = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    soft_dtw_divergence(xt, yt, xl, yl, gamma=gamma, backend="torch").sum().backward()
    np.testing.assert_allclose(xc.grad.numpy(), xt.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(yc.grad.numpy(), yt.grad.numpy(), atol=1e-10)
    for b in range(3):
        assert torch.all(xc.grad[b, xl[b]:] == 0) and torch.all(yc.grad[b, yl[b]:] == 0)

    # float32 (float32 exp, float64 R) against the float64 reference
    x32, y32 = x.float().requires_grad_(True), y.float().requires_grad_(True)
    d32 = soft_dtw_divergence(x32, y32, xl, yl, gamma=gamma, backend="cuda")
    assert d32.dtype == torch.float32
    np.testing.assert_allclose(d32.detach().double().numpy(), want_div, atol=1e-4)
    d32.sum().backward()
    assert (x32.grad.double() - xt.grad).abs().max() < 1e-4 * xt.grad.abs().max()
    print("CUDASIM OK")
    """
)


def test_cuda_kernel_under_simulator():
    pythonpath = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=pythonpath)
    proc = subprocess.run([sys.executable, "-c", SIMULATOR_CHECK], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "CUDASIM OK" in proc.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_kernel_matches_cpu_on_gpu():
    from laser_fairseq.losses import soft_dtw_divergence

    g = torch.Generator().manual_seed(1)
    xl, yl = torch.tensor([300, 1100, 40]), torch.tensor([1200, 90, 40])  # > 1024 frames too
    x = torch.nn.functional.normalize(torch.randn(3, 1100, 16, generator=g, dtype=torch.float64), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(3, 1200, 16, generator=g, dtype=torch.float64), dim=-1)
    grads = {}
    for device, backend in (("cpu", "numba"), ("cuda", "auto")):
        xd, yd = x.to(device).requires_grad_(True), y.to(device).requires_grad_(True)
        d = soft_dtw_divergence(xd, yd, xl.to(device), yl.to(device), gamma=0.1, backend=backend)
        d.sum().backward()
        grads[device] = (d.detach().cpu(), xd.grad.cpu(), yd.grad.cpu())
    for a, b in zip(grads["cuda"], grads["cpu"]):
        assert torch.allclose(a, b, atol=1e-8, rtol=1e-8)
