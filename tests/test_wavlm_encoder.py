"""Tests of laser_fairseq.models.wavlm against an independent WavLM implementation (torchaudio's).

The same random unilm-format weights are loaded into both models through a key map written here.
Two facts about torchaudio 2.11's WavLM shape how it is driven:

- ``Wav2Vec2Model.forward(waveforms, lengths)`` cannot run WavLM with lengths: its Transformer passes an
  additive ``attention_mask`` and ``WavLMSelfAttention.forward`` asserts ``attention_mask is None``. So the
  reference is driven module by module and gets the padding as the ``key_padding_mask`` that
  WavLMSelfAttention does accept (the unpadded path is checked against torchaudio's public API as well).
- torchaudio derives valid frame counts from the convolution arithmetic ``(L - k) // s + 1`` per layer;
  unilm cuts the sample mask into ``S // T``-sample chunks and calls a frame padded only when its whole chunk
  is padding. For a 16000-sample batch (T = 49, chunks of 326) an 8000-sample utterance has 24 valid frames
  for torchaudio and 25 for unilm; 8150 samples give 25 for both. The padded comparisons use lengths where
  the rules agree, and one test pins the disagreement and shows outputs match once torchaudio is given
  unilm's frame mask.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
import torchaudio

from laser_fairseq.models.encoder_state import EncoderState
from laser_fairseq.models.wavlm import WavLMConfig, WavLMEncoder
from laser_fairseq.tiny_upstream import make_tiny_unilm_checkpoint

SAMPLES = 16000
AGREEING_LENGTHS = [16000, 8150]
DISAGREEING_LENGTHS = [16000, 8000]

CONFIGS = {
    # WavLM-Base-like: post-LN, GroupNorm on conv 0, no conv bias, no waveform normalisation
    "base": dict(layers=3, dim=64, ffn=128, heads=4, layer_norm_first=False, extractor_mode="default"),
    # WavLM-Large-like: pre-LN, LayerNorm in every conv layer, conv bias, normalize=True; few buckets and
    # a short max_distance so 49 frames reach the log-spaced buckets and the last (capped) bucket
    "large": dict(layers=3, dim=64, ffn=96, heads=8, layer_norm_first=True, extractor_mode="layer_norm",
                  num_buckets=16, max_distance=24, seed=1),
}


def tiny_checkpoint(name: str) -> dict:
    """A tiny unilm checkpoint; grep_a is randomised so the per-head gate constant is exercised."""
    checkpoint = make_tiny_unilm_checkpoint(**CONFIGS[name])
    generator = torch.Generator().manual_seed(123)
    for key, value in checkpoint["model"].items():
        if key.endswith("self_attn.grep_a"):
            checkpoint["model"][key] = 0.5 + torch.rand(value.shape, generator=generator)
    return checkpoint


# --------------------------------------------------------------------------------------------------
# unilm -> torchaudio
# --------------------------------------------------------------------------------------------------

_TOP_LEVEL_RULES = [
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"feature_extractor.conv_layers.\1.conv.\2"),
    # GroupNorm ("default" mode, conv 0) sits at index 2; LayerNorm ("layer_norm" mode) at 2.1
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.(?:1\.)?(weight|bias)",
     r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"layer_norm\.(weight|bias)", r"encoder.feature_projection.layer_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", r"encoder.feature_projection.projection.\1"),
    (r"encoder\.pos_conv\.0\.bias", "encoder.transformer.pos_conv_embed.conv.bias"),
    (r"encoder\.pos_conv\.0\.weight_g", "encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original0"),
    (r"encoder\.pos_conv\.0\.weight_v", "encoder.transformer.pos_conv_embed.conv.parametrizations.weight.original1"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.transformer.layer_norm.\1"),
]

_LAYER_RULES = [
    (r"self_attn\.out_proj\.(weight|bias)", r"attention.attention.out_proj.\1"),
    (r"self_attn\.relative_attention_bias\.weight", "attention.rel_attn_embed.weight"),
    (r"self_attn\.grep_linear\.(weight|bias)", r"attention.gru_rel_pos_linear.\1"),
    (r"self_attn\.grep_a", "attention.gru_rel_pos_const"),
    (r"self_attn_layer_norm\.(weight|bias)", r"layer_norm.\1"),
    (r"fc1\.(weight|bias)", r"feed_forward.intermediate_dense.\1"),
    (r"fc2\.(weight|bias)", r"feed_forward.output_dense.\1"),
    (r"final_layer_norm\.(weight|bias)", r"final_layer_norm.\1"),
]


def _rename(key: str) -> str | None:
    """torchaudio name of a unilm key; None for keys handled elsewhere (q/k/v) or absent (mask_emb)."""
    if key == "mask_emb" or re.fullmatch(r"encoder\.layers\.\d+\.self_attn\.[qkv]_proj\.(weight|bias)", key):
        return None
    layer = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", key)
    rules = _LAYER_RULES if layer else _TOP_LEVEL_RULES
    name = layer.group(2) if layer else key
    for pattern, replacement in rules:
        if re.fullmatch(pattern, name):
            renamed = re.sub(pattern, replacement, name)
            return f"encoder.transformer.layers.{layer.group(1)}.{renamed}" if layer else renamed
    raise KeyError(f"no torchaudio name for {key}")


def unilm_to_torchaudio(state: dict, num_layers: int) -> dict:
    """Map a unilm WavLM state dict to torchaudio's Wav2Vec2Model(WavLM) names (q, k, v fused in order)."""
    out = {new: value for key, value in state.items() if (new := _rename(key)) is not None}
    for i in range(num_layers):
        prefix = f"encoder.layers.{i}.self_attn."
        for kind in ("weight", "bias"):
            fused = torch.cat([state[f"{prefix}{n}_proj.{kind}"] for n in "qkv"])
            out[f"encoder.transformer.layers.{i}.attention.attention.in_proj_{kind}"] = fused
    return out


