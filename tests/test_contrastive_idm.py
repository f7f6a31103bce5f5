"""Contrastive-IDM against a float64 loop written straight from the definition (examples/laser/README.md)."""

import math

import pytest
import torch

from laser_fairseq.losses import contrastive_idm

from device_checks import assert_same_with_meta_as_default_device


def idm_reference(z, sigma, margin):
    """IDM of one (n, D) sequence, cell by cell in float64 Python."""
    n = len(z)
    total = 0.0
    for i in range(n):
        for j in range(n):
            d = math.sqrt(sum((a - b) ** 2 for a, b in zip(z[i], z[j])))
            w = 1.0 + (i - j) ** 2
            if abs(i - j) > sigma:
                total += w * max(0.0, margin - d)
            else:
                total += d / w
    return total / n**2


def padded_batch(lengths, dim=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(len(lengths), max(lengths), dim, generator=generator, dtype=torch.float64)
    z = torch.nn.functional.normalize(z, dim=-1)
    for row, n in enumerate(lengths):
        z[row, n:] = 7.0  # garbage in padding must not matter
    return z, torch.tensor(lengths)


@pytest.mark.parametrize("sigma,margin", [(0.0, 1.1), (1.0, 1.0), (2.5, 1.4)])
def test_matches_reference_on_padded_batch(sigma, margin):
    z, lengths = padded_batch([6, 9, 3])
    values = contrastive_idm(z, lengths, sigma=sigma, margin=margin)
    for row, n in enumerate(lengths.tolist()):
        expected = idm_reference(z[row, :n].tolist(), sigma, margin)
        assert values[row].item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_padding_is_excluded_exactly_including_gradient():
    z, lengths = padded_batch([4, 7])
    z.requires_grad_(True)
    contrastive_idm(z, lengths).sum().backward()
    assert torch.all(z.grad[0, 4:] == 0)
    alone = contrastive_idm(z[:1, :4].detach(), torch.tensor([4]))
    assert contrastive_idm(z.detach(), lengths)[0].item() == pytest.approx(alone.item(), rel=1e-14)


def test_gradcheck_float64():
    z, lengths = padded_batch([5, 3], dim=3, seed=1)
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: contrastive_idm(t, lengths, sigma=1.0, margin=1.2), (z,))


def test_no_nan_gradient_at_zero_distance():
    z = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]], requires_grad=True)  # two identical frames
    value = contrastive_idm(z, sigma=1.0, margin=1.1)
    value.backward()
    assert torch.isfinite(value).all() and torch.isfinite(z.grad).all()


def test_collapsed_sequence_is_penalised_and_spread_one_is_not():
    collapsed = torch.ones(1, 8, 4) / 2.0
    spread = torch.eye(8).unsqueeze(0) * 10.0  # all pairwise distances sqrt(200) > margin
    assert contrastive_idm(collapsed, margin=1.1).item() > 1.0
    assert contrastive_idm(spread, margin=1.1).item() == 0.0


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(half):
    z, lengths = padded_batch([6, 4])
    rounded = z.to(half)
    value = contrastive_idm(rounded, lengths)
    assert value.dtype == torch.float32
    # the same half-precision inputs, computed in float32: computing in half would be ~1e-3 away
    torch.testing.assert_close(value, contrastive_idm(rounded.float(), lengths), rtol=1e-6, atol=1e-7)


def test_every_tensor_it_makes_is_on_the_device_of_z():
    z, lengths = padded_batch([6, 4])
    assert_same_with_meta_as_default_device(lambda: [contrastive_idm(z, lengths), contrastive_idm(z[:1, :6])])
    # lengths on the host, frames elsewhere (as a fairseq batch's lengths may arrive): moved to z's device
    elsewhere = contrastive_idm(torch.empty(2, 6, 5, device="meta"), lengths)
    assert elsewhere.device.type == "meta" and elsewhere.shape == (2,)


@pytest.mark.parametrize("lengths", [[3, 4], [0, 3], [3, -1]])
def test_lengths_outside_one_to_frames_are_refused(lengths):
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 3\]"):
        contrastive_idm(torch.zeros(2, 3, 4), torch.tensor(lengths))


def test_lengths_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        contrastive_idm(torch.zeros(2, 3, 4), torch.tensor([3]))


def test_defaults_are_the_papers_hubert_settings_and_a_single_frame_costs_nothing():
    z, lengths = padded_batch([5, 1, 3], seed=2)
    values = contrastive_idm(z, lengths)
    for row, n in enumerate(lengths.tolist()):
        assert values[row].item() == pytest.approx(idm_reference(z[row, :n].tolist(), 0.0, 1.1), rel=1e-12)
    assert values[1].item() == 0.0
