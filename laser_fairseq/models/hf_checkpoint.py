"""Hugging Face transformers checkpoints (``HubertModel`` / ``WavLMModel`` directories) in original terms.

transformers re-implements fairseq's HuBERT and unilm's WavLM with other parameter names and a flat config.
This module maps both ways between the two namings and configs, and reads an HF directory into the
original-format checkpoint dict the rest of the project loads (a fairseq-style ``cfg`` with ``model`` and
``task`` sections for HuBERT, a unilm ``cfg`` for WavLM, and the weights under the original names).

What has no counterpart: HF's ``HubertModel`` has no pretraining head (``final_proj``, ``label_embs_concat``),
so those are dropped towards HF and absent when reading HF; the HF config has no ``label_rate``,
``final_dim``, ``feature_grad_mult`` or pretraining masking settings, which only matter for pretraining.
Waveform normalisation lives in HF's feature extractor (``preprocessor_config.json``, ``do_normalize``);
without that file it follows the rule of every released HuBERT/WavLM: normalised iff the CNN uses layer norm.
"""

import json
import logging
import os
import re
from typing import Dict, List, Tuple

import torch

from ..checkpoint_io import EXPECTED_UPSTREAMS, CheckpointError
from .hubert_checkpoint import PRETRAINING_HEAD
from .wavlm_config import WavLMConfig, parse_conv_feature_layers

logger = logging.getLogger(__name__)

HF_MODEL_CLASSES = {"hubert": "HubertModel", "wavlm": "WavLMModel"}
PREPROCESSOR_CONFIG = "preprocessor_config.json"
SUPPORTED_ACTIVATIONS = ("gelu", "relu")  # the same function under both names in fairseq/unilm and transformers

# (original key prefix, HF key prefix); "{i}" is a block or conv layer index. The first match wins.
_BLOCK_RENAMES = [
    ("encoder.layers.{i}.self_attn.grep_linear.", "encoder.layers.{i}.attention.gru_rel_pos_linear."),
    ("encoder.layers.{i}.self_attn.grep_a", "encoder.layers.{i}.attention.gru_rel_pos_const"),
    ("encoder.layers.{i}.self_attn.relative_attention_bias.", "encoder.layers.{i}.attention.rel_attn_embed."),
    ("encoder.layers.{i}.self_attn.", "encoder.layers.{i}.attention."),
    ("encoder.layers.{i}.self_attn_layer_norm.", "encoder.layers.{i}.layer_norm."),
    ("encoder.layers.{i}.fc1.", "encoder.layers.{i}.feed_forward.intermediate_dense."),
    ("encoder.layers.{i}.fc2.", "encoder.layers.{i}.feed_forward.output_dense."),
    ("encoder.layers.{i}.final_layer_norm.", "encoder.layers.{i}.final_layer_norm."),
]
_OTHER_RENAMES = [
    ("feature_extractor.conv_layers.{i}.0.", "feature_extractor.conv_layers.{i}.conv."),
    ("layer_norm.", "feature_projection.layer_norm."),
    ("post_extract_proj.", "feature_projection.projection."),
    ("mask_emb", "masked_spec_embed"),
    ("encoder.pos_conv.0.bias", "encoder.pos_conv_embed.conv.bias"),
    ("encoder.pos_conv.0.weight_g", "encoder.pos_conv_embed.conv.parametrizations.weight.original0"),
    ("encoder.pos_conv.0.weight_v", "encoder.pos_conv_embed.conv.parametrizations.weight.original1"),
    ("encoder.layer_norm.", "encoder.layer_norm."),
]


def renames(cnn_layer_norm: bool) -> List[Tuple[str, str]]:
    """The prefix table for a CNN with layer norm in every layer (True) or group norm in layer 0 (False)."""
    cnn_norm = "feature_extractor.conv_layers.{i}.2.1." if cnn_layer_norm else "feature_extractor.conv_layers.{i}.2."
    return _BLOCK_RENAMES + [(cnn_norm, "feature_extractor.conv_layers.{i}.layer_norm.")] + _OTHER_RENAMES