def build_torchaudio(cfg: WavLMConfig, state: dict) -> torch.nn.Module:
    model = torchaudio.models.wavlm_model(
        extractor_mode={"default": "group_norm", "layer_norm": "layer_norm"}[cfg.extractor_mode],
        extractor_conv_layer_config=cfg.conv_layers,
        extractor_conv_bias=cfg.conv_bias,
        encoder_embed_dim=cfg.encoder_embed_dim,
        encoder_projection_dropout=0.0,
        encoder_pos_conv_kernel=cfg.conv_pos,
        encoder_pos_conv_groups=cfg.conv_pos_groups,
        encoder_num_layers=cfg.encoder_layers,
        encoder_num_heads=cfg.encoder_attention_heads,
        encoder_num_buckets=cfg.num_buckets,
        encoder_max_distance=cfg.max_distance,
        encoder_attention_dropout=0.0,
        encoder_ff_interm_features=cfg.encoder_ffn_embed_dim,
        encoder_ff_interm_dropout=0.0,
        encoder_dropout=0.0,
        encoder_layer_norm_first=cfg.layer_norm_first,
        encoder_layer_drop=0.0,
        aux_num_out=None,
    )
    model.load_state_dict(unilm_to_torchaudio(state, cfg.encoder_layers), strict=True)
    return model.eval()


def torchaudio_hidden_states(model, waves: torch.Tensor, lengths=None, frame_mask=None):
    """Input of block 0, each block's output (the last finalised) from torchaudio's modules, plus the
    frame padding mask used (from torchaudio's own lengths unless ``frame_mask`` is given)."""
    features, frame_lengths = model.feature_extractor(waves, lengths)
    x = model.encoder.feature_projection(features)
    mask = frame_mask
    if mask is None and frame_lengths is not None:
        mask = torch.arange(x.size(1))[None, :] >= frame_lengths[:, None]
    if mask is not None:
        x = x.masked_fill(mask[..., None], 0.0)
    transformer = model.encoder.transformer
    x = transformer._preprocess(x)
    states, bias = [x], None
    for layer in transformer.layers:
        x, bias = layer(x, None, position_bias=bias, key_padding_mask=mask)
        states.append(x)
    if not transformer.layer_norm_first:  # torchaudio's flag is inverted: True means post-LN here
        states[-1] = transformer.layer_norm(states[-1])
    return states, mask


def make_batch(lengths: list[int], seed: int = 0):
    """Zero-padded waveforms (B, S), their padding mask (True = padded) and the lengths."""
    generator = torch.Generator().manual_seed(seed)
    waves = torch.zeros(len(lengths), max(lengths))
    for b, n in enumerate(lengths):
        waves[b, :n] = 0.1 * torch.randn(n, generator=generator) + 0.02
    mask = torch.arange(waves.size(1))[None, :] >= torch.tensor(lengths)[:, None]
    return waves, mask, torch.tensor(lengths)


