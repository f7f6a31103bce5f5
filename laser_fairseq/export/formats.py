"""The original formats an export is written in (fairseq HuBERT, s3prl's converted HuBERT, unilm WavLM; the Hugging
Face directory is :mod:`laser_fairseq.export.hf`) and which of them a source can be exported to. What each
format holds and why some pairs are refused: docs/export.md, "Which formats each source exports to"."""

import copy
from typing import Dict, Optional

from torch import Tensor

from ..models.upstream import FAIRSEQ, HF, HUBERT, S3PRL, UNILM, WAVLM, UpstreamSource
from .errors import ExportError

# (kind, source format) -> the formats an export can be written in, the default first (why the others are not
# offered: docs/export.md#which-formats-each-source-exports-to; the error message says it too, _why_not)
FORMATS_BY_SOURCE = {
    (HUBERT, FAIRSEQ): (FAIRSEQ, S3PRL, HF),
    (HUBERT, S3PRL): (S3PRL, HF),
    (HUBERT, HF): (HF,),
    (WAVLM, UNILM): (UNILM, HF),
    (WAVLM, HF): (HF, UNILM),
}
ALL_FORMATS = (FAIRSEQ, S3PRL, UNILM, HF)


def genuine_hubert_cfg(source_state: dict) -> dict:
    """A plain-container fairseq cfg whose model / task sections hold only real HuBERT fields.

    A legacy ``args`` Namespace is converted with fairseq's ``convert_namespace_to_omegaconf`` first.
    """
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.models.hubert import HubertConfig
    from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig

    cfg = _plain_cfg(source_state)
    sections = {name: value for name, value in cfg.items() if name in FairseqConfig.__dataclass_fields__}
    sections = {name: (value if _is_plain(value) else None) for name, value in sections.items()}
    sections["model"] = _only_fields(cfg.get("model"), HubertConfig, "hubert")
    sections["task"] = _only_fields(cfg.get("task"), HubertPretrainingConfig, "hubert_pretraining")
    return sections


def _plain_cfg(source_state: dict) -> dict:
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf

    args = source_state.get("args")
    cfg = convert_namespace_to_omegaconf(args) if args is not None else source_state.get("cfg")
    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    if not isinstance(cfg, dict):
        raise ExportError("the source HuBERT checkpoint has neither a cfg dict nor legacy args")
    return copy.deepcopy(cfg)


def _is_plain(value) -> bool:
    """Built only from dict / list / str / numbers / bool / None (what weights-only loading accepts)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def _only_fields(section, dataclass_type, name: str) -> dict:
    if isinstance(section, dict):
        values = section
    else:  # a Namespace left by the legacy conversion
        values = vars(section) if section is not None else {}
    kept = {key: value for key, value in values.items() if key in dataclass_type.__dataclass_fields__}
    kept = {key: value for key, value in kept.items() if _is_plain(value)}
    kept["_name"] = name
    return kept


def fairseq_hubert_checkpoint(source: UpstreamSource, weights: Dict[str, Tensor]) -> dict:
    """The original fairseq checkpoint dict with new weights, ``args=None`` and a genuine HuBERT cfg.

    ``task_state`` (the label dictionaries) is kept as it was, or left absent, so the export loads wherever
    the source did; the optimizer
    state of the original pretraining run is dropped (it describes other weights); the bookkeeping
    fairseq's loader upgrades (``optimizer_history``, ``extra_state``) is kept or filled in.
    """
    state = dict(source.state)
    state["args"] = None
    state["cfg"] = genuine_hubert_cfg(source.state)
    state["model"] = weights
    state["optimizer_history"] = _optimizer_history(source.state)
    state["extra_state"] = source.state.get("extra_state") or {"metrics": {}, "previous_training_time": 0.0}
    state["last_optimizer_state"] = None
    state.setdefault("criterion", None)
    return state


def _optimizer_history(source_state: dict) -> list:
    history = [dict(entry) for entry in source_state.get("optimizer_history") or []]
    if not history:
        history = [{"criterion_name": "HubertCriterion", "optimizer_name": "FairseqAdam", "num_updates": 0}]
    history[-1].setdefault("lr_scheduler_state", {"best": None})
    return history


def s3prl_hubert_checkpoint(source: UpstreamSource, weights: Dict[str, Tensor]) -> dict:
    """s3prl's converted HuBERT format (what ``s3prl/upstream/hubert/convert.py`` writes)."""
    if source.fmt == S3PRL:
        return dict(source.state, model_weight=weights)
    dictionaries = (source.state.get("task_state") or {}).get("dictionaries")
    if not dictionaries:
        raise ExportError(
            f"{source.path}: no task_state['dictionaries'] to write s3prl's dictionaries_symbols; export in fairseq "
            f"format (s3prl reads it with hubert_local(..., fairseq=True) only when it has dictionaries) or hf format"
        )
    cfg = genuine_hubert_cfg(source.state)
    return {
        "task_cfg": cfg["task"],
        "model_cfg": cfg["model"],
        "model_weight": weights,
        "dictionaries_symbols": [list(dictionary.symbols) for dictionary in dictionaries],
    }


def unilm_wavlm_checkpoint(source: UpstreamSource, weights: Dict[str, Tensor]) -> dict:
    """``{"cfg": original cfg dict, "model": state dict}`` as unilm writes WavLM checkpoints."""
    return {"cfg": copy.deepcopy(source.state["cfg"]), "model": weights}


CHECKPOINT_BUILDERS = {FAIRSEQ: fairseq_hubert_checkpoint, S3PRL: s3prl_hubert_checkpoint, UNILM: unilm_wavlm_checkpoint}
WEIGHTS_KEY_BY_FORMAT = {FAIRSEQ: "model", S3PRL: "model_weight", UNILM: "model"}


def choose_format(source: UpstreamSource, requested: Optional[str]) -> str:
    """The requested format if it can be written from this source, else the source's own format."""
    allowed = FORMATS_BY_SOURCE[(source.kind, source.fmt)]
    if requested is None:
        return allowed[0]
    if requested not in allowed:
        raise ExportError(
            f"--format {requested} does not apply to a {source.kind} upstream in {source.fmt} format "
            f"({source.path}): {_why_not(source, requested)}; choose one of {list(allowed)}"
        )
    return requested


def _why_not(source: UpstreamSource, fmt: str) -> str:
    if (source.kind == WAVLM) != (fmt in (UNILM, HF)):
        return f"the {fmt} format does not hold {source.kind} models"
    if source.fmt == HF:
        return (
            "transformers' HubertModel has no pretraining head (final_proj, label_embs_concat) and its config no "
            "label_rate / final_dim, which fairseq's and s3prl's strict loaders need"
        )
    return "s3prl's format keeps only the symbols of the label dictionaries, not a fairseq task_state"