def _rename(key: str, table: List[Tuple[str, str]]):
    for source, target in table:
        pattern = "^" + re.escape(source).replace(re.escape("{i}"), r"(\d+)")
        match = re.match(pattern, key)
        if match:
            prefix = target.replace("{i}", match.group(1)) if match.groups() else target
            return prefix + key[match.end():]
    return None


def to_hf_names(weights: Dict[str, torch.Tensor], cnn_layer_norm: bool) -> Dict[str, torch.Tensor]:
    """Original (fairseq / unilm) names -> HF names; the pretraining head is left out."""
    table = renames(cnn_layer_norm)
    renamed = {key: _rename(key, table) for key in weights if not key.startswith(PRETRAINING_HEAD)}
    unknown = [key for key, name in renamed.items() if name is None]
    if unknown:
        raise CheckpointError(f"no Hugging Face counterpart for the weights {unknown[:5]}")
    return {name: weights[key] for key, name in renamed.items()}


def from_hf_names(weights: Dict[str, torch.Tensor], cnn_layer_norm: bool, path: str) -> Dict[str, torch.Tensor]:
    """HF names -> original (fairseq / unilm) names."""
    table = [(hf, original) for original, hf in renames(cnn_layer_norm)]
    renamed = {key: _rename(key, table) for key in weights}
    unknown = [key for key, name in renamed.items() if name is None]
    if unknown:
        raise CheckpointError(f"{path}: weights without a fairseq/unilm counterpart: {unknown[:5]}")
    return {name: weights[key] for key, name in renamed.items()}


# --------------------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------------------


def conv_spec_string(dims, kernels, strides) -> str:
    """fairseq's ``conv_feature_layers`` spelling of a CNN: "[(512, 10, 5), (512, 3, 2), ...]"."""
    return "[" + ", ".join(f"({d}, {k}, {s})" for d, k, s in zip(dims, kernels, strides)) + "]"


# fairseq HubertConfig / unilm WavLM cfg field -> the transformers config field holding the same value
SAME_VALUE_FIELDS = {
    "encoder_layers": "num_hidden_layers",
    "encoder_embed_dim": "hidden_size",
    "encoder_ffn_embed_dim": "intermediate_size",
    "encoder_attention_heads": "num_attention_heads",
    "activation_fn": "hidden_act",
    "layer_norm_first": "do_stable_layer_norm",
    "conv_bias": "conv_bias",
    "conv_pos": "num_conv_pos_embeddings",
    "conv_pos_groups": "num_conv_pos_embedding_groups",
    "dropout": "hidden_dropout",
    "attention_dropout": "attention_dropout",
    "activation_dropout": "activation_dropout",
    "dropout_input": "feat_proj_dropout",
    "encoder_layerdrop": "layerdrop",
}
WAVLM_SAME_VALUE_FIELDS = {"num_buckets": "num_buckets", "max_distance": "max_bucket_distance"}
EXTRACTOR_MODES = {"default": "group", "layer_norm": "layer"}  # extractor_mode -> feat_extract_norm


def original_cfg_from_hf(config) -> dict:
    """The fairseq HubertConfig / unilm WavLM cfg fields an HF config determines (architecture and dropout)."""
    cfg = {original: getattr(config, hf) for original, hf in SAME_VALUE_FIELDS.items()}
    modes = {norm: mode for mode, norm in EXTRACTOR_MODES.items()}
    cfg.update(
        extractor_mode=modes[config.feat_extract_norm],
        conv_feature_layers=conv_spec_string(config.conv_dim, config.conv_kernel, config.conv_stride),
    )
    if config.model_type == "wavlm":
        cfg.update({original: getattr(config, hf) for original, hf in WAVLM_SAME_VALUE_FIELDS.items()})
    return cfg


