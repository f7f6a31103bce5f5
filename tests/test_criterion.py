"""The ``laser`` criterion computes LASER's objective, checked against float64 references of each part.

Per pair: D(Z_a, Z_b) + alpha * (IDM(Z_a) + IDM(Z_b)), each term over the valid frames of its own view.
The criterion is called in process on padded outputs of unequal lengths with garbage in the padding, so a
term computed without its lengths, an alpha applied to one term only or a swapped setting changes a number.
"""

import math

import pytest
import torch
from fairseq import metrics
from torch import nn

from laser_fairseq.criterions.laser_criterion import LaserCriterion, LaserCriterionConfig
from test_contrastive_idm import idm_reference
from test_soft_dtw import ref_divergence

GARBAGE = 9.0
TOLERANCE = 2e-5  # float32 frames against float64 references


class FixedOutputs(nn.Module):
    """Stands in for the model: returns the given padded views whatever the batch (criterion input only)."""

    def __init__(self, z_a, lengths_a, z_b, lengths_b):
        super().__init__()
        self.outputs = {"z_a": z_a, "lengths_a": lengths_a, "z_b": z_b, "lengths_b": lengths_b}

    def forward(self, **net_input):
        return self.outputs


def padded_views(lengths_a, lengths_b, dim=4, seed=0):
    """Unit-norm float32 frames (as the projection head makes them), GARBAGE in every padded frame."""
    generator = torch.Generator().manual_seed(seed)
    views = []
    for lengths, extra in ((lengths_a, 1), (lengths_b, 2)):
        z = torch.randn(len(lengths), max(lengths) + extra, dim, generator=generator, dtype=torch.float64)
        z = nn.functional.normalize(z, dim=-1)
        for row, n in enumerate(lengths):
            z[row, n:] = GARBAGE
        views += [z.float(), torch.tensor(lengths)]
    return views


def reference_parts(z_a, lengths_a, z_b, lengths_b, cfg):
    """(divergence, idm_a, idm_b) per pair, float64, from the definitions on the trimmed sequences."""
    parts = []
    for row in range(len(lengths_a)):
        a = z_a[row, : int(lengths_a[row])].double().numpy()
        b = z_b[row, : int(lengths_b[row])].double().numpy()
        parts.append((
            ref_divergence(a, b, cfg.gamma),
            idm_reference(a.tolist(), cfg.sigma, cfg.margin),
            idm_reference(b.tolist(), cfg.sigma, cfg.margin),
        ))
    return parts


