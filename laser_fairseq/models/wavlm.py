"""WavLM encoder that loads Microsoft unilm checkpoints and runs block by block.

The released WavLM checkpoints (WavLM-Base.pt, WavLM-Base+.pt, WavLM-Large.pt) are dictionaries
``{"cfg": dict, "model": state_dict}`` written by the unilm code (``wavlm/WavLM.py``, ``wavlm/modules.py``).
:class:`WavLMEncoder` re-implements that network for this project with exactly the same parameter names,
so such a state dict loads with ``load_state_dict(strict=True)``, and exposes the block-wise interface of
:mod:`laser_fairseq.models.encoder_state`::

    state = encoder.embed(source, padding_mask)   # waveform -> input of block 0
    for i in range(encoder.num_layers):
        state = encoder.block(i, state)           # one transformer block
    features = encoder.finalize(state)            # (B, T, C)

Behaviour follows the unilm model (``WavLM.extract_features`` with ``mask=False``) with these deliberate
choices, all of which match how s3prl's ``wavlm`` upstream drives that model:

- padded batches: each utterance goes through the waveform normalisation (``cfg.normalize``) and the CNN
  on its own valid samples, as s3prl normalises each utterance before padding (why:
  :mod:`laser_fairseq.models.blockwise`). unilm's batched rule (a frame is padded when all of its ``S // T``
  samples are) also lets zero padding into frames that partly cover real audio; torchaudio's conv
  arithmetic ``(L - k) // s + 1`` gives the same frame count as a batch of one.
- layerdrop (``encoder_layerdrop``) is accepted and never applied: :meth:`WavLMEncoder.block` always runs
  its block; a caller that wants layerdrop decides itself whether to call it.
- hidden states follow s3prl: the input of block 0, the output of every block, the last one finalised.

Apart from these, dropout modules use the cfg values in training mode exactly where unilm applies them.

Two inherited properties worth knowing: :meth:`WavLMEncoder.conv_features` called directly on a zero-padded
batch lets the padding into the valid frames of Base models, as unilm does (``embed`` does not, above); and
the legacy ``weight_norm`` on ``encoder.pos_conv`` keeps the last computed weight as a plain attribute, so
``copy.deepcopy`` fails after a forward that built a graph through it (run ``embed`` under
``torch.no_grad()``, as the frozen trunk does, or deepcopy before the first forward).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blockwise import BlockwiseUpstream
from .encoder_state import EncoderState
from .wavlm_components import ConvFeatureExtractor, _bert_init, _ScaleGrad, _TransformerEncoder
from .wavlm_config import WavLMConfig, parse_conv_feature_layers

__all__ = ["WavLMConfig", "WavLMEncoder", "parse_conv_feature_layers"]


class WavLMEncoder(BlockwiseUpstream):
    """WavLM with unilm's parameter names, driven block by block.

    State dict keys: ``mask_emb``, ``feature_extractor.conv_layers.N.*``, ``post_extract_proj.*`` (only when
    the CNN width differs from encoder_embed_dim), ``encoder.pos_conv.0.{bias,weight_g,weight_v}``,
    ``encoder.layers.N.*``, ``encoder.layer_norm.*``, ``layer_norm.*``.
    """

    kind = "wavlm"

    def __init__(self, cfg: WavLMConfig):
        super().__init__()
        self.cfg = cfg
        self.normalize = cfg.normalize
        conv_layers = cfg.conv_layers
        conv_dim = conv_layers[-1][0]
        dim = cfg.encoder_embed_dim
        self.feature_extractor = ConvFeatureExtractor(conv_layers, cfg.extractor_mode, cfg.conv_bias)
        self.post_extract_proj = nn.Linear(conv_dim, dim) if conv_dim != dim else None
        self.dropout_input = nn.Dropout(cfg.dropout_input)
        self.mask_emb = nn.Parameter(torch.empty(dim).uniform_())
        self.encoder = _TransformerEncoder(cfg)
        self.layer_norm = nn.LayerNorm(conv_dim)
        self.encoder.layers.apply(_bert_init)

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_unilm(cls, cfg_dict: dict, state_dict: dict) -> "WavLMEncoder":
        """Build from a unilm cfg dict and load ``state_dict`` strictly (module left in training mode).

        Raises ValueError listing missing / unexpected keys or shape mismatches before loading.
        """
        model = cls(WavLMConfig.from_dict(cfg_dict))
        _check_state_dict(model.state_dict(), state_dict)
        model.load_state_dict(state_dict, strict=True)
        return model

    # -- properties -----------------------------------------------------------------------------

    @property
    def num_layers(self) -> int:
        return len(self.encoder.layers)

    @property
    def embed_dim(self) -> int:
        return self.cfg.encoder_embed_dim

    @property
    def layers(self) -> nn.ModuleList:
        """The transformer blocks (``encoder.layers``)."""
        return self.encoder.layers

    # -- block-wise interface -------------------------------------------------------------------

    def conv_features(self, source: Tensor) -> Tensor:
        """CNN (feature_grad_mult applied; 0 = no gradient) and feature layer norm. (B, S) -> (B, T, C_conv)."""
        scale = self.cfg.feature_grad_mult
        if scale <= 0:
            with torch.no_grad():
                features = self.feature_extractor(source)
        else:
            features = self.feature_extractor(source)
            features = _ScaleGrad.apply(features, scale) if scale != 1.0 else features
        return self.layer_norm(features.transpose(1, 2))

    def embed_features(self, features: Tensor, frame_padding_mask: Optional[Tensor]) -> EncoderState:
        """(B, T, C_conv) -> state entering block 0: projection, positional conv, post-LN input norm."""
        if self.post_extract_proj is not None:
            features = self.post_extract_proj(features)
        x = self.dropout_input(features)
        if frame_padding_mask is not None:
            x = x.masked_fill(frame_padding_mask.unsqueeze(-1), 0.0)
        x = x + self.encoder.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.cfg.layer_norm_first:
            x = self.encoder.layer_norm(x)
        x = F.dropout(x, p=self.cfg.dropout, training=self.training)
        return EncoderState(x.transpose(0, 1), frame_padding_mask, None)

    def block(self, index: int, state: EncoderState) -> EncoderState:
        """Run transformer block ``index`` (no layerdrop). Block 0 computes the relative position bias."""
        x, position_bias = self.encoder.layers[index](state.x, state.padding_mask, state.position_bias)
        return state.with_x(x, position_bias)

    def finalize(self, state: EncoderState) -> Tensor:
        """Output of the last block to features (B, T, C): the final layer norm of pre-LN models."""
        x = state.x.transpose(0, 1)
        return self.encoder.layer_norm(x) if self.cfg.layer_norm_first else x


def _check_state_dict(expected: dict, given: dict) -> None:
    """ValueError naming missing / unexpected keys and shape mismatches between two state dicts."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(given)
        if tuple(given[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or mismatched:
        raise ValueError(
            "unilm WavLM state dict does not match the cfg: "
            f"missing keys {missing}; unexpected keys {unexpected}; shape mismatches {mismatched}"
        )