def hf_config_from_original(kind: str, cfg: dict) -> dict:
    """HF config fields from a fairseq HubertConfig / unilm WavLM cfg dict (all fields present).

    Raises CheckpointError for architectures transformers' HubertModel / WavLMModel cannot express.
    """
    check_hf_expressible(kind, cfg)
    layers = parse_conv_feature_layers(cfg["conv_feature_layers"])
    fields = {hf: cfg[original] for original, hf in SAME_VALUE_FIELDS.items()}
    fields.update(
        architectures=[HF_MODEL_CLASSES[kind]],
        feat_extract_norm=EXTRACTOR_MODES[cfg["extractor_mode"]],
        feat_extract_activation="gelu",
        conv_dim=[dim for dim, _, _ in layers],
        conv_kernel=[kernel for _, kernel, _ in layers],
        conv_stride=[stride for _, _, stride in layers],
        layer_norm_eps=1e-5,
    )
    if kind == "hubert":
        fields.update(feat_proj_layer_norm=True, conv_pos_batch_norm=False)
    else:
        fields.update({hf: cfg[original] for original, hf in WAVLM_SAME_VALUE_FIELDS.items()})
    return fields


def check_hf_expressible(kind: str, cfg: dict):
    problems = []
    if cfg["extractor_mode"] not in EXTRACTOR_MODES:
        problems.append(f"extractor_mode={cfg['extractor_mode']!r}")
    if cfg["activation_fn"] not in SUPPORTED_ACTIVATIONS:
        problems.append(f"activation_fn={cfg['activation_fn']!r}")
    if parse_conv_feature_layers(cfg["conv_feature_layers"])[-1][0] == cfg["encoder_embed_dim"]:
        problems.append("no post_extract_proj (CNN width equals encoder_embed_dim)")
    if kind == "hubert" and cfg.get("layer_type", "transformer") != "transformer":
        problems.append(f"layer_type={cfg['layer_type']!r}")
    if kind == "hubert" and cfg.get("conv_pos_batch_norm", False):
        problems.append("conv_pos_batch_norm=True")
    if kind == "wavlm" and not (cfg["relative_position_embedding"] and cfg["gru_rel_pos"]):
        problems.append("relative_position_embedding / gru_rel_pos off (transformers' WavLM always has both)")
    if problems:
        raise CheckpointError(
            f"transformers' {HF_MODEL_CLASSES[kind]} cannot express this {kind}: {'; '.join(problems)}"
        )


def check_supported_hf_config(config, path: str):
    """CheckpointError naming every HF option fairseq's HuBERT / unilm's WavLM cannot express."""
    problems = []
    if config.feat_extract_norm not in EXTRACTOR_MODES.values():
        problems.append(f"feat_extract_norm={config.feat_extract_norm!r}")
    if config.feat_extract_activation != "gelu" or config.hidden_act not in SUPPORTED_ACTIVATIONS:
        problems.append(f"feat_extract_activation={config.feat_extract_activation!r}, hidden_act={config.hidden_act!r}")
    if config.layer_norm_eps != 1e-5:
        problems.append(f"layer_norm_eps={config.layer_norm_eps}")
    if config.conv_dim[-1] == config.hidden_size:
        problems.append("conv_dim[-1] equals hidden_size (fairseq and unilm then have no feature projection)")
    if getattr(config, "conv_pos_batch_norm", False):
        problems.append("conv_pos_batch_norm=True")
    if config.model_type == "hubert" and not config.feat_proj_layer_norm:
        problems.append("feat_proj_layer_norm=False (e.g. DistilHuBERT)")
    if getattr(config, "adapter_attn_dim", None) is not None or getattr(config, "add_adapter", False):
        problems.append("adapter layers")
    if problems:
        raise CheckpointError(
            f"{path}: this {config.model_type} configuration has no fairseq/unilm equivalent: {'; '.join(problems)}"
        )


# --------------------------------------------------------------------------------------------------
# reading a directory
# --------------------------------------------------------------------------------------------------


