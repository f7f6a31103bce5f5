"""Export to a Hugging Face transformers directory (``--format hf``), verified with transformers itself.

The merged weights, renamed to transformers' names, are loaded strictly into a ``HubertModel`` /
``WavLMModel`` (config: the HF source's own config.json, or mapped from the fairseq / unilm cfg) and written
with ``save_pretrained`` beside a ``preprocessor_config.json``; the directory is read back by transformers
and its keys, tensors and hidden states of every layer (within ``ATOL``, relative above unit magnitude)
checked before it is moved into place. What is written, the tolerance and why Base models' padded rows are
compared one utterance at a time: docs/huggingface.md, "What is written and how it is checked".
"""

import json
import os
import shutil
from typing import Iterable, List

import torch
import torch.nn.functional as F
from torch import Tensor

from ..checkpoint_io import CheckpointError
from ..data.audio import SAMPLE_RATE
from ..files import atomic_directory
from ..models.blockwise import BlockwiseUpstream
from ..models.hf_checkpoint import (
    HF_MODEL_CLASSES,
    PREPROCESSOR_CONFIG,
    PRETRAINING_HEAD,
    from_hf_names,
    hf_config_from_original,
    load_hf_model,
    to_hf_names,
)
from ..models.upstream import FAIRSEQ, HF, HUBERT, S3PRL, load_weights, upstream_from_source
from ..models.wavlm import WavLMConfig
from .errors import ExportError, ExportVerificationError
from .formats import genuine_hubert_cfg
from .plan import ExportPlan
from .verify import check_written_weights

ATOL = 1e-5
VERIFICATION_LENGTHS = (16000, 11200, 7040)  # samples of the padded verification batch


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ExportError("--format hf needs transformers: pip install -e '.[hf]'") from None
    return transformers


def hf_config(plan: ExportPlan):
    """The transformers config of the export: the HF source's own, or mapped from the original cfg."""
    transformers = _transformers()
    kind = plan.source.kind
    config_class = getattr(transformers, f"{HF_MODEL_CLASSES[kind][:-len('Model')]}Config")
    if plan.source.hf_config is not None:
        return config_class.from_dict(plan.source.hf_config)
    try:
        return config_class(**hf_config_from_original(kind, original_model_cfg(plan)))
    except CheckpointError as error:
        raise ExportError(f"{plan.source.path}: {error}; export in its own format instead") from None


def original_model_cfg(plan: ExportPlan) -> dict:
    """The source's fairseq HubertConfig / unilm WavLM cfg as a plain dict with every field present."""
    source = plan.source
    if source.kind != HUBERT:
        return WavLMConfig.from_dict(source.state["cfg"]).to_dict()
    from fairseq.models.hubert import HubertConfig

    cfg = genuine_hubert_cfg(source.state)["model"] if source.fmt == FAIRSEQ else dict(source.state["model_cfg"])
    defaults = {
        name: spec.default
        for name, spec in HubertConfig.__dataclass_fields__.items()
        if isinstance(spec.default, (bool, int, float, str))
    }
    assert source.fmt in (FAIRSEQ, S3PRL), source.fmt  # an HF source has its own config
    return dict(defaults, **cfg)


def our_upstream(plan: ExportPlan, extra_safe_globals: Iterable[str] = ()) -> BlockwiseUpstream:
    """The source upstream with the merged weights, as LASER computes it (eval mode)."""
    upstream = upstream_from_source(plan.source, extra_safe_globals)
    return load_weights(upstream, plan.merged, plan.run.path).eval()


def write_hf_export(plan: ExportPlan, output: str, extra_safe_globals: Iterable[str] = ()) -> float:
    """save_pretrained into a temporary directory beside ``output``, verify it, then move it into place
    (files.atomic_directory). Returns the largest hidden-state difference found by the verification."""
    transformers = _transformers()
    config = hf_config(plan)
    model = getattr(transformers, HF_MODEL_CLASSES[plan.source.kind])(config)
    weights = to_hf_names(plan.merged, cnn_layer_norm=config.feat_extract_norm == "layer")
    if "masked_spec_embed" not in model.state_dict():  # transformers keeps it only when mask_time_prob > 0
        weights.pop("masked_spec_embed", None)
    dtype = next(iter(plan.merged.values())).dtype
    try:
        model.to(dtype).load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise ExportError(f"{plan.source.path}: the weights do not fit transformers' model: {error}") from None
    ours = our_upstream(plan, extra_safe_globals)
    with atomic_directory(output) as temporary:
        model.save_pretrained(temporary)
        write_preprocessor_config(plan, temporary, ours.normalize, config.feat_extract_norm == "layer")
        difference = check_directory(temporary, plan, ours)
    return difference


def verify_hf_export(output: str, plan: ExportPlan, extra_safe_globals: Iterable[str] = ()) -> float:
    """Check an already written HF directory against the two export inputs."""
    return check_directory(output, plan, our_upstream(plan, extra_safe_globals))


def write_preprocessor_config(plan: ExportPlan, directory: str, normalize: bool, cnn_layer_norm: bool):
    """The HF source's preprocessor_config.json, or a Wav2Vec2FeatureExtractor matching the upstream."""
    own = os.path.join(plan.source.path, PREPROCESSOR_CONFIG)
    if plan.source.fmt == HF and os.path.isfile(own):
        shutil.copyfile(own, os.path.join(directory, PREPROCESSOR_CONFIG))
        return
    extractor = _transformers().Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=normalize,
        return_attention_mask=cnn_layer_norm,
    )
    extractor.save_pretrained(directory)


