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

- padded batches (``BlockwiseUpstream.embed``): each utterance goes through the waveform normalisation
  (``cfg.normalize``) and the CNN on its own valid samples, so its frames are those of a batch of one, as
  s3prl normalises each utterance before padding. unilm's batched rule (a frame is padded when all of its
  ``S // T`` samples are) lets zero padding leak into the group norm of Base models and into frames that
  partly cover real audio; torchaudio's conv arithmetic ``(L - k) // s + 1`` gives the same frame count
  as a batch of one.
- layerdrop (``encoder_layerdrop``) is accepted and never applied: :meth:`WavLMEncoder.block` always runs
  its block; a caller that wants layerdrop decides itself whether to call it.
- hidden states follow s3prl: the input of block 0, the output of every block, the last one finalised.

Apart from these, dropout modules use the cfg values in training mode exactly where unilm applies them.

Two inherited properties worth knowing: with ``extractor_mode="default"`` (Base) the GroupNorm on conv 0
normalises over all samples of the row it is given, so :meth:`WavLMEncoder.conv_features` called directly
on a zero-padded batch lets the padding into the valid frames, as unilm does (``embed`` avoids this by
giving it one utterance's valid samples at a time, above); and the legacy ``weight_norm`` on
``encoder.pos_conv`` keeps the last computed weight as a plain attribute, so ``copy.deepcopy`` fails after a
forward that built a graph through it (run ``embed`` under ``torch.no_grad()``, as the frozen trunk does, or
deepcopy before the first forward).
"""

from __future__ import annotations

import ast
import math
import numbers
import warnings
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blockwise import BlockwiseUpstream
from .encoder_state import EncoderState

ConvSpec = list[tuple[int, int, int]]

# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------

EXTRACTOR_MODES = ("default", "layer_norm")


# Fields of unilm's cfg that do not change what the encoder computes here: accepted as they come.
INFERENCE_IRRELEVANT_FIELDS = frozenset({
    "encoder_layerdrop", "dropout_features", "mask_length", "mask_prob", "mask_selection", "mask_other",
    "no_mask_overlap", "mask_min_space", "mask_channel_length", "mask_channel_prob", "mask_channel_selection",
    "mask_channel_other", "no_mask_channel_overlap", "mask_channel_min_space",
})


def _gelu_fp32(x: Tensor) -> Tensor:
    """Exact GELU computed in float32 (fairseq's ``gelu``)."""
    return F.gelu(x.float()).type_as(x)


def _gelu_tanh(x: Tensor) -> Tensor:
    """Tanh approximation of GELU (fairseq's ``gelu_accurate`` / ``gelu_fast``)."""
    return F.gelu(x, approximate="tanh")


def _identity(x: Tensor) -> Tensor:
    return x


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": _gelu_fp32,
    "gelu_fast": _gelu_tanh,
    "gelu_accurate": _gelu_tanh,
    "tanh": torch.tanh,
    "linear": _identity,
}


def _eval_conv_spec_node(node: ast.AST) -> Any:
    """Evaluate the tiny expression language of ``conv_feature_layers`` (literals, ``+`` and ``*``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Tuple):
        return tuple(_eval_conv_spec_node(e) for e in node.elts)
    if isinstance(node, ast.List):
        return [_eval_conv_spec_node(e) for e in node.elts]
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        left, right = _eval_conv_spec_node(node.left), _eval_conv_spec_node(node.right)
        return left + right if isinstance(node.op, ast.Add) else left * right
    raise ValueError(f"unsupported element {ast.dump(node)}")


def parse_conv_feature_layers(spec: Any) -> ConvSpec:
    """Parse a conv spec such as ``"[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"``.

    Accepts the string form of the unilm cfg (evaluated safely, without ``eval``) or an already built list.
    Returns [(channels, kernel, stride), ...]; raises ValueError naming ``conv_feature_layers``.
    """
    try:
        value = _eval_conv_spec_node(ast.parse(spec, mode="eval").body) if isinstance(spec, str) else spec
        layers = [tuple(int(v) for v in layer) for layer in value]
    except (SyntaxError, TypeError, ValueError) as err:
        raise ValueError(f"conv_feature_layers={spec!r} is not a list of (dim, kernel, stride): {err}") from err
    if not layers or any(len(layer) != 3 or min(layer) <= 0 for layer in layers):
        raise ValueError(f"conv_feature_layers={spec!r} must be a non-empty list of positive (dim, kernel, stride)")
    return layers  # type: ignore[return-value]


def _coerce(name: str, value: Any, kind: type) -> Any:
    """``value`` as ``kind`` (bool, int, float or str); ValueError naming the field otherwise."""
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind is bool and (isinstance(value, bool) or (is_int and value in (0, 1))):
        return bool(value)
    if kind is int and is_int:
        return int(value)
    if kind is float and (is_int or isinstance(value, numbers.Real)) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    raise ValueError(f"{name}={value!r}: expected {kind.__name__}")


@dataclass
class WavLMConfig:
    """Architecture of a unilm WavLM model; defaults are those of unilm's ``WavLMConfig``.

    Build it from a checkpoint's cfg dict with :meth:`from_dict`. Keys this class does not know (real
    checkpoints carry training keys) are kept in ``extra`` and returned by :meth:`to_dict`. Masking fields
    (``mask_*``, ``no_mask_*``), ``dropout_features`` and ``encoder_layerdrop`` do not affect the encoder's
    computation here and are only carried along.
    """

    extractor_mode: str = "default"
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_norm_first: bool = False
    conv_feature_layers: str = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"
    conv_bias: bool = False
    feature_grad_mult: float = 1.0
    normalize: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    dropout_features: float = 0.0
    mask_length: int = 10
    mask_prob: float = 0.65
    mask_selection: str = "static"
    mask_other: float = 0.0
    no_mask_overlap: bool = False
    mask_min_space: int = 1
    mask_channel_length: int = 10
    mask_channel_prob: float = 0.0
    mask_channel_selection: str = "static"
    mask_channel_other: float = 0.0
    no_mask_channel_overlap: bool = False
    mask_channel_min_space: int = 1
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "WavLMConfig":
        """Build from a unilm cfg dict; unknown keys go to ``extra``, missing keys keep unilm defaults."""
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in d.items() if k in known}
        extra = {k: v for k, v in d.items() if k not in known}
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict:
        """The unilm cfg dict: every field plus the carried ``extra`` keys."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out

    def __post_init__(self) -> None:
        self._coerce_types()
        self._validate()

    def _coerce_types(self) -> None:
        """Check the type of every field that matters, converting ints to floats and 0/1 to bools."""
        for f in fields(self):
            if f.name in ("extra", "conv_feature_layers") or f.name in INFERENCE_IRRELEVANT_FIELDS:
                continue
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), type(f.default)))

    def _validate(self) -> None:
        """Raise ValueError naming the field and its value for every configuration this encoder cannot run."""
        if self.extractor_mode not in EXTRACTOR_MODES:
            raise ValueError(f"extractor_mode={self.extractor_mode!r} is not supported (use one of {EXTRACTOR_MODES})")
        if self.activation_fn not in ACTIVATIONS:
            raise ValueError(
                f"activation_fn={self.activation_fn!r} is not supported (use one of {sorted(ACTIVATIONS)})"
            )
        parse_conv_feature_layers(self.conv_feature_layers)
        for name in ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads",
                     "conv_pos", "conv_pos_groups"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be positive")
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise ValueError(f"encoder_attention_heads={self.encoder_attention_heads!r} does not divide "
                             f"encoder_embed_dim={self.encoder_embed_dim}")
        if self.encoder_embed_dim % self.conv_pos_groups:
            raise ValueError(f"conv_pos_groups={self.conv_pos_groups!r} does not divide "
                             f"encoder_embed_dim={self.encoder_embed_dim}")
        if self.feature_grad_mult < 0:
            raise ValueError(f"feature_grad_mult={self.feature_grad_mult!r} must be >= 0")
        for name in ("dropout", "attention_dropout", "activation_dropout", "dropout_input"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be in [0, 1)")
        if self.relative_position_embedding:
            self._validate_buckets()

    def _validate_buckets(self) -> None:
        max_exact = self.num_buckets // 4
        if max_exact < 1:
            raise ValueError(f"num_buckets={self.num_buckets!r} must be >= 4 for relative_position_embedding")
        if self.max_distance <= max_exact:
            raise ValueError(f"max_distance={self.max_distance!r} must exceed num_buckets // 4 = {max_exact}")

    @property
    def conv_layers(self) -> ConvSpec:
        """The parsed ``conv_feature_layers``: [(channels, kernel, stride), ...]."""
        return parse_conv_feature_layers(self.conv_feature_layers)

    @property
    def head_dim(self) -> int:
        return self.encoder_embed_dim // self.encoder_attention_heads


# --------------------------------------------------------------------------------------------------
# small building blocks
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# transformer block
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# the encoder
# --------------------------------------------------------------------------------------------------


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


def _bert_init(module: nn.Module) -> None:
    """unilm's init for transformer blocks: Linear/Embedding weights N(0, 0.02), biases 0."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


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


# --------------------------------------------------------------------------------------------------
# tiny random checkpoints for tests and demos
# --------------------------------------------------------------------------------------------------

_BASE_CFG = dict(  # WavLM-Base values, except sizes which make_tiny_unilm_checkpoint sets
    extractor_mode="default", activation_fn="gelu", layer_norm_first=False, conv_bias=False,
    feature_grad_mult=0.1, normalize=False, dropout=0.1, attention_dropout=0.1, activation_dropout=0.0,
    encoder_layerdrop=0.05, dropout_input=0.1, dropout_features=0.1, mask_length=10, mask_prob=0.8,
    mask_selection="static", mask_other=0.0, no_mask_overlap=False, mask_min_space=1, mask_channel_length=10,
    mask_channel_prob=0.0, mask_channel_selection="static", mask_channel_other=0.0,
    no_mask_channel_overlap=False, mask_channel_min_space=1, relative_position_embedding=True,
    gru_rel_pos=True,
)


def _randomize(model: WavLMEncoder) -> None:
    """Non-degenerate random weights: unit-scale linears, perturbed norms, small random biases,
    N(0, 1) relative position embedding; grep_a keeps its original init (ones)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=module.in_features ** -0.5)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            nn.init.normal_(module.weight, mean=1.0, std=0.1)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=1.0)
        bias = getattr(module, "bias", None)
        if isinstance(bias, nn.Parameter):
            nn.init.normal_(bias, std=0.1)