def read_hf_config(path: str) -> dict:
    """config.json of a directory that should be a HubertModel / WavLMModel; CheckpointError otherwise."""
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise CheckpointError(
            f"{path}: a directory without config.json, so not a Hugging Face model directory; {EXPECTED_UPSTREAMS}"
        )
    try:
        with open(config_file) as handle:
            raw = json.load(handle)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{config_file}: not readable JSON ({error})") from None
    model_type = raw.get("model_type")
    if model_type not in HF_MODEL_CLASSES:
        raise CheckpointError(
            f"{path}: a Hugging Face '{model_type}' model; LASER fine-tunes HuBERT or WavLM (model_type 'hubert' "
            f"or 'wavlm')"
        )
    heads = [name for name in raw.get("architectures") or [] if name != HF_MODEL_CLASSES[model_type]]
    if heads:
        raise CheckpointError(
            f"{path}: a Hugging Face {heads[0]} directory, a model fine-tuned for a task; LASER starts from the "
            f"pretrained {HF_MODEL_CLASSES[model_type]} (e.g. facebook/hubert-base-ls960, microsoft/wavlm-base-plus)"
        )
    return raw


def read_hf_directory(path: str):
    """(kind, original-format checkpoint dict, HF config dict) of a HubertModel / WavLMModel directory."""
    raw = read_hf_config(path)
    kind = raw["model_type"]
    model = load_hf_model(kind, path)
    config = model.config
    check_supported_hf_config(config, path)
    cnn_layer_norm = config.feat_extract_norm == "layer"
    weights = from_hf_names(model.state_dict(), cnn_layer_norm, path)
    if "mask_emb" not in weights:
        logger.info(f"{path}: no masked_spec_embed (mask_time_prob 0); mask_emb, unused by LASER, set to zeros")
        weights["mask_emb"] = torch.zeros(config.hidden_size, dtype=next(iter(weights.values())).dtype)
    cfg = original_cfg_from_hf(config)
    normalize = _normalize(path, cnn_layer_norm)
    if kind == "hubert":
        task = {"data": path, "labels": [], "label_rate": 50.0, "sample_rate": 16000, "normalize": normalize}
        state = {"cfg": {"model": dict(cfg, label_rate=50.0), "task": task}, "model": weights}
    else:
        unilm = dict(cfg, normalize=normalize, relative_position_embedding=True, gru_rel_pos=True,
                     mask_prob=config.mask_time_prob, mask_length=config.mask_time_length,
                     mask_channel_prob=config.mask_feature_prob, mask_channel_length=config.mask_feature_length)
        state = {"cfg": WavLMConfig.from_dict(unilm).to_dict(), "model": weights}
    return kind, state, config.to_dict()


def load_hf_model(kind: str, path: str):
    """transformers' HubertModel / WavLMModel from ``path``; CheckpointError unless every weight loads."""
    try:
        import transformers
    except ImportError:
        raise CheckpointError(
            f"{path}: reading a Hugging Face directory needs transformers: pip install -e '.[hf]'"
        ) from None
    model_class = getattr(transformers, HF_MODEL_CLASSES[kind])
    try:
        model, info = model_class.from_pretrained(path, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: transformers could not load it: {error}") from None
    problems = {name: info[name] for name in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(name)}
    if problems:
        raise CheckpointError(
            f"{path}: its weights do not match its config.json ({problems}); the directory is incomplete or "
            f"mixes two models"
        )
    return model


def _normalize(path: str, cnn_layer_norm: bool) -> bool:
    preprocessor = os.path.join(path, PREPROCESSOR_CONFIG)
    if os.path.isfile(preprocessor):
        with open(preprocessor) as handle:
            return bool(json.load(handle).get("do_normalize", False))
    logger.info(
        f"{path}: no {PREPROCESSOR_CONFIG}; waveforms {'are' if cnn_layer_norm else 'are not'} normalised, as "
        f"in every released HuBERT/WavLM with a {'layer' if cnn_layer_norm else 'group'}-norm CNN"
    )
    return cnn_layer_norm