def check_directory(path: str, plan: ExportPlan, ours: BlockwiseUpstream) -> float:
    """Load ``path`` with transformers and check keys, tensors and hidden states (ExportVerificationError);
    the hidden states are computed from waveforms normalised as the directory's preprocessor_config.json
    says. Returns the largest hidden-state difference."""
    try:
        model = load_hf_model(plan.source.kind, path)
    except CheckpointError as error:
        raise ExportVerificationError(str(error)) from None
    cnn_layer_norm = model.config.feat_extract_norm == "layer"
    written = from_hf_names(model.state_dict(), cnn_layer_norm, path)
    keys = [key for key in plan.source.weights if _has_hf_counterpart(key, model)]
    ordered = {key: written[key] for key in keys if key in written}
    ordered.update({key: value for key, value in written.items() if key not in ordered})
    check_written_weights(ordered, keys, plan, path)
    normalize = read_do_normalize(path)
    difference = max_hidden_state_difference(model.eval(), ours, not cnn_layer_norm, normalize)
    if difference > ATOL:
        raise ExportVerificationError(
            f"{path}: transformers' hidden states differ from LASER's upstream by up to {difference:.3g} (> {ATOL}, "
            f"relative to the activations' scale where above 1)"
        )
    return difference


def read_do_normalize(directory: str) -> bool:
    preprocessor = os.path.join(directory, PREPROCESSOR_CONFIG)
    try:
        with open(preprocessor) as handle:
            return bool(json.load(handle)["do_normalize"])
    except (OSError, ValueError, KeyError) as error:
        raise ExportVerificationError(f"{preprocessor}: no readable do_normalize ({error})") from None


def _has_hf_counterpart(key: str, model) -> bool:
    """Not HuBERT's pretraining head; mask_emb only where transformers keeps it (mask_time_prob > 0)."""
    if key.startswith(PRETRAINING_HEAD):
        return False
    return key != "mask_emb" or hasattr(model, "masked_spec_embed")


# --------------------------------------------------------------------------------------------------
# hidden states
# --------------------------------------------------------------------------------------------------


def verification_batch(seed: int = 0):
    """(B, S) zero-padded random waveforms of VERIFICATION_LENGTHS and their (B, S) padding mask."""
    generator = torch.Generator().manual_seed(seed)
    longest = max(VERIFICATION_LENGTHS)
    source = torch.zeros(len(VERIFICATION_LENGTHS), longest)
    for row, length in enumerate(VERIFICATION_LENGTHS):
        source[row, :length] = 0.1 * torch.randn(length, generator=generator)
    padding_mask = torch.arange(longest)[None, :] >= torch.tensor(VERIFICATION_LENGTHS)[:, None]
    return source, padding_mask


def hf_hidden_states(model, source: Tensor, attention_mask=None) -> List[Tensor]:
    """transformers' hidden states in our convention: input of block 0, output of every block, the last
    one through the final layer norm (``last_hidden_state``)."""
    output = model(source, attention_mask=attention_mask, output_hidden_states=True)
    return list(output.hidden_states[:-1]) + [output.last_hidden_state]


def max_hidden_state_difference(model, ours: BlockwiseUpstream, per_utterance: bool, hf_normalize: bool) -> float:
    """Largest ``scaled_difference`` over every layer and utterance of the verification batch (valid frames
    only; with ``per_utterance`` each row alone, as group-norm CNNs need); transformers' input is normalised
    per utterance if ``hf_normalize``, as its feature extractor would."""
    source, padding_mask = verification_batch()
    lengths = (~padding_mask).sum(dim=1).tolist()
    normalized = torch.zeros_like(source)
    for row, length in enumerate(lengths):  # what HF's feature extractor does before the model
        utterance = source[row, :length]
        normalized[row, :length] = F.layer_norm(utterance, utterance.shape) if hf_normalize else utterance
    frames = model._get_feat_extract_output_lengths(torch.tensor(lengths)).tolist()
    with torch.no_grad():
        states = ours.hidden_states(source, padding_mask)
        if per_utterance:
            theirs = [hf_hidden_states(model, normalized[row : row + 1, :length]) for row, length in enumerate(lengths)]
        else:
            batch = hf_hidden_states(model, normalized, attention_mask=(~padding_mask).long())
            theirs = [[layer[row : row + 1] for layer in batch] for row in range(len(lengths))]
    if len(theirs[0]) != len(states) or states[0].shape[1] != max(frames):
        raise ExportVerificationError(
            f"transformers gives {len(theirs[0])} hidden states of up to {max(frames)} frames, LASER "
            f"{len(states)} of {states[0].shape[1]} frames"
        )
    return max(
        scaled_difference(mine[row, : frames[row]], their[0, : frames[row]])
        for row, their_layers in enumerate(theirs)
        for mine, their in zip(states, their_layers)
    )


def scaled_difference(mine: Tensor, theirs: Tensor) -> float:
    """max |mine - theirs| / max(1, max |mine|): the absolute difference for activations of unit scale,
    relative for larger ones (pre-LN residual streams of 24-layer models reach tens); inf if either holds a
    NaN or an infinity."""
    if not (torch.isfinite(mine).all() and torch.isfinite(theirs).all()):
        return float("inf")
    return (mine - theirs).abs().max().item() / max(1.0, mine.abs().max().item())
