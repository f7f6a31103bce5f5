"""laser_fairseq/losses/soft_dtw_torch.py, the pure-PyTorch backend: what is specific to it. Its values and
gradients against the float64 reference run with every backend in tests/test_soft_dtw.py."""

import torch

from laser_fairseq.losses.soft_dtw import _CostLevel
from laser_fairseq.losses.soft_dtw_torch import TorchDP, _skew_index, _unskew_index

from device_checks import assert_same_with_meta_as_default_device
from soft_dtw_reference import padded_batch


def test_skewed_storage_holds_every_cell_once_and_unskews_back():
    """Slot (k, i) of the skewed layout holds cell (i, k - i); unskewing gives the matrix back exactly."""
    n, m = 4, 6
    matrix = torch.arange(1.0, n * m + 1).reshape(n, m)
    skewed = matrix.reshape(-1)[_skew_index(n, m, torch.device("cpu"))]  # (n + m + 1, n + 1)
    assert skewed.shape == (n + m + 1, n + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            assert skewed[i + j, i] == matrix[i - 1, j - 1]
    unskewed = skewed.reshape(-1)[_unskew_index(n, m, torch.device("cpu"))]
    assert torch.equal(unskewed, matrix)


def test_the_torch_backends_backward_makes_its_tensors_on_the_inputs_device_too():
    """The autograd engine runs backward outside the 'meta' default-device mode, so the pair-level contract
    (``forward`` / ``backward`` of the backend object) is called directly here."""
    x, y, xl, yl = padded_batch(13, [5, 3], [4, 6])
    grads = [torch.tensor([1.0, -2.0], dtype=torch.float64)] * 3

    def forward_and_backward():
        backend = _CostLevel(TorchDP)
        values, state = backend.forward(x, y, xl, yl, True, 0.1)
        return [*values, *backend.backward(state, grads, x, y)]

    assert_same_with_meta_as_default_device(forward_and_backward)
