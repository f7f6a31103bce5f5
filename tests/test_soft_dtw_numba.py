"""laser_fairseq/losses/soft_dtw_numba.py, the numba CPU kernel: what is specific to it. Its values and
gradients against the float64 reference run with every backend in tests/test_soft_dtw.py."""

import pytest
import torch

from laser_fairseq.losses import soft_dtw_divergence
from laser_fairseq.losses.soft_dtw import _numba_available

from soft_dtw_reference import padded_batch

pytestmark = pytest.mark.skipif(not _numba_available(), reason="numba not installed")


def test_numba_thread_count_does_not_change_results():
    from laser_fairseq.losses.soft_dtw_numba import kernel_threads, kernel_threads_set

    x, y, xl, yl = padded_batch(11, [9, 4, 7, 2, 8], [6, 9, 3, 5, 8], d=4, dtype=torch.float32)
    outs = []
    before = kernel_threads()
    for threads in (1, 2, 3):
        with kernel_threads_set(threads):
            assert kernel_threads() == threads
            xc, yc = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
            d = soft_dtw_divergence(xc, yc, xl, yl, gamma=0.1, backend="numba")
            d.sum().backward()
            outs.append((d.detach(), xc.grad, yc.grad))
    assert kernel_threads() == before
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert torch.equal(a, b)