def make_tiny_unilm_checkpoint(layers: int = 4, dim: int = 64, ffn: int = 128, heads: int = 4,
                               layer_norm_first: bool = False, extractor_mode: str = "default", seed: int = 0,
                               **cfg_overrides: Any) -> dict:
    """A small random WavLM in unilm format: ``{"cfg": full unilm cfg dict, "model": state_dict}``.

    The CNN keeps the real kernel/stride pattern (50 frames per second of 16 kHz audio) with 32 channels;
    positional conv 16 taps in 4 groups; 32 buckets up to distance 64. With ``extractor_mode="layer_norm"``
    the cfg follows WavLM-Large (conv_bias and normalize True). Any cfg field can be overridden by keyword.
    The global RNG is left untouched.
    """
    large_like = extractor_mode == "layer_norm"
    cfg = dict(
        _BASE_CFG, extractor_mode=extractor_mode, layer_norm_first=layer_norm_first, encoder_layers=layers,
        encoder_embed_dim=dim, encoder_ffn_embed_dim=ffn, encoder_attention_heads=heads,
        conv_feature_layers="[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2", conv_bias=large_like,
        normalize=large_like, conv_pos=16, conv_pos_groups=4, num_buckets=32, max_distance=64,
    )
    cfg.update(cfg_overrides)
    config = WavLMConfig.from_dict(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WavLMEncoder(config)
        with torch.no_grad():
            _randomize(model)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {"cfg": config.to_dict(), "model": state}
