"""A CUDA-placement check that runs on a CPU-only machine (tests of the loss, the model wrapper, soft-DTW).

With 'meta' as torch's default device, a tensor made without an explicit device (where the code should have
used its inputs' device) lands on meta, and mixing it with the CPU inputs fails: what a CUDA run would do
with a tensor made on the CPU.
"""

from typing import Callable, Sequence

import torch


def assert_same_with_meta_as_default_device(compute: Callable[[], Sequence[torch.Tensor]]) -> None:
    """``compute()`` gives the same CPU tensors, bit for bit, whether the default device is the CPU or meta."""
    expected = compute()
    with torch.device("meta"):
        got = compute()
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.device.type == "cpu"
        torch.testing.assert_close(a, b, rtol=0, atol=0)
