"""The criterion's ablation weights: sdtw_weight scales the divergence, alpha the Contrastive-IDM terms."""

import pytest
import torch

from laser_fairseq.criterions.laser_criterion import LaserCriterion, LaserCriterionConfig
from laser_fairseq.losses import contrastive_idm, soft_dtw_divergence


def fixed_views(**_):
    """What LaserModel.forward returns, for two pairs of unequal lengths (frames are unit vectors)."""
    generator = torch.Generator().manual_seed(0)
    z_a = torch.nn.functional.normalize(torch.randn(2, 9, 5, generator=generator, dtype=torch.float64), dim=-1)
    z_b = torch.nn.functional.normalize(torch.randn(2, 7, 5, generator=generator, dtype=torch.float64), dim=-1)
    return {"z_a": z_a, "lengths_a": torch.tensor([9, 6]), "z_b": z_b, "lengths_b": torch.tensor([5, 7])}


@pytest.mark.parametrize("sdtw_weight, alpha", [(1.0, 0.4), (0.0, 0.4), (1.0, 0.0), (0.5, 0.15)])
def test_loss_is_the_weighted_sum_of_its_logged_parts(sdtw_weight, alpha):
    cfg = LaserCriterionConfig(sdtw_weight=sdtw_weight, alpha=alpha, soft_dtw_backend="torch")
    loss, sample_size, log = LaserCriterion(cfg, task=None)(fixed_views, {"net_input": {}})
    views = fixed_views()
    divergence = soft_dtw_divergence(
        views["z_a"], views["z_b"], views["lengths_a"], views["lengths_b"], gamma=0.1, backend="torch"
    ).sum()
    idm = (contrastive_idm(views["z_a"], views["lengths_a"], 0.0, 1.1)
           + contrastive_idm(views["z_b"], views["lengths_b"], 0.0, 1.1)).sum()
    assert sample_size == 2
    assert float(loss) == pytest.approx(sdtw_weight * float(divergence) + alpha * float(idm), rel=1e-5)
    # the logged parts are unweighted, whatever the weights
    assert log["sdtw"] == pytest.approx(float(divergence), rel=1e-5)
    assert log["idm"] == pytest.approx(float(idm), rel=1e-5)
    assert float(divergence) > 0 and float(idm) > 0
