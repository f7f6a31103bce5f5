"""Recognise and load an original upstream checkpoint, in any of the shapes a user may hold.

Accepted (``kind`` / ``fmt``):

- ``hubert`` / ``fairseq``: a fairseq HuBERT checkpoint (hubert_base_ls960.pt, ...), with a ``cfg`` or a legacy
  ``args`` Namespace, with or without label dictionaries in ``task_state`` (see :mod:`.hubert_checkpoint`);
- ``hubert`` / ``s3prl``: s3prl's converted HuBERT format (``model_cfg``, ``model_weight``, ...);
- ``wavlm`` / ``unilm``: a Microsoft unilm WavLM file (WavLM-Base.pt, Base+, Large);
- ``hubert`` or ``wavlm`` / ``hf``: a Hugging Face transformers directory (``HubertModel`` / ``WavLMModel``).

Refused with a message that says what the file is and what to pass instead: fine-tuned checkpoints (fairseq
``hubert_ctc``, HF ``*ForCTC``), wav2vec 2.0, LASER training checkpoints, files that are not checkpoints.
"""

import logging
import os
from dataclasses import dataclass
from typing import Iterable, Optional

from ..checkpoint_io import EXPECTED_UPSTREAMS, CheckpointError, load_checkpoint
from . import hubert_checkpoint
from .blockwise import BlockwiseUpstream

logger = logging.getLogger(__name__)

HUBERT = "hubert"
WAVLM = "wavlm"

FAIRSEQ = "fairseq"
S3PRL = "s3prl"
UNILM = "unilm"
HF = "hf"

S3PRL_KEYS = ("task_cfg", "model_cfg", "model_weight", "dictionaries_symbols")


@dataclass
class UpstreamSource:
    """An upstream checkpoint as read.

    state: the checkpoint dict; for a Hugging Face directory, the equivalent original-format dict (fairseq
        ``cfg`` sections for HuBERT, a unilm ``cfg`` for WavLM) with the weights under their original names.
    hf_config: the config.json of a Hugging Face directory (None otherwise).
    """

    path: str
    kind: str  # HUBERT / WAVLM
    fmt: str  # FAIRSEQ / S3PRL / UNILM / HF: the file's format, also the default export format
    state: dict
    hf_config: Optional[dict] = None

    @property
    def weights(self) -> dict:
        """The model state dict under the original key names (fairseq's / unilm's)."""
        return self.state["model_weight" if self.fmt == S3PRL else "model"]


def _model_cfg(state: dict):
    """The ``cfg.model`` section of a fairseq checkpoint, or None."""
    cfg = state.get("cfg")
    if cfg is None or not hasattr(cfg, "get") or cfg.get("model") is None:
        return None
    return cfg["model"]


def _cfg_get(section, key, default=None):
    getter = getattr(section, "get", None)
    return getter(key, default) if getter is not None else getattr(section, key, default)


def detect_format(state: dict, path: str):
    """(kind, fmt) of a checkpoint dict read from a file; a CheckpointError naming what it is otherwise."""
    if "model_weight" in state and "model_cfg" in state:
        return _s3prl_kind(state, path), S3PRL
    model_state = state.get("model")
    if not isinstance(model_state, dict):
        raise CheckpointError(f"{path}: no 'model' state dict: not a fairseq or unilm checkpoint; {EXPECTED_UPSTREAMS}")
    model_cfg = _model_cfg(state)
    if model_cfg is not None:
        return _kind_from_fairseq_name(_cfg_get(model_cfg, "_name"), model_cfg, path), FAIRSEQ
    args = state.get("args")
    if args is not None:
        return _kind_from_fairseq_name(getattr(args, "arch", None), args, path), FAIRSEQ
    cfg = state.get("cfg")
    if isinstance(cfg, dict) and "encoder.layers.0.self_attn.grep_a" in model_state:
        return WAVLM, UNILM
    raise CheckpointError(
        f"{path}: cannot tell the upstream kind (no fairseq cfg/args and no WavLM weights); {EXPECTED_UPSTREAMS}"
    )


