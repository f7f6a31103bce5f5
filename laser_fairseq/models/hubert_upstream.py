"""fairseq's own HuBERT model, driven block by block.

The upstream is built and loaded by fairseq's checkpoint code (``load_model_ensemble_and_task``), so a
``hubert_base_ls960.pt`` goes through exactly the path fairseq uses; this module only re-sequences
``HubertModel.extract_features`` (without masking) into the steps of ``BlockwiseUpstream``.
"""

from typing import Optional

import torch.nn.functional as F

from .. import quiet_fairseq  # noqa: F401  (before any fairseq import: keeps the caller's logging setup)
from fairseq.models.hubert import HubertModel
from torch import Tensor, nn

from .blockwise import BlockwiseUpstream
from .encoder_state import EncoderState


class HubertUpstream(BlockwiseUpstream):
    """Wraps a fairseq ``HubertModel`` (kept as ``self.model``, keys unchanged).

    ``normalize``: layer-normalise each waveform first, as fairseq's ``hubert_pretraining`` task does for
    checkpoints trained with ``task.normalize: true`` (HuBERT Large / X-Large).
    """

    kind = "hubert"
    original_prefix = "model."

    def __init__(self, model: HubertModel, normalize: bool):
        super().__init__()
        self.model = model
        self.normalize = normalize

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.encoder.layers

    @property
    def embed_dim(self) -> int:
        return self.model.encoder.embedding_dim

    def conv_features(self, source: Tensor) -> Tensor:
        """(B, S) -> (B, T, C_cnn) CNN features, layer-normalised as in ``HubertModel.forward``."""
        features = self.model.feature_extractor(source).transpose(1, 2)
        return self.model.layer_norm(features)

    def embed_features(self, features: Tensor, frame_padding_mask: Optional[Tensor]) -> EncoderState:
        """(B, T, C_cnn) -> state entering block 0: projection, positional conv, post-LN input norm."""
        model = self.model
        if model.post_extract_proj is not None:
            features = model.post_extract_proj(features)
        x = model.dropout_input(features)
        encoder = model.encoder
        if frame_padding_mask is not None:
            x = x.masked_fill(frame_padding_mask.unsqueeze(-1), 0.0)
        x = x + encoder.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not encoder.layer_norm_first:
            x = encoder.layer_norm(x)
        x = F.dropout(x, p=encoder.dropout, training=encoder.training)
        return EncoderState(x=x.transpose(0, 1), padding_mask=frame_padding_mask)

    def block(self, index: int, state: EncoderState) -> EncoderState:
        """Transformer block ``index`` (never layer-dropped: LASER always runs every block)."""
        x, _ = self.model.encoder.layers[index](
            state.x, self_attn_padding_mask=state.padding_mask, need_weights=False
        )
        return state.with_x(x)

    def finalize(self, state: EncoderState) -> Tensor:
        x = state.x.transpose(0, 1)
        if self.model.encoder.layer_norm_first:
            x = self.model.encoder.layer_norm(x)
        return x
