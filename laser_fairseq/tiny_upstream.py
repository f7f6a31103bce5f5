"""Small randomly initialised upstream checkpoints in the real original formats.

HuBERT is built with fairseq's own ``hubert`` model and ``hubert_pretraining`` task and saved with the keys
fairseq's trainer writes (args=None, cfg, model, criterion, optimizer_history, task_state with the label
dictionaries, extra_state, last_optimizer_state), so loading it takes the same path as
``hubert_base_ls960.pt``. WavLM is written in Microsoft's unilm format (``{"cfg": ..., "model": ...}``).
Hugging Face directories are built and written by transformers itself (``HubertModel`` / ``WavLMModel``
``save_pretrained`` plus a ``Wav2Vec2FeatureExtractor``), as a checkpoint downloaded from the Hub would be.
Used by the demo and the tests; nothing here is a "test mode" of the loading code.
"""

import os
from typing import Any, Optional

import torch
from torch import nn

from . import quiet_fairseq  # noqa: F401  (before any fairseq import: keeps the caller's logging setup)
from fairseq.data.dictionary import Dictionary
from fairseq.dataclass.configs import FairseqConfig
from fairseq.models.hubert import HubertConfig
from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig, HubertPretrainingTask
from omegaconf import OmegaConf

from .checkpoint_io import write_checkpoint
from .files import atomic_directory
from .models.wavlm import WavLMConfig, WavLMEncoder


def conv_spec(channels: int) -> str:
    """fairseq's CNN spec with the real kernels/strides (20 ms frames at 16 kHz) and fewer channels."""
    return f"[({channels},10,5)] + [({channels},3,2)] * 4 + [({channels},2,2)] * 2"


def make_tiny_hubert(
    layers: int = 4,
    dim: int = 64,
    ffn: Optional[int] = None,
    heads: int = 4,
    conv_channels: int = 32,
    num_labels: int = 50,
    layer_norm_first: bool = False,
    conv_pos: int = 16,
    conv_pos_groups: int = 4,
    seed: int = 0,
) -> dict:
    """A fairseq HuBERT checkpoint dict (as fairseq's trainer writes it) for a small random model.

    HuBERT Base geometry: layers=12, dim=768, ffn=3072, heads=12, conv_channels=512, conv_pos=128,
    conv_pos_groups=16.
    """
    torch.manual_seed(seed)
    cfg = OmegaConf.structured(FairseqConfig())
    cfg.task = OmegaConf.structured(
        HubertPretrainingConfig(data="/nonexistent/hubert_data", labels=["km"], label_rate=50.0)
    )
    cfg.model = OmegaConf.structured(
        HubertConfig(
            label_rate=50.0,
            extractor_mode="layer_norm" if layer_norm_first else "default",
            encoder_layers=layers,
            encoder_embed_dim=dim,
            encoder_ffn_embed_dim=ffn or 2 * dim,
            encoder_attention_heads=heads,
            layer_norm_first=layer_norm_first,
            conv_feature_layers=conv_spec(conv_channels),
            conv_pos=conv_pos,
            conv_pos_groups=conv_pos_groups,
            final_dim=max(dim // 2, 8),
            # dropout values of fairseq's HuBERT Base pretraining config, as released checkpoints carry them
            dropout=0.1,
            attention_dropout=0.1,
            dropout_input=0.1,
            dropout_features=0.1,
            encoder_layerdrop=0.05,
        )
    )
    cfg.model._name = "hubert"
    cfg.task._name = "hubert_pretraining"
    cfg.task.normalize = layer_norm_first  # HuBERT Large-style checkpoints normalise waveforms
    dictionary = Dictionary()
    for label in range(num_labels):
        dictionary.add_symbol(str(label))
    task = HubertPretrainingTask(cfg.task)
    task.load_state_dict({"dictionaries": [dictionary]})
    model = task.build_model(cfg.model)
    _randomise_norms(model)
    return {
        "args": None,
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "model": model.state_dict(),
        "criterion": None,
        "optimizer_history": [
            {
                "criterion_name": "HubertCriterion",
                "optimizer_name": "FairseqAdam",
                "lr_scheduler_state": {"best": None},
                "num_updates": 0,
            }
        ],
        "task_state": task.state_dict(),
        "extra_state": {"metrics": {}, "previous_training_time": 0.0},
        "last_optimizer_state": None,
    }


def _randomise_norms(model: torch.nn.Module):
    """Give layer/group norms non-trivial affine weights so tests notice a norm applied in the wrong place."""
    generator = torch.Generator().manual_seed(1234)
    for module in model.modules():
        if isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm)) and module.weight is not None:
            with torch.no_grad():
                module.weight.copy_(1.0 + 0.2 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))