def normalized_for_reference(waves, lengths) -> torch.Tensor:
    """s3prl's waveform normalisation, written independently: layer norm per utterance, then zero padding."""
    out = torch.zeros_like(waves)
    for b, n in enumerate(lengths.tolist()):
        out[b, :n] = F.layer_norm(waves[b, :n], (n,))
    return out


def max_valid_diff(ours: list, ref: list, mask) -> list[float]:
    """Max |ours - ref| over valid frames, per hidden state; asserts the float32 tolerance."""
    valid = torch.ones(ours[0].shape[:2], dtype=torch.bool) if mask is None else ~mask
    diffs = []
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a.shape == b.shape, (i, a.shape, b.shape)
        diff = (a - b).abs()[valid].max().item()
        scale = max(1.0, b[valid].abs().max().item())
        assert diff <= 1e-5 * scale, f"hidden state {i}: max abs diff {diff:.3g} (scale {scale:.3g})"
        diffs.append(diff)
    return diffs


def both_models(name: str):
    checkpoint = tiny_checkpoint(name)
    ours = WavLMEncoder.from_unilm(checkpoint["cfg"], checkpoint["model"]).eval()
    return ours, build_torchaudio(ours.cfg, checkpoint["model"])


# --------------------------------------------------------------------------------------------------
# agreement with torchaudio
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIGS))
@torch.no_grad()
def test_hidden_states_match_torchaudio_without_padding(name):
    ours, ref = both_models(name)
    waves, _, lengths = make_batch([SAMPLES, SAMPLES])
    ref_input = normalized_for_reference(waves, lengths) if ours.cfg.normalize else waves

    expected, _ = torchaudio_hidden_states(ref, ref_input)
    # the module-by-module reference agrees with torchaudio's public API
    public_layers, _ = ref.extract_features(ref_input)
    for i, layer_out in enumerate(public_layers[:-1]):
        torch.testing.assert_close(expected[i + 1], layer_out, rtol=0, atol=0)
    torch.testing.assert_close(expected[-1], ref(ref_input)[0], rtol=0, atol=1e-6)

    hidden = ours.hidden_states(waves)
    assert len(hidden) == ours.num_layers + 1
    diffs = max_valid_diff(hidden, expected, None)
    print(f"\n[{name}, no padding] max abs diff per hidden state vs torchaudio: {diffs}")


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("lengths", [AGREEING_LENGTHS, DISAGREEING_LENGTHS])
@torch.no_grad()
def test_padded_batch_matches_torchaudio_run_on_each_utterance_alone(name, lengths):
    """A padded utterance gets exactly the frames of a batch of one (the authors' setting): torchaudio's
    WavLM run on that utterance alone is the reference, so neither zero padding in the Base group norm
    nor a partly padded frame can leak in. Frame counts follow the conv arithmetic (L - k) // s + 1."""
    ours, ref = both_models(name)
    waves, sample_mask, lengths_tensor = make_batch(lengths)
    hidden = ours.hidden_states(waves, sample_mask)
    state = ours.embed(waves, sample_mask)
    _, ta_lengths = ref.feature_extractor(waves, lengths_tensor)
    assert (~state.padding_mask).sum(1).tolist() == ta_lengths.tolist()
    for row, length in enumerate(lengths):
        alone = waves[row : row + 1, :length]
        ref_input = F.layer_norm(alone, (length,)) if ours.cfg.normalize else alone
        expected, _ = torchaudio_hidden_states(ref, ref_input)
        frames = expected[0].shape[1]
        diffs = max_valid_diff([h[row : row + 1, :frames] for h in hidden], expected, None)
        print(f"\n[{name}, padded {lengths}, row {row}] max abs diff vs torchaudio alone: {max(diffs):.3g}")


