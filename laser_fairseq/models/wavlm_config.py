"""The configuration of a unilm WavLM model (:class:`WavLMConfig`, the ``cfg`` dict of its checkpoints),
with the conv spec parser and the activation functions its fields name."""

from __future__ import annotations

import ast
import numbers
from dataclasses import dataclass, field, fields
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

ConvSpec = list[tuple[int, int, int]]

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