def make_tiny_wavlm(layers: int = 4, dim: int = 64, layer_norm_first: bool = False, seed: int = 0) -> dict:
    """A unilm-format WavLM checkpoint dict for a small random model (Large-like with ``layer_norm_first``)."""
    return make_tiny_unilm_checkpoint(
        layers=layers,
        dim=dim,
        ffn=2 * dim,
        heads=4,
        layer_norm_first=layer_norm_first,
        extractor_mode="layer_norm" if layer_norm_first else "default",
        seed=seed,
    )


_WAVLM_BASE_CFG = dict(  # WavLM-Base values, except sizes which make_tiny_unilm_checkpoint sets
    extractor_mode="default", activation_fn="gelu", layer_norm_first=False, conv_bias=False,
    feature_grad_mult=0.1, normalize=False, dropout=0.1, attention_dropout=0.1, activation_dropout=0.0,
    encoder_layerdrop=0.05, dropout_input=0.1, dropout_features=0.1, mask_length=10, mask_prob=0.8,
    mask_selection="static", mask_other=0.0, no_mask_overlap=False, mask_min_space=1, mask_channel_length=10,
    mask_channel_prob=0.0, mask_channel_selection="static", mask_channel_other=0.0,
    no_mask_channel_overlap=False, mask_channel_min_space=1, relative_position_embedding=True,
    gru_rel_pos=True,
)


def _randomise_wavlm(model: WavLMEncoder) -> None:
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
        _WAVLM_BASE_CFG, extractor_mode=extractor_mode, layer_norm_first=layer_norm_first, encoder_layers=layers,
        encoder_embed_dim=dim, encoder_ffn_embed_dim=ffn, encoder_attention_heads=heads,
        conv_feature_layers=conv_spec(32), conv_bias=large_like,
        normalize=large_like, conv_pos=16, conv_pos_groups=4, num_buckets=32, max_distance=64,
    )
    cfg.update(cfg_overrides)
    config = WavLMConfig.from_dict(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WavLMEncoder(config)
        with torch.no_grad():
            _randomise_wavlm(model)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {"cfg": config.to_dict(), "model": state}


def save_checkpoint(state: dict, path: str, force: bool = False):
    """Write a checkpoint atomically; refuse to replace an existing file unless ``force``."""
    if os.path.exists(path) and not force:
        raise FileExistsError(f"{path} exists; pass --force to replace it")
    write_checkpoint(state, path)


def save_tiny_hf_directory(
    path: str, kind: str, layers: int = 4, dim: int = 64, layer_norm_first: bool = False, seed: int = 0,
    force: bool = False,
):
    """Write a small random transformers ``HubertModel`` / ``WavLMModel`` directory (config.json,
    model.safetensors, preprocessor_config.json). Base-like: post-LN blocks, group-norm CNN without bias, no
    waveform normalisation; ``layer_norm_first``: Large-like (pre-LN, layer-norm CNN with bias, normalised)."""
    import transformers

    if os.path.exists(path) and not force:
        raise FileExistsError(f"{path} exists; pass --force to replace it")
    fields = dict(
        architectures=[f"{'Hubert' if kind == 'hubert' else 'WavLM'}Model"], hidden_size=dim,
        num_hidden_layers=layers, num_attention_heads=4, intermediate_size=2 * dim, conv_dim=[32] * 7,
        conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2], conv_bias=layer_norm_first,
        feat_extract_norm="layer" if layer_norm_first else "group", do_stable_layer_norm=layer_norm_first,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    )
    if kind == "hubert":
        model = transformers.HubertModel(transformers.HubertConfig(**fields))
    else:
        model = transformers.WavLMModel(transformers.WavLMConfig(num_buckets=32, max_bucket_distance=64, **fields))
    _randomise_hf(model, seed)
    extractor = transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=layer_norm_first,
        return_attention_mask=layer_norm_first,
    )
    with atomic_directory(path) as temporary:  # an existing directory is replaced only by a complete one
        model.save_pretrained(temporary)
        extractor.save_pretrained(temporary)


def _randomise_hf(model: torch.nn.Module, seed: int):
    """Random weights of unit scale, norms and biases away from 1 / 0 (misplaced norms then show)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if "norm" in name and name.endswith("weight"):
                parameter.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias"):
                parameter.copy_(0.1 * noise)
            elif parameter.dim() >= 2:
                parameter.copy_(noise / parameter[0].numel() ** 0.5)
            else:
                parameter.copy_(noise)
