"""The ``laser`` model: an original HuBERT / WavLM upstream with all but its last K blocks frozen, and a
projection head (Linear embed_dim -> proj_dim, then per-frame L2 normalisation) that training discards."""

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F

from .. import quiet_fairseq  # noqa: F401  (before any fairseq import: keeps the caller's logging setup)
from fairseq.dataclass import FairseqDataclass
from fairseq.models import BaseFairseqModel, register_model
from omegaconf import MISSING
from torch import Tensor, nn

from ..checkpoint_io import CheckpointError
from .blockwise import BlockwiseUpstream, frame_lengths
from .upstream import build_upstream

logger = logging.getLogger(__name__)


@dataclass
class LaserModelConfig(FairseqDataclass):
    upstream_path: str = field(
        default=MISSING,
        metadata={"help": "original upstream checkpoint: fairseq HuBERT (hubert_base_ls960.pt) or unilm "
                          "WavLM (WavLM-Base.pt); the kind is detected from the file"},
    )
    trainable_layers: int = field(
        default=2,
        metadata={"help": "number K of top transformer blocks to fine-tune; everything below is frozen, "
                          "in eval mode and run without autograd"},
    )
    proj_dim: int = field(
        default=256, metadata={"help": "output size of the projection head (discarded after training)"}
    )
    extra_safe_globals: List[str] = field(
        default_factory=list,
        metadata={"help": "extra classes ('module.Class') the upstream checkpoint may unpickle under "
                          "weights-only loading; only for files you trust"},
    )


@register_model("laser", dataclass=LaserModelConfig)
class LaserModel(BaseFairseqModel):
    """Runs both views through the upstream and returns L2-normalised projected frames.

    The top K blocks keep the upstream's dropout settings; its layerdrop is never applied, since dropping a
    block that is being trained would skip its update and feed the next block unseen inputs.
    """

    def __init__(self, cfg: LaserModelConfig, upstream: BlockwiseUpstream):
        super().__init__()
        self.cfg = cfg
        self.upstream = upstream
        self.first_trainable = upstream.num_layers - cfg.trainable_layers
        self.head = nn.Linear(upstream.embed_dim, cfg.proj_dim)
        self._freeze_trunk()
        self._log_parameter_counts()

    @classmethod
    def build_model(cls, cfg: LaserModelConfig, task=None):
        upstream = build_upstream(cfg.upstream_path, cfg.extra_safe_globals)
        if not 1 <= cfg.trainable_layers <= upstream.num_layers:
            raise CheckpointError(
                f"model.trainable_layers={cfg.trainable_layers} is out of range: {cfg.upstream_path} has "
                f"{upstream.num_layers} transformer blocks, so it must be between 1 and {upstream.num_layers}"
            )
        return cls(cfg, upstream)

    @property
    def trainable_block_indices(self) -> range:
        return range(self.first_trainable, self.upstream.num_layers)

    def _freeze_trunk(self):
        for parameter in self.upstream.parameters():
            parameter.requires_grad = False
        for index in self.trainable_block_indices:
            for parameter in self.upstream.layers[index].parameters():
                parameter.requires_grad = True

    def _log_parameter_counts(self):
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        logger.info(
            f"LASER on a {self.upstream.kind} upstream with {self.upstream.num_layers} blocks: training blocks "
            f"{list(self.trainable_block_indices)} + head; {trainable:,} trainable / {frozen:,} frozen parameters"
        )

    def train(self, mode: bool = True):
        """Only the top K blocks and the head follow ``mode``; the frozen trunk always stays in eval mode."""
        super().train(mode)
        self.upstream.eval()
        for index in self.trainable_block_indices:
            self.upstream.layers[index].train(mode)
        return self

    def encode(self, source: Tensor, padding_mask: Optional[Tensor] = None):
        """(B, S) waveforms -> ((B, T, C) top-block output, (B, T) frame padding mask or None)."""
        with torch.no_grad():
            state = self.upstream.embed(source, padding_mask)
            state = self.upstream.run_blocks(state, 0, self.first_trainable)
        state = state.detached()
        state = self.upstream.run_blocks(state, self.first_trainable, self.upstream.num_layers)
        return self.upstream.finalize(state), state.padding_mask

    def project(self, features: Tensor) -> Tensor:
        """(B, T, C) -> (B, T, proj_dim) unit-norm frames, in float32 whatever the model's dtype.

        fairseq's ``common.fp16`` / ``common.bf16`` convert the whole model (the head too) and ``common.amp``
        runs it under autocast; the head still runs in float32 here, outside autocast, because the loss is
        computed from its output: a soft-DTW value sums hundreds of costs along a path and its gradient
        weights are exponentials of their differences, which half precision would round away.
        """
        with torch.autocast(device_type=features.device.type, enabled=False):
            weight, bias = self.head.weight.float(), self.head.bias.float()
            return F.normalize(F.linear(features.float(), weight, bias), dim=-1)

    def forward(
        self,
        source_a: Tensor,
        source_b: Tensor,
        padding_mask_a: Optional[Tensor] = None,
        padding_mask_b: Optional[Tensor] = None,
    ) -> Dict[str, Tensor]:
        """Both views in one upstream batch.

        Returns z_a (B, T_a, P), lengths_a (B,), z_b (B, T_b, P), lengths_b (B,).
        """
        batch = source_a.shape[0]
        source, padding_mask = _stack_views(source_a, padding_mask_a, source_b, padding_mask_b)
        features, frame_mask = self.encode(source, padding_mask)
        z = self.project(features)
        lengths = frame_lengths(frame_mask, z.shape[0], z.shape[1], z.device)
        lengths_a, lengths_b = lengths[:batch], lengths[batch:]
        return {
            "z_a": z[:batch, : int(lengths_a.max())],
            "lengths_a": lengths_a,
            "z_b": z[batch:, : int(lengths_b.max())],
            "lengths_b": lengths_b,
        }


def _stack_views(source_a, padding_mask_a, source_b, padding_mask_b):
    """One (2B, S_max) batch and padding mask (or None) from the two (B, S_a) / (B, S_b) views."""
    longest = max(source_a.shape[1], source_b.shape[1])
    sources, masks = [], []
    for source, mask in ((source_a, padding_mask_a), (source_b, padding_mask_b)):
        if mask is None:
            mask = torch.zeros(source.shape, dtype=torch.bool, device=source.device)
        extra = longest - source.shape[1]
        sources.append(F.pad(source, (0, extra)))
        masks.append(F.pad(mask, (0, extra), value=True))
    mask = torch.cat(masks)
    return torch.cat(sources), (mask if bool(mask.any()) else None)