CONFIGS = [
    LaserCriterionConfig(soft_dtw_backend="torch"),  # the paper's HuBERT settings
    LaserCriterionConfig(gamma=0.3, alpha=0.15, sigma=1.0, margin=1.0, soft_dtw_backend="torch"),
    LaserCriterionConfig(gamma=0.05, alpha=2.0, sigma=2.0, margin=1.4, soft_dtw_backend="numba"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["paper", "other", "numba"])
def test_loss_and_logged_parts_are_lasers_objective(cfg):
    z_a, lengths_a, z_b, lengths_b = padded_views([7, 4, 5], [3, 6, 5])
    model = FixedOutputs(z_a, lengths_a, z_b, lengths_b)
    task = object()
    criterion = LaserCriterion(cfg, task)
    assert criterion.task is task and criterion.cfg is cfg
    parts = reference_parts(z_a, lengths_a, z_b, lengths_b, cfg)
    expected = [div + cfg.alpha * (idm_a + idm_b) for div, idm_a, idm_b in parts]

    per_pair, sample_size, log = criterion(model, {"net_input": {}}, reduce=False)
    assert per_pair.shape == (3,)
    assert per_pair.tolist() == pytest.approx(expected, rel=TOLERANCE, abs=TOLERANCE)

    loss, sample_size, log = criterion(model, {"net_input": {}})
    assert loss.dim() == 0 and loss.item() == pytest.approx(sum(expected), rel=TOLERANCE)
    assert sample_size == 3
    assert log["loss"] == pytest.approx(sum(expected), rel=TOLERANCE)
    assert log["sdtw"] == pytest.approx(sum(div for div, _, _ in parts), rel=TOLERANCE)
    assert log["idm"] == pytest.approx(sum(a + b for _, a, b in parts), rel=TOLERANCE)
    assert (log["pairs"], log["nsentences"], log["sample_size"]) == (3, 3, 3)
    assert log["frames"] == log["ntokens"] == 7 + 4 + 5 + 3 + 6 + 5


def test_the_loss_trains_both_views_through_every_term():
    """The gradient reaches the valid frames of both views and never the padding."""
    z_a, lengths_a, z_b, lengths_b = padded_views([5, 3], [4, 6], seed=1)
    z_a.requires_grad_(True)
    z_b.requires_grad_(True)
    criterion = LaserCriterion(LaserCriterionConfig(soft_dtw_backend="torch"), task=None)
    loss, _, _ = criterion(FixedOutputs(z_a, lengths_a, z_b, lengths_b), {"net_input": {}})
    loss.backward()
    for z, lengths in ((z_a, lengths_a), (z_b, lengths_b)):
        for row, n in enumerate(lengths.tolist()):
            assert torch.all(z.grad[row, n:] == 0)
            assert torch.all(z.grad[row, :n].abs().sum(-1) > 0)


def test_defaults_are_the_papers_hubert_settings():
    cfg = LaserCriterionConfig()
    assert (cfg.gamma, cfg.alpha, cfg.sigma, cfg.margin, cfg.soft_dtw_backend) == (0.1, 0.4, 0.0, 1.1, "auto")


def test_reduced_metrics_are_per_pair_averages_over_workers():
    logs = [
        {"loss": 3.0, "sdtw": 2.0, "idm": 2.5, "pairs": 2, "frames": 40},
        {"loss": 6.0, "sdtw": 5.0, "idm": 2.5, "pairs": 4, "frames": 100},
    ]
    assert LaserCriterion.logging_outputs_can_be_summed()
    with metrics.aggregate() as aggregated:
        LaserCriterion.reduce_metrics(logs + [{}])  # a worker without a batch logs nothing
    values = aggregated.get_smoothed_values()
    # per-pair averages, shown with 4 decimals; the counts as whole numbers
    assert (values["loss"], values["sdtw"], values["idm"]) == (1.5, 1.1667, 0.8333)
    assert (values["pairs"], values["frames"]) == (6, 140)
    # fairseq aggregates several updates: each update's average weighs by its number of pairs
    with metrics.aggregate() as two_updates:
        LaserCriterion.reduce_metrics([{"loss": 4.0, "sdtw": 4.0, "idm": 0.0, "pairs": 2, "frames": 10}])
        LaserCriterion.reduce_metrics([{"loss": 4.0, "sdtw": 0.0, "idm": 4.0, "pairs": 4, "frames": 10}])
    values = two_updates.get_smoothed_values()
    assert (values["loss"], values["sdtw"], values["idm"]) == (1.3333, 0.6667, 0.6667)
    with metrics.aggregate() as empty:
        LaserCriterion.reduce_metrics([{"loss": 0.0, "pairs": 0}])
    assert "loss" not in empty.get_smoothed_values()


def test_alpha_zero_is_soft_dtw_only():
    z_a, lengths_a, z_b, lengths_b = padded_views([6, 2], [5, 4], seed=2)
    cfg = LaserCriterionConfig(alpha=0.0, soft_dtw_backend="torch")
    loss, _, log = LaserCriterion(cfg, task=None)(FixedOutputs(z_a, lengths_a, z_b, lengths_b), {"net_input": {}})
    parts = reference_parts(z_a, lengths_a, z_b, lengths_b, cfg)
    assert loss.item() == pytest.approx(sum(div for div, _, _ in parts), rel=TOLERANCE)
    assert log["idm"] > 0 and math.isfinite(log["idm"])


def test_the_configured_soft_dtw_backend_is_the_one_that_runs():
    """Backends agree to rounding, not bit for bit: the divergence must be bit-identical to its own backend's."""
    from laser_fairseq.losses.soft_dtw import soft_dtw_divergence

    z_a, lengths_a, z_b, lengths_b = padded_views([7, 4, 5], [3, 6, 5], seed=3)
    model = FixedOutputs(z_a, lengths_a, z_b, lengths_b)
    by_backend = {}
    for backend in ("torch", "numba"):
        criterion = LaserCriterion(LaserCriterionConfig(alpha=0.0, soft_dtw_backend=backend), task=None)
        per_pair, _, _ = criterion(model, {"net_input": {}}, reduce=False)
        own = soft_dtw_divergence(z_a, z_b, lengths_a, lengths_b, gamma=0.1, backend=backend)
        assert torch.equal(per_pair, own), backend
        by_backend[backend] = own
    assert not torch.equal(by_backend["torch"], by_backend["numba"])  # else this test could not tell them apart