def _s3prl_kind(state: dict, path: str) -> str:
    name = _cfg_get(state["model_cfg"], "_name", "hubert")
    missing = [key for key in S3PRL_KEYS if key not in state]
    if name != "hubert" or missing:
        raise CheckpointError(
            f"{path}: an s3prl-converted checkpoint of a '{name}' model (missing {missing}), not of HuBERT; "
            f"{EXPECTED_UPSTREAMS}"
        )
    return HUBERT


def _kind_from_fairseq_name(name, model_cfg, path: str) -> str:
    if name in ("hubert", "hubert_base", "hubert_large", "hubert_xlarge"):
        return HUBERT
    fine_tuned_from = _cfg_get(model_cfg, "w2v_path")
    hints = {
        "wav2vec2": "a wav2vec 2.0 checkpoint",
        "hubert_ctc": _fine_tuned("HuBERT CTC", fine_tuned_from),
        "hubert_ctc_fixed": _fine_tuned("HuBERT CTC", fine_tuned_from),
        "hubert_seq2seq": _fine_tuned("HuBERT seq2seq", fine_tuned_from),
        "wav2vec_ctc": "a fine-tuned wav2vec 2.0 CTC checkpoint",
        "laser": "a LASER training checkpoint (export it first with scripts/export_checkpoint.py, or "
                 "resume training from it with checkpoint.restore_file)",
    }
    what = hints.get(name, f"a fairseq '{name}' checkpoint")
    raise CheckpointError(
        f"{path}: this is {what}; LASER fine-tunes original HuBERT (model _name 'hubert') or unilm WavLM "
        f"checkpoints"
    )


def _fine_tuned(what: str, w2v_path) -> str:
    return (
        f"a fine-tuned {what} checkpoint: its encoder was trained for transcription and has lost the pretraining "
        f"head, so LASER would have no faithful upstream checkpoint to export into; pass the pretrained upstream "
        f"it was fine-tuned from (its w2v_path: {w2v_path})"
    )


def read_upstream_source(path: str, extra_safe_globals: Iterable[str] = ()) -> UpstreamSource:
    """Read a checkpoint file or a Hugging Face directory (weights-only safety) and say what it is."""
    if os.path.isdir(path):
        from .hf_checkpoint import read_hf_directory  # transformers is imported only for HF directories

        kind, state, hf_config = read_hf_directory(path)
        return UpstreamSource(path, kind, HF, state, hf_config)
    state = load_checkpoint(path, extra_safe_globals)
    kind, fmt = detect_format(state, path)
    return UpstreamSource(path, kind, fmt, state)


def build_upstream(path: str, extra_safe_globals: Iterable[str] = ()) -> BlockwiseUpstream:
    """The upstream of an original checkpoint behind the block interface (``embed``/``block``/``finalize``)."""
    return upstream_from_source(read_upstream_source(path, extra_safe_globals), extra_safe_globals)


def upstream_from_source(source: UpstreamSource, extra_safe_globals: Iterable[str] = ()) -> BlockwiseUpstream:
    """Build the upstream and load the source's weights strictly."""
    if source.kind == HUBERT and source.fmt == FAIRSEQ:
        return hubert_checkpoint.fairseq_hubert_upstream(source.path, extra_safe_globals)
    if source.kind == HUBERT and source.fmt == S3PRL:
        return hubert_checkpoint.s3prl_hubert_upstream(source.state, source.path)
    if source.kind == HUBERT:
        cfg = hubert_checkpoint.hubert_cfg(source.state["cfg"]["model"], source.state["cfg"]["task"])
        return hubert_checkpoint.build_hubert_upstream(cfg, source.weights, [None], source.path)
    from .wavlm import WavLMEncoder

    try:
        return WavLMEncoder.from_unilm(source.state["cfg"], source.weights)
    except (ValueError, RuntimeError, KeyError) as error:
        raise CheckpointError(f"{source.path}: cannot load as WavLM: {error}") from None


def load_weights(upstream: BlockwiseUpstream, weights: dict, path: str) -> BlockwiseUpstream:
    """Put ``weights`` (original key names) into ``upstream``, strictly."""
    prefixed = {upstream.original_prefix + key: value for key, value in weights.items()}
    missing, unexpected = upstream.load_state_dict(prefixed, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit the upstream (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return upstream

