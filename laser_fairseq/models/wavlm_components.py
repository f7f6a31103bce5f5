"""Building blocks of the WavLM encoder (:mod:`laser_fairseq.models.wavlm` assembles them), with unilm's
module and parameter names: the waveform CNN, the convolutional positional embedding, the relative position
buckets, the gated self-attention and the transformer block."""

from __future__ import annotations

import math
import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .wavlm_config import ACTIVATIONS, ConvSpec, WavLMConfig


class _SwapLast(nn.Module):
    """(..., A, B) -> (..., B, A)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.transpose(-2, -1)


class _Fp32GroupNorm(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype."""

    def forward(self, x: Tensor) -> Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).type_as(x)


class _Fp32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype."""

    def forward(self, x: Tensor) -> Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).type_as(x)


class _SamePad(nn.Module):
    """Drop the extra last frame an even-kernel 'same' convolution produces. (B, C, T+1) -> (B, C, T)."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, : -self.remove] if self.remove else x


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``scale`` (fairseq's GradMultiply)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return grad * ctx.scale, None


def _conv_block(n_in: int, n_out: int, kernel: int, stride: int, bias: bool, norm: Optional[str]) -> nn.Sequential:
    """One CNN layer with unilm's module indices: 0 conv, 1 dropout, 2 norm (if any), then GELU.

    norm: "group" -> GroupNorm(n_out groups) at index 2; "layer" -> (swap, LayerNorm, swap) at index 2, so
    its parameters are ``2.1.weight`` / ``2.1.bias``; None -> no norm.
    """
    conv = nn.Conv1d(n_in, n_out, kernel, stride=stride, bias=bias)
    nn.init.kaiming_normal_(conv.weight)
    if norm == "group":
        return nn.Sequential(conv, nn.Dropout(0.0), _Fp32GroupNorm(n_out, n_out, affine=True), nn.GELU())
    if norm == "layer":
        layer_norm = nn.Sequential(_SwapLast(), _Fp32LayerNorm(n_out, elementwise_affine=True), _SwapLast())
        return nn.Sequential(conv, nn.Dropout(0.0), layer_norm, nn.GELU())
    return nn.Sequential(conv, nn.Dropout(0.0), nn.GELU())


class ConvFeatureExtractor(nn.Module):
    """The waveform CNN. ``conv_layers.N`` as in unilm's ConvFeatureExtractionModel (conv_type "default")."""

    def __init__(self, layers: ConvSpec, mode: str, conv_bias: bool):
        super().__init__()
        blocks = []
        in_dim = 1
        for i, (dim, kernel, stride) in enumerate(layers):
            norm = "layer" if mode == "layer_norm" else ("group" if i == 0 else None)
            blocks.append(_conv_block(in_dim, dim, kernel, stride, conv_bias, norm))
            in_dim = dim
        self.conv_layers = nn.ModuleList(blocks)

    def forward(self, source: Tensor) -> Tensor:
        """source (B, S) -> features (B, C, T)."""
        x = source.unsqueeze(1)
        for layer in self.conv_layers:
            x = layer(x)
        return x


def _positional_conv(dim: int, kernel: int, groups: int) -> nn.Sequential:
    """Convolutional relative positional embedding: weight-normed grouped conv (dim=2), same-pad, GELU.

    Uses the legacy ``torch.nn.utils.weight_norm`` so the parameters are ``0.weight_g`` (1, 1, kernel) and
    ``0.weight_v`` (dim, dim // groups, kernel), the names in unilm/fairseq checkpoints.
    """
    conv = nn.Conv1d(dim, dim, kernel_size=kernel, padding=kernel // 2, groups=groups)
    nn.init.normal_(conv.weight, mean=0.0, std=math.sqrt(4.0 / (kernel * dim)))
    nn.init.constant_(conv.bias, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        conv = nn.utils.weight_norm(conv, name="weight", dim=2)
    return nn.Sequential(conv, _SamePad(kernel), nn.GELU())


def relative_position_buckets(length: int, num_buckets: int, max_distance: int, device=None) -> Tensor:
    """Bidirectional bucket index of every (query i, key j) pair. Returns (T, T) long.

    Half of the buckets hold keys after the query (j > i), half the rest. Within a half, distances below
    ``num_buckets // 4`` get a bucket each; larger ones share log-spaced buckets up to ``max_distance``,
    and everything beyond falls into the half's last bucket.
    """
    positions = torch.arange(length, dtype=torch.long, device=device)
    relative = positions[None, :] - positions[:, None]  # key - query
    half = num_buckets // 2
    exact = half // 2
    distance = relative.abs()
    scaled = torch.log(distance.float() / exact) / math.log(max_distance / exact) * (half - exact)
    far = torch.clamp(exact + scaled.to(torch.long), max=half - 1)
    near_or_far = torch.where(distance < exact, distance, far)
    return (relative > 0).to(torch.long) * half + near_or_far


class WavLMSelfAttention(nn.Module):
    """Multi-head self-attention with WavLM's gated relative position bias.

    Parameters (unilm names): ``relative_attention_bias`` (Embedding(num_buckets, H), only where
    ``has_relative_attention_bias``), ``k_proj``, ``v_proj``, ``q_proj``, ``out_proj``, and with
    ``gru_rel_pos`` ``grep_linear`` (Linear(head_dim, 8)) and ``grep_a`` (1, H, 1, 1).
    """

    def __init__(self, dim: int, heads: int, dropout: float, has_relative_attention_bias: bool,
                 num_buckets: int, max_distance: int, gru_rel_pos: bool):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.gru_rel_pos = gru_rel_pos
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(num_buckets, heads)
        else:
            self.relative_attention_bias = None
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        if gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))

    def compute_position_bias(self, length: int, batch: int) -> Tensor:
        """Ungated relative position bias, (B * H, T, T), batch-major like unilm's."""
        weight = self.relative_attention_bias.weight
        buckets = relative_position_buckets(length, self.num_buckets, self.max_distance, weight.device)
        per_head = self.relative_attention_bias(buckets).permute(2, 0, 1)  # (H, T, T)
        return per_head.unsqueeze(0).expand(batch, -1, -1, -1).reshape(batch * self.heads, length, length)

    def gate(self, query: Tensor) -> Tensor:
        """Per-head, per-query-frame gate of the position bias. query (B, T, C) -> (B * H, T, 1).

        Each head's slice of the query goes through grep_linear (8 outputs), summed in two groups of 4,
        sigmoid -> (a, b); gate = a * (b * grep_a - 1) + 2.
        """
        batch, length, _ = query.shape
        per_head = query.view(batch, length, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        logits = self.grep_linear(per_head).view(batch, self.heads, length, 2, 4).sum(-1)
        a, b = torch.sigmoid(logits).chunk(2, dim=-1)  # (B, H, T, 1) each
        gate = a * (b * self.grep_a - 1.0) + 2.0
        return gate.reshape(batch * self.heads, length, 1)

    def attention_mask(self, query: Tensor, padding_mask: Optional[Tensor],
                       position_bias: Optional[Tensor]) -> Optional[Tensor]:
        """The additive / boolean mask for scaled_dot_product_attention.

        query (B, T, C); padding_mask (B, T) True = padded key; position_bias (B * H, T, T).
        Returns (B, H, T, T) float (gated bias, -inf at padded keys), (B, 1, 1, T) bool (True = attend), or None.
        """
        batch, length, _ = query.shape
        bias = None
        if position_bias is not None:
            bias = self.gate(query) * position_bias if self.gru_rel_pos else position_bias
            bias = bias.view(batch, self.heads, length, length)
        if padding_mask is None:
            return bias
        key_pad = padding_mask[:, None, None, :]
        if bias is None:
            return ~key_pad
        return bias.masked_fill(key_pad, float("-inf"))

    def forward(self, x: Tensor, padding_mask: Optional[Tensor] = None,
                position_bias: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        """x (T, B, C) -> (output (T, B, C), ungated position bias (B * H, T, T) or None).

        Computes the position bias here if this layer owns the embedding and none was passed in.
        """
        length, batch, dim = x.shape
        if position_bias is None and self.relative_attention_bias is not None:
            position_bias = self.compute_position_bias(length, batch)
        query = x.transpose(0, 1)  # (B, T, C)
        mask = self.attention_mask(query, padding_mask, position_bias)
        shape = (batch, length, self.heads, self.head_dim)
        q = self.q_proj(query).view(shape).transpose(1, 2)
        k = self.k_proj(query).view(shape).transpose(1, 2)
        v = self.v_proj(query).view(shape).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        out = self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))
        return out.transpose(0, 1), position_bias


class WavLMBlock(nn.Module):
    """One transformer block (unilm's TransformerSentenceEncoderLayer), post- or pre-LN."""

    def __init__(self, cfg: WavLMConfig, has_relative_attention_bias: bool):
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.layer_norm_first = cfg.layer_norm_first
        self.activation = ACTIVATIONS[cfg.activation_fn]
        self.self_attn = WavLMSelfAttention(
            dim, cfg.encoder_attention_heads, cfg.attention_dropout, has_relative_attention_bias,
            cfg.num_buckets, cfg.max_distance, cfg.gru_rel_pos,
        )
        self.dropout1 = nn.Dropout(cfg.dropout)
        self.dropout2 = nn.Dropout(cfg.activation_dropout)
        self.dropout3 = nn.Dropout(cfg.dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)

    def feed_forward(self, x: Tensor) -> Tensor:
        """fc1 -> activation -> dropout2 -> fc2 -> dropout3, shape preserved."""
        return self.dropout3(self.fc2(self.dropout2(self.activation(self.fc1(x)))))

    def forward(self, x: Tensor, padding_mask: Optional[Tensor] = None,
                position_bias: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        """x (T, B, C), padding_mask (B, T) -> (x (T, B, C), position bias (B * H, T, T) or None)."""
        if self.layer_norm_first:
            attn, position_bias = self.self_attn(self.self_attn_layer_norm(x), padding_mask, position_bias)
            x = x + self.dropout1(attn)
            return x + self.feed_forward(self.final_layer_norm(x)), position_bias
        attn, position_bias = self.self_attn(x, padding_mask, position_bias)
        x = self.self_attn_layer_norm(x + self.dropout1(attn))
        return self.final_layer_norm(x + self.feed_forward(x)), position_bias


class _TransformerEncoder(nn.Module):
    """Container giving the ``encoder.*`` names: pos_conv, layers, layer_norm."""

    def __init__(self, cfg: WavLMConfig):
        super().__init__()
        self.pos_conv = _positional_conv(cfg.encoder_embed_dim, cfg.conv_pos, cfg.conv_pos_groups)
        self.layers = nn.ModuleList(
            WavLMBlock(cfg, has_relative_attention_bias=cfg.relative_position_embedding and i == 0)
            for i in range(cfg.encoder_layers)
        )
        self.layer_norm = nn.LayerNorm(cfg.encoder_embed_dim)


def _bert_init(module: nn.Module) -> None:
    """unilm's init for transformer blocks: Linear/Embedding weights N(0, 0.02), biases 0."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
