"""The ``laser`` criterion: soft-DTW divergence between the two views + alpha * Contrastive-IDM of each."""

from dataclasses import dataclass, field

import torch

from .. import quiet_fairseq  # noqa: F401  (before any fairseq import: keeps the caller's logging setup)
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass

from ..losses import contrastive_idm, soft_dtw_divergence


@dataclass
class LaserCriterionConfig(FairseqDataclass):
    gamma: float = field(default=0.1, metadata={"help": "soft-DTW smoothing (soft-min temperature)"})
    sdtw_weight: float = field(
        default=1.0,
        metadata={"help": "weight of the soft-DTW divergence; 1 in LASER, 0 for the Contrastive-IDM-only ablation"},
    )
    alpha: float = field(
        default=0.4, metadata={"help": "weight of the Contrastive-IDM regulariser; 0 = soft-DTW only (collapses)"}
    )
    sigma: float = field(
        default=0.0, metadata={"help": "Contrastive-IDM window: frames with |i - j| <= sigma are neighbours"}
    )
    margin: float = field(
        default=1.1, metadata={"help": "Contrastive-IDM margin for frames that are not neighbours"}
    )
    soft_dtw_backend: str = field(
        default="auto",
        metadata={"help": "soft-DTW implementation: auto (triton for CUDA tensors, numba on CPU, torch otherwise: "
                          "only what the install provides), triton (GPU kernel, self-checked on first use), "
                          "numba (CPU kernel), torch (pure PyTorch, any device: the way out if a kernel fails)"},
    )


@register_criterion("laser", dataclass=LaserCriterionConfig)
class LaserCriterion(FairseqCriterion):
    """Per pair: w * D(Z_a, Z_b) + alpha * (IDM(Z_a) + IDM(Z_b)); summed over pairs, sample_size = pairs.

    w = ``sdtw_weight`` (1 in LASER). The ablations: alpha = 0 (soft-DTW only), w = 0 (Contrastive-IDM only);
    the unweighted parts are logged as ``sdtw`` and ``idm`` either way.
    """

    def __init__(self, cfg: LaserCriterionConfig, task):
        super().__init__(task)
        self.cfg = cfg

    def forward(self, model, sample, reduce: bool = True):
        out = model(**sample["net_input"])
        per_pair, divergence, idm = self.pair_losses(out)
        loss = per_pair.sum() if reduce else per_pair
        pairs = per_pair.shape[0]
        logging_output = {
            "loss": loss.detach().sum().item(),
            "sdtw": divergence.detach().sum().item(),
            "idm": idm.detach().sum().item(),
            "pairs": pairs,
            "frames": int(out["lengths_a"].sum() + out["lengths_b"].sum()),
            "nsentences": pairs,
            "ntokens": int(out["lengths_a"].sum() + out["lengths_b"].sum()),
            "sample_size": pairs,
        }
        return loss, pairs, logging_output

    def pair_losses(self, out):
        """Model output -> (weighted loss, divergence, IDM), each ``(B,)`` float32.

        Mixed precision (``common.fp16`` / ``common.bf16`` / ``common.amp``): the model's projected frames are
        float32 (see ``LaserModel.project``) and the whole loss is computed in float32 outside autocast;
        only the upstream runs in half precision.
        """
        z_a, z_b = out["z_a"].float(), out["z_b"].float()
        with torch.autocast(device_type=z_a.device.type, enabled=False):
            divergence = soft_dtw_divergence(
                z_a, z_b, out["lengths_a"], out["lengths_b"], gamma=self.cfg.gamma, backend=self.cfg.soft_dtw_backend
            )
            idm = contrastive_idm(z_a, out["lengths_a"], self.cfg.sigma, self.cfg.margin) + contrastive_idm(
                z_b, out["lengths_b"], self.cfg.sigma, self.cfg.margin
            )
            return self.cfg.sdtw_weight * divergence + self.cfg.alpha * idm, divergence, idm

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key):
            return sum(log.get(key, 0) for log in logging_outputs)

        pairs = total("pairs")
        if pairs == 0:
            return
        metrics.log_scalar("loss", total("loss") / pairs, pairs, round=4)
        metrics.log_scalar("sdtw", total("sdtw") / pairs, pairs, round=4)
        metrics.log_scalar("idm", total("idm") / pairs, pairs, round=4)
        metrics.log_scalar("pairs", pairs, round=0)
        metrics.log_scalar("frames", total("frames"), round=0)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