@torch.no_grad()
def test_padding_does_not_change_base_group_norm_frames():
    """unilm's batched CNN would normalise conv 0 over the padded row; ours equals the unpadded run."""
    ours, _ = both_models("base")
    waves, sample_mask, lengths = make_batch(DISAGREEING_LENGTHS)
    padded = ours.hidden_states(waves, sample_mask)
    alone = ours.hidden_states(waves[1:, : lengths[1]])
    # equal up to the rounding of masked attention and of the positional conv over zeroed frames
    for h_padded, h_alone in zip(padded, alone):
        torch.testing.assert_close(h_padded[1, : h_alone.shape[1]], h_alone[0], rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# checkpoint layout
# --------------------------------------------------------------------------------------------------


def expected_unilm_keys(cfg: WavLMConfig) -> set[str]:
    """The key set of unilm's WavLM(cfg).state_dict(), written from unilm's module structure."""
    keys = {"mask_emb", "layer_norm.weight", "layer_norm.bias", "encoder.layer_norm.weight",
            "encoder.layer_norm.bias", "encoder.pos_conv.0.bias", "encoder.pos_conv.0.weight_g",
            "encoder.pos_conv.0.weight_v", "post_extract_proj.weight", "post_extract_proj.bias"}
    for i, _ in enumerate(cfg.conv_layers):
        prefix = f"feature_extractor.conv_layers.{i}."
        keys.add(prefix + "0.weight")
        if cfg.conv_bias:
            keys.add(prefix + "0.bias")
        if cfg.extractor_mode == "layer_norm":
            keys |= {prefix + "2.1.weight", prefix + "2.1.bias"}
        elif i == 0:
            keys |= {prefix + "2.weight", prefix + "2.bias"}
    for i in range(cfg.encoder_layers):
        prefix = f"encoder.layers.{i}."
        for name in ("self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj", "self_attn.out_proj",
                     "self_attn_layer_norm", "fc1", "fc2", "final_layer_norm"):
            keys |= {f"{prefix}{name}.weight", f"{prefix}{name}.bias"}
        if cfg.gru_rel_pos:
            keys |= {prefix + "self_attn.grep_linear.weight", prefix + "self_attn.grep_linear.bias",
                     prefix + "self_attn.grep_a"}
        if cfg.relative_position_embedding and i == 0:
            keys.add(prefix + "self_attn.relative_attention_bias.weight")
    return keys


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_state_dict_keys_are_exactly_unilm(name):
    checkpoint = tiny_checkpoint(name)
    model = WavLMEncoder.from_unilm(checkpoint["cfg"], checkpoint["model"])
    keys = set(model.state_dict())
    assert keys == expected_unilm_keys(model.cfg)
    assert [k for k in keys if "relative_attention_bias" in k] == [
        "encoder.layers.0.self_attn.relative_attention_bias.weight"]
    assert not any("parametrizations" in k for k in keys)
    assert model.state_dict()["encoder.pos_conv.0.weight_g"].shape == (1, 1, model.cfg.conv_pos)


def test_strict_round_trip():
    checkpoint = tiny_checkpoint("large")
    model = WavLMEncoder.from_unilm(checkpoint["cfg"], checkpoint["model"])
    for key, value in model.state_dict().items():
        assert torch.equal(value, checkpoint["model"][key]), key
    fresh = WavLMEncoder(WavLMConfig.from_dict(model.cfg.to_dict()))
    fresh.load_state_dict(model.state_dict(), strict=True)
    assert fresh.cfg.to_dict() == checkpoint["cfg"]


def test_from_unilm_names_missing_and_unexpected_keys():
    checkpoint = tiny_checkpoint("base")
    state = dict(checkpoint["model"])
    del state["encoder.layers.1.self_attn.grep_a"]
    state["encoder.layers.1.self_attn.relative_attention_bias.weight"] = torch.zeros(32, 4)
    with pytest.raises(ValueError) as info:
        WavLMEncoder.from_unilm(checkpoint["cfg"], state)
    assert "encoder.layers.1.self_attn.grep_a" in str(info.value)
    assert "encoder.layers.1.self_attn.relative_attention_bias.weight" in str(info.value)


def test_cfg_switches_change_the_key_set_like_unilm():
    no_relpos = make_tiny_unilm_checkpoint(layers=2, relative_position_embedding=False, gru_rel_pos=False)
    model = WavLMEncoder.from_unilm(no_relpos["cfg"], no_relpos["model"]).eval()
    assert set(model.state_dict()) == expected_unilm_keys(model.cfg)
    assert not any("relative_attention_bias" in k or "grep" in k for k in model.state_dict())
    waves, mask, _ = make_batch(AGREEING_LENGTHS)
    state = model.embed(waves, mask)
    assert model.block(0, state).position_bias is None
    assert torch.isfinite(model(waves, mask)[0]).all()


def test_unknown_cfg_keys_are_accepted_and_carried():
    checkpoint = make_tiny_unilm_checkpoint(layers=1, label_rate=50, skip_masked=False)
    cfg = WavLMConfig.from_dict(checkpoint["cfg"])
    assert cfg.extra == {"label_rate": 50, "skip_masked": False}
    assert cfg.to_dict()["label_rate"] == 50


@pytest.mark.parametrize("field, value", [
    ("extractor_mode", "conv2d"),
    ("activation_fn", "glu"),
    ("conv_feature_layers", "[(32, 10)]"),
    ("conv_feature_layers", "__import__('os')"),
    ("encoder_attention_heads", 5),
    ("conv_pos_groups", 3),
    ("num_buckets", 2),
    ("layer_norm_first", "yes"),
])
def test_unsupported_cfg_raises_naming_field_and_value(field, value):
    cfg = make_tiny_unilm_checkpoint(layers=1)["cfg"]
    cfg[field] = value
    with pytest.raises(ValueError) as info:
        WavLMConfig.from_dict(cfg)
    assert field in str(info.value) and repr(value) in str(info.value)


# --------------------------------------------------------------------------------------------------
# block-wise interface
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIGS))
@torch.no_grad()
def test_blockwise_run_equals_forward(name):
    checkpoint = tiny_checkpoint(name)
    model = WavLMEncoder.from_unilm(checkpoint["cfg"], checkpoint["model"]).eval()
    waves, mask, _ = make_batch(AGREEING_LENGTHS)
    features, frame_mask = model(waves, mask)

    state = model.embed(waves, mask)
    assert isinstance(state, EncoderState) and state.position_bias is None
    assert state.x.shape == (49, 2, model.embed_dim)
    hidden = [state.x.transpose(0, 1)]
    for i in range(model.num_layers):
        state = model.block(i, state)
        heads = model.cfg.encoder_attention_heads
        assert state.position_bias.shape == (2 * heads, 49, 49)
        hidden.append(state.x.transpose(0, 1))
    hidden[-1] = model.finalize(state)
    assert torch.equal(hidden[-1], features)
    assert torch.equal(state.padding_mask, frame_mask)
    # each step of the block-by-block run is torchaudio's state there, utterance by utterance
    reference = build_torchaudio(model.cfg, checkpoint["model"])
    for row, length in enumerate(AGREEING_LENGTHS):
        alone = waves[row : row + 1, :length]
        ref_input = F.layer_norm(alone, (length,)) if model.cfg.normalize else alone
        expected, _ = torchaudio_hidden_states(reference, ref_input)
        frames = expected[0].shape[1]
        assert int((~frame_mask[row]).sum()) == frames
        max_valid_diff([h[row : row + 1, :frames] for h in hidden], expected, None)
    for a, b in zip(model.hidden_states(waves, mask), hidden):
        assert torch.equal(a, b)
    assert model(waves)[1] is None
    assert model.layers is model.encoder.layers and len(model.layers) == model.num_layers


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_frozen_prefix_run_matches_full_run(name):
    checkpoint = tiny_checkpoint(name)
    model = WavLMEncoder.from_unilm(checkpoint["cfg"], checkpoint["model"]).eval()
    waves, mask, _ = make_batch(AGREEING_LENGTHS)
    with torch.no_grad():
        full, _ = model(waves, mask)

    top = model.num_layers - 2
    with torch.no_grad():
        state = model.embed(waves, mask)
        for i in range(top):
            state = model.block(i, state)
    state = state.detached()
    for i in range(top, model.num_layers):
        state = model.block(i, state)
    out = model.finalize(state)
    # with autograd on, scaled_dot_product_attention may pick another CPU kernel: rounding-level differences
    torch.testing.assert_close(out, full, rtol=0, atol=1e-5 * max(1.0, full.abs().max().item()))

    out[~state.padding_mask].pow(2).mean().backward()
    for i, layer in enumerate(model.layers):
        grads = [p.grad for p in layer.parameters()]
        if i < top:
            assert all(g is None for g in grads), f"frozen block {i} received gradients"
        else:
            assert all(g is not None and torch.isfinite(g).all() for g in grads), f"block {i}"
    assert model.post_extract_proj.weight.grad is None


def test_dropout_only_in_training_mode_and_feature_grad_mult_zero_stops_cnn_grads():
    checkpoint = make_tiny_unilm_checkpoint(layers=2, feature_grad_mult=0.0)
    model = WavLMEncoder.from_unilm(checkpoint["cfg"], checkpoint["model"])
    waves, mask, _ = make_batch(AGREEING_LENGTHS)
    torch.manual_seed(0)
    model.train()
    first, second = model(waves, mask)[0], model(waves, mask)[0]
    assert not torch.equal(first, second)
    first.sum().backward()
    assert all(p.grad is None for p in model.feature_extractor.parameters())
    assert model.post_extract_proj.weight.grad is not None
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(waves, mask)[0], model(waves, mask)[0])
