"""Recognise and load an original upstream checkpoint: fairseq HuBERT or unilm WavLM."""

import contextlib
import logging
from typing import Iterable, Tuple

import torch

from .. import quiet_fairseq  # noqa: F401  (before any fairseq import: keeps the caller's logging setup)
from fairseq import checkpoint_utils

from ..checkpoint_io import SAFE_GLOBALS, CheckpointError, load_checkpoint, resolve_globals
from .hubert_upstream import HubertUpstream

logger = logging.getLogger(__name__)

HUBERT = "hubert"
WAVLM = "wavlm"


def _model_cfg(state: dict):
    """The ``cfg.model`` section of a fairseq checkpoint, or None."""
    cfg = state.get("cfg")
    if cfg is None or not hasattr(cfg, "get") or cfg.get("model") is None:
        return None
    return cfg["model"]


def _cfg_get(section, key, default=None):
    getter = getattr(section, "get", None)
    return getter(key, default) if getter is not None else getattr(section, key, default)


def detect_kind(state: dict, path: str) -> str:
    """"hubert" or "wavlm" for an upstream checkpoint dict; a CheckpointError naming what it is otherwise."""
    model_state = state.get("model")
    if not isinstance(model_state, dict):
        raise CheckpointError(
            f"{path}: no 'model' state dict: not a fairseq or unilm checkpoint; LASER expects an original "
            f"fairseq HuBERT checkpoint (e.g. hubert_base_ls960.pt) or a unilm WavLM checkpoint (e.g. WavLM-Base.pt)"
        )
    model_cfg = _model_cfg(state)
    if model_cfg is not None:
        name = _cfg_get(model_cfg, "_name")
        return _kind_from_fairseq_name(name, path)
    args = state.get("args")
    if args is not None:
        return _kind_from_fairseq_name(getattr(args, "arch", None), path)
    cfg = state.get("cfg")
    if isinstance(cfg, dict) and "encoder.layers.0.self_attn.grep_a" in model_state:
        return WAVLM
    raise CheckpointError(
        f"{path}: cannot tell the upstream kind (no fairseq cfg/args and no WavLM weights); LASER expects "
        f"an original fairseq HuBERT checkpoint (e.g. hubert_base_ls960.pt) or a unilm WavLM checkpoint "
        f"(e.g. WavLM-Base.pt)"
    )


def _kind_from_fairseq_name(name, path: str) -> str:
    if name in ("hubert", "hubert_base", "hubert_large", "hubert_xlarge"):
        return HUBERT
    hints = {
        "wav2vec2": "a wav2vec 2.0 checkpoint",
        "hubert_ctc": "a fine-tuned HuBERT CTC checkpoint (use the pretrained upstream it started from)",
        "hubert_seq2seq": "a fine-tuned HuBERT seq2seq checkpoint (use the pretrained upstream)",
        "wav2vec_ctc": "a fine-tuned wav2vec 2.0 CTC checkpoint",
        "laser": "a LASER training checkpoint (export it first with scripts/export_checkpoint.py, or "
                 "resume training from it with checkpoint.restore_file)",
    }
    what = hints.get(name, f"a fairseq '{name}' checkpoint")
    raise CheckpointError(
        f"{path}: this is {what}; LASER fine-tunes original HuBERT (model _name 'hubert') or unilm WavLM "
        f"checkpoints"
    )


def read_upstream_checkpoint(path: str, extra_safe_globals: Iterable[str] = ()) -> Tuple[str, dict]:
    """(kind, checkpoint dict) read with weights-only safety."""
    state = load_checkpoint(path, extra_safe_globals)
    return detect_kind(state, path), state


def build_upstream(path: str, extra_safe_globals: Iterable[str] = ()) -> torch.nn.Module:
    """The upstream of an original checkpoint behind the block interface (``embed``/``block``/``finalize``)."""
    kind, state = read_upstream_checkpoint(path, extra_safe_globals)
    if kind == HUBERT:
        return _build_hubert(path, extra_safe_globals)
    from .wavlm import WavLMEncoder

    try:
        return WavLMEncoder.from_unilm(state["cfg"], state["model"])
    except (ValueError, RuntimeError, KeyError) as error:
        raise CheckpointError(f"{path}: cannot load as WavLM: {error}") from None


def _build_hubert(path: str, extra_safe_globals: Iterable[str]) -> HubertUpstream:
    """Build and strictly load with fairseq's own checkpoint code, under the weights-only allow-list."""
    allowed = SAFE_GLOBALS + resolve_globals(extra_safe_globals)
    with torch.serialization.safe_globals(allowed), _fairseq_errors(path):
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([path])
    model = models[0]
    normalize = bool(_cfg_get(cfg.task, "normalize", False))
    return HubertUpstream(model, normalize=normalize)


@contextlib.contextmanager
def _fairseq_errors(path: str):
    try:
        yield
    except (RuntimeError, KeyError, AttributeError, AssertionError) as error:
        raise CheckpointError(f"{path}: fairseq could not load this HuBERT checkpoint: {error}") from None
