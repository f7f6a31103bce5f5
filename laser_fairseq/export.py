"""Export a LASER training checkpoint as an upstream checkpoint in its ORIGINAL format.

LASER trains only the last K transformer blocks of an original upstream (plus a projection head that is
thrown away). The export starts from the original upstream checkpoint file, replaces the K trained blocks
with the LASER weights, drops the head, and writes a file its usual consumers load exactly like the
original:

- HuBERT, ``fairseq`` format (default): the original fairseq checkpoint dict with the merged ``model``,
  ``args=None`` and a plain-container ``cfg`` whose ``model`` / ``task`` sections hold only genuine
  ``HubertConfig`` / ``HubertPretrainingConfig`` fields (``hubert_ctc`` sets up the pretraining task from
  it and raises on unknown keys). Loads with ``fairseq.checkpoint_utils.load_model_ensemble_and_task``,
  fine-tunes with ``hubert_ctc`` (``model.w2v_path``), and loads in s3prl with ``hubert_local(..., fairseq=True)``.
- HuBERT, ``s3prl`` format: s3prl's converted checkpoint (``task_cfg``, ``model_cfg``, ``model_weight``,
  ``dictionaries_symbols``), loaded by ``hubert_local`` without fairseq.
- WavLM, ``unilm`` format (default): ``{"cfg": original cfg, "model": state dict}`` as Microsoft's unilm code
  writes it (``weight_g`` / ``weight_v`` names kept); loads in s3prl with ``wavlm_local``.
- HuBERT or WavLM, ``hf`` format: a Hugging Face transformers directory (config.json, model.safetensors,
  preprocessor_config.json) that ``HubertModel`` / ``WavLMModel.from_pretrained`` load; HuBERT's pretraining
  head has no place there and is dropped (see :mod:`laser_fairseq.export_hf`).

The default format is the source's own: a run that started from a Hugging Face directory exports back to one.
A source without label dictionaries in ``task_state`` is exported with its ``task_state`` as it was.

Every tensor outside the last K blocks is copied from the original file (the LASER checkpoint's copies are
only checked to be identical, which proves it was trained from that file), and the written file is read
back and compared tensor by tensor before the export reports success.
"""

import copy
import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .checkpoint_io import CheckpointError, load_checkpoint
from .models.hubert_upstream import HubertUpstream
from .models.trained_upstream import UPSTREAM_PREFIX, is_laser_checkpoint
from .models.upstream import FAIRSEQ, HF, HUBERT, S3PRL, UNILM, WAVLM, UpstreamSource, read_upstream_source
from .models.wavlm import WavLMEncoder

# (kind, source format) -> the formats an export can be written in, the default first. Not offered: fairseq
# or s3prl from an HF HuBERT (no pretraining head, no label_rate / final_dim to write a faithful cfg), fairseq
# from s3prl's format (its dictionaries keep only their symbols).
FORMATS_BY_SOURCE = {
    (HUBERT, FAIRSEQ): (FAIRSEQ, S3PRL, HF),
    (HUBERT, S3PRL): (S3PRL, HF),
    (HUBERT, HF): (HF,),
    (WAVLM, UNILM): (UNILM, HF),
    (WAVLM, HF): (HF, UNILM),
}
ALL_FORMATS = (FAIRSEQ, S3PRL, UNILM, HF)

# Where the original weights sit in a LASER model state dict: under the model's upstream, at the
# upstream class's own prefix (fairseq's HubertModel is kept as ``upstream.model``).
LASER_PREFIX_BY_KIND = {
    HUBERT: UPSTREAM_PREFIX + HubertUpstream.original_prefix,
    WAVLM: UPSTREAM_PREFIX + WavLMEncoder.original_prefix,
}
HEAD_PREFIX = "head."

BLOCK_KEY = re.compile(r"^encoder\.layers\.(\d+)\.")


class ExportError(CheckpointError):
    """The export cannot be done; the message names the file and what to do."""


class ExportVerificationError(ExportError):
    """The written file does not hold exactly the expected tensors."""


# --------------------------------------------------------------------------------------------------
# reading the inputs
# --------------------------------------------------------------------------------------------------


@dataclass
class LaserRun:
    """What a LASER training checkpoint says about itself."""

    path: str
    upstream_path: str  # cfg.model.upstream_path as recorded at training time
    trainable_layers: int
    num_updates: Optional[int]
    model_state: Dict[str, Tensor]  # upstream.* + head.*
    # float16 / bfloat16 when trained with common.(memory_efficient_)fp16 / bf16: fairseq then converts the whole
    # model, so the frozen tensors ran (and were saved, as float32) rounded to that precision
    weight_precision: Optional[torch.dtype] = None
    cfg: Optional[dict] = None  # the whole training cfg (the model card reports its LASER settings)


def read_laser_run(path: str, extra_safe_globals: Iterable[str] = ()) -> LaserRun:
    """Read a LASER training checkpoint (checkpoint_last.pt / checkpoint_best.pt of a ``laser`` run)."""
    state = load_checkpoint(path, extra_safe_globals)
    if not is_laser_checkpoint(state):
        raise ExportError(
            f"{path}: not a LASER training checkpoint (cfg.model._name is {_model_name(state)!r}, expected "
            f"'laser'); export takes the checkpoint_last.pt / checkpoint_best.pt written by fairseq-hydra-train "
            f"with model._name=laser"
        )
    model_cfg = state["cfg"]["model"]
    history = state.get("optimizer_history") or [{}]
    return LaserRun(
        path=path,
        upstream_path=str(model_cfg.get("upstream_path")),
        trainable_layers=int(model_cfg.get("trainable_layers", 2)),
        num_updates=history[-1].get("num_updates"),
        model_state=state["model"],
        weight_precision=_weight_precision(state["cfg"].get("common") or {}),
        cfg=state["cfg"],
    )


def _weight_precision(common_cfg) -> Optional[torch.dtype]:
    """The dtype fairseq converted the model to (common.fp16 / bf16 and their memory-efficient variants)."""
    if common_cfg.get("fp16") or common_cfg.get("memory_efficient_fp16"):
        return torch.float16
    if common_cfg.get("bf16") or common_cfg.get("memory_efficient_bf16"):
        return torch.bfloat16
    return None


def _model_name(state: dict):
    cfg = state.get("cfg")
    model_cfg = cfg.get("model") if hasattr(cfg, "get") else None
    if hasattr(model_cfg, "get"):
        return model_cfg.get("_name")
    args = state.get("args")
    return getattr(args, "arch", None)


def resolve_upstream_path(run: LaserRun, override: Optional[str]) -> str:
    """The original upstream file: ``override`` if given, else the path recorded in the LASER checkpoint."""
    if override:
        if not os.path.exists(override):
            raise ExportError(f"{override}: upstream checkpoint not found (given with --upstream)")
        return override
    if not os.path.exists(run.upstream_path):
        raise ExportError(
            f"{run.path}: its original upstream {run.upstream_path} (cfg.model.upstream_path, as recorded at "
            f"training time) does not exist; it was moved or training ran elsewhere. Pass the original file "
            f"it was trained from with --upstream ORIGINAL.pt"
        )
    return run.upstream_path


def read_source_upstream(path: str, extra_safe_globals: Iterable[str] = ()) -> UpstreamSource:
    """Read the original upstream (any accepted shape, see :mod:`laser_fairseq.models.upstream`)."""
    return read_upstream_source(path, extra_safe_globals)


def block_index(key: str) -> Optional[int]:
    """N for a key of transformer block N (``encoder.layers.N.*``), None for every other key."""
    match = BLOCK_KEY.match(key)
    return int(match.group(1)) if match else None


def count_blocks(weights: Dict[str, Tensor], path: str) -> int:
    indices = {block_index(key) for key in weights} - {None}
    if not indices or indices != set(range(max(indices) + 1)):
        raise ExportError(f"{path}: cannot find consecutive transformer blocks encoder.layers.N.* in its weights")
    return max(indices) + 1


def top_blocks(num_layers: int, trainable_layers: int, path: str) -> range:
    """Indices of the last K blocks, the ones LASER trained."""
    if not 1 <= trainable_layers <= num_layers:
        raise ExportError(
            f"{path}: trainable_layers={trainable_layers} does not fit an upstream with {num_layers} blocks"
        )
    return range(num_layers - trainable_layers, num_layers)


def is_in_blocks(key: str, blocks: Sequence[int]) -> bool:
    index = block_index(key)
    return index is not None and index in blocks


# --------------------------------------------------------------------------------------------------
# merging
# --------------------------------------------------------------------------------------------------


def trained_upstream_weights(run: LaserRun, source: UpstreamSource) -> Dict[str, Tensor]:
    """The LASER run's upstream weights under the original key names; the projection head is left out.

    Raises ExportError when they do not have exactly the source's keys and shapes.
    """
    prefix = LASER_PREFIX_BY_KIND[source.kind]
    trained = {key[len(prefix):]: value for key, value in run.model_state.items() if key.startswith(prefix)}
    if not set(trained) & set(source.weights):
        raise ExportError(
            f"{run.path}: holds no weights of a {source.kind} upstream, so it was not trained from {source.path}; "
            f"pass the original checkpoint it was trained from with --upstream"
        )
    leftover = [key for key in run.model_state if not key.startswith(prefix) and not key.startswith(HEAD_PREFIX)]
    missing = [key for key in source.weights if key not in trained]
    unexpected = [key for key in trained if key not in source.weights] + leftover
    mismatched = [
        f"{key}: trained {tuple(trained[key].shape)} vs upstream {tuple(value.shape)}"
        for key, value in source.weights.items()
        if key in trained and trained[key].shape != value.shape
    ]
    if missing or unexpected or mismatched:
        raise ExportError(
            f"{run.path}: its upstream weights do not match the {source.kind} upstream {source.path} (missing "
            f"{missing[:5]}, unexpected {unexpected[:5]}, shape mismatches {mismatched[:5]}); pass the original "
            f"checkpoint it was trained from with --upstream"
        )
    return trained


def check_frozen_weights_unchanged(
    trained: Dict[str, Tensor], source: UpstreamSource, trained_blocks: Sequence[int], laser_path: str,
    weight_precision: Optional[torch.dtype] = None,
):
    """Every tensor LASER kept frozen must equal the source file's: otherwise the run started elsewhere.

    With ``weight_precision`` (an fp16 / bf16 run) the comparison is with the source rounded to it; the export
    still takes the frozen tensors, bit for bit, from the source file.
    """

    def expected(value: Tensor, dtype: torch.dtype) -> Tensor:
        return (value.to(weight_precision) if weight_precision is not None else value).to(dtype)

    differing = [
        key
        for key, value in source.weights.items()
        if not is_in_blocks(key, trained_blocks) and not torch.equal(trained[key], expected(value, trained[key].dtype))
    ]
    if differing:
        precision = f" (compared after rounding to {weight_precision}, the run's precision)" if weight_precision else ""
        raise ExportError(
            f"{laser_path}: {len(differing)} frozen tensors (e.g. {differing[:3]}) differ from {source.path}"
            f"{precision}: this LASER run was not trained from that file. Pass the original checkpoint it was "
            f"trained from with --upstream"
        )


def merge_weights(
    source_weights: Dict[str, Tensor], trained: Dict[str, Tensor], trained_blocks: Sequence[int]
) -> Dict[str, Tensor]:
    """The source state dict (same key order and dtypes) with the trained blocks put in."""
    return {
        key: trained[key].to(value.dtype) if is_in_blocks(key, trained_blocks) else value
        for key, value in source_weights.items()
    }


# --------------------------------------------------------------------------------------------------
# the output formats
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# writing and verifying
# --------------------------------------------------------------------------------------------------


def check_output_path(output: str, inputs: Sequence[str], force: bool, is_directory_format: bool = False):
    """Never write over an input (even with ``force``); over an existing output only with ``force``."""
    for path in inputs:
        if _same_file(output, path):
            raise ExportError(f"{output}: this is an input of the export ({path}); choose another --output")
    if os.path.isdir(output) and not (force and is_directory_format):
        what = "exists; pass --force to replace it" if is_directory_format else "is a directory; give a file name"
        raise ExportError(f"{output} {what} for --output")
    if os.path.exists(output) and not force:
        raise ExportError(f"{output} exists; pass --force to replace it")


def _same_file(first: str, second: str) -> bool:
    if os.path.exists(first) and os.path.exists(second):
        return os.path.samefile(first, second)
    return os.path.realpath(first) == os.path.realpath(second)


def temporary_path(output: str) -> str:
    return f"{output}.tmp-{os.getpid()}"


def exported_weights(state: dict, fmt: str, path: str) -> Dict[str, Tensor]:
    weights = state.get(WEIGHTS_KEY_BY_FORMAT[fmt])
    if not isinstance(weights, dict):
        raise ExportVerificationError(f"{path}: no {WEIGHTS_KEY_BY_FORMAT[fmt]!r} state dict in the written file")
    return weights


def verify_weights(path: str, plan: "ExportPlan"):
    """Re-read the file ``path`` and check it tensor by tensor (see ``check_written_weights``); a fairseq file
    must also carry what fairseq's loader needs."""
    state = load_checkpoint(path, plan.extra_safe_globals)
    written = exported_weights(state, plan.fmt, path)
    check_written_weights(written, list(plan.source.weights), plan, path)
    if plan.fmt == FAIRSEQ:
        _verify_fairseq_bookkeeping(state, plan.source.state, path)


def check_written_weights(written: Dict[str, Tensor], keys: List[str], plan: "ExportPlan", path: str):
    """``written`` must hold exactly ``keys`` in that order; outside the trained blocks every tensor
    bit-identical (torch.equal, same dtype) to the source upstream's, inside them equal to the trained ones."""
    source_weights, trained, trained_blocks = plan.source.weights, plan.trained, plan.trained_blocks
    if list(written) != keys:
        missing = [key for key in keys if key not in written]
        extra = [key for key in written if key not in keys]
        raise ExportVerificationError(
            f"{path}: its keys differ from the source upstream's (missing {missing[:5]}, extra {extra[:5]})"
        )
    wrong = [
        key
        for key, value in written.items()
        if not _is_expected(value, trained[key] if is_in_blocks(key, trained_blocks) else source_weights[key],
                            source_weights[key].dtype)
    ]
    if wrong:
        raise ExportVerificationError(
            f"{path}: {len(wrong)} tensors differ from what was merged (e.g. {wrong[:5]}); the file is not a "
            f"faithful export"
        )


def _is_expected(value: Tensor, expected: Tensor, dtype: torch.dtype) -> bool:
    return value.dtype == dtype and torch.equal(value, expected.to(dtype))


def _verify_fairseq_bookkeeping(state: dict, source_state: dict, path: str):
    cfg = state.get("cfg") or {}
    problems = []
    if state.get("args") is not None:
        problems.append("args is not None")
    if (cfg.get("model") or {}).get("_name") != "hubert" or (cfg.get("task") or {}).get("_name") != "hubert_pretraining":
        problems.append("cfg.model/_name or cfg.task/_name is not hubert / hubert_pretraining")
    history = state.get("optimizer_history") or [{}]
    if "lr_scheduler_state" not in history[-1] or "extra_state" not in state:
        problems.append("optimizer_history / extra_state missing")
    same_presence = ("task_state" in state) == ("task_state" in source_state)
    if not same_presence or _label_symbols(state) != _label_symbols(source_state):
        problems.append("task_state (label dictionaries) differs from the source's")
    if problems:
        raise ExportVerificationError(f"{path}: not a loadable fairseq HuBERT checkpoint: {'; '.join(problems)}")


def _label_symbols(state: dict) -> list:
    return [list(dictionary.symbols) for dictionary in (state.get("task_state") or {}).get("dictionaries") or []]


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# the whole export
# --------------------------------------------------------------------------------------------------


@dataclass
class ExportReport:
    output: str
    fmt: str
    kind: str
    source_path: str
    laser_path: str
    num_updates: Optional[int]
    num_layers: int
    trained_blocks: List[int]
    replaced_tensors: int
    replaced_parameters: int
    changed_tensors: int  # tensors of the replaced blocks that training actually changed
    unchanged_tensors: int
    unchanged_parameters: int
    head_parameters: int
    sha256: str
    notes: List[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"exported {self.output} ({self.kind}, {self.fmt} format), verified",
            f"  source upstream : {self.source_path} ({self.num_layers} blocks)",
            f"  LASER checkpoint: {self.laser_path} ({self.num_updates} updates)",
            f"  blocks replaced : {self.trained_blocks} -> {self.replaced_tensors} tensors, "
            f"{self.replaced_parameters:,} parameters ({self.changed_tensors} tensors changed by training)",
            f"  unchanged       : {self.unchanged_tensors} tensors, {self.unchanged_parameters:,} parameters, "
            f"bit-identical to the source",
            f"  dropped         : projection head, {self.head_parameters:,} parameters",
            f"  sha256          : {self.sha256}",
        ]
        return "\n".join(lines + [f"  note: {note}" for note in self.notes])


@dataclass
class ExportPlan:
    """Everything the export writes and checks, computed from the two input files."""

    run: LaserRun
    source: UpstreamSource
    fmt: str
    num_layers: int
    trained_blocks: range
    trained: Dict[str, Tensor]
    merged: Dict[str, Tensor]
    extra_safe_globals: Tuple[str, ...] = ()  # also needed to read back the written file (it keeps the source's)


def plan_export(
    laser_checkpoint: str,
    fmt: Optional[str] = None,
    upstream: Optional[str] = None,
    extra_safe_globals: Iterable[str] = (),
) -> ExportPlan:
    """Read both inputs, check they belong together and merge the weights (nothing is written)."""
    run = read_laser_run(laser_checkpoint, extra_safe_globals)
    source = read_source_upstream(resolve_upstream_path(run, upstream), extra_safe_globals)
    fmt = choose_format(source, fmt)
    num_layers = count_blocks(source.weights, source.path)
    trained_blocks = top_blocks(num_layers, run.trainable_layers, run.path)
    trained = trained_upstream_weights(run, source)
    check_frozen_weights_unchanged(trained, source, trained_blocks, run.path, run.weight_precision)
    merged = merge_weights(source.weights, trained, trained_blocks)
    return ExportPlan(run, source, fmt, num_layers, trained_blocks, trained, merged, tuple(extra_safe_globals))


def write_verified(state: dict, output: str, plan: ExportPlan):
    """torch.save to a temporary file beside ``output``, verify it, then os.replace it into place."""
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    temporary = temporary_path(output)
    try:
        torch.save(state, temporary)
        verify_weights(temporary, plan)
        os.replace(temporary, output)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def export_checkpoint(
    laser_checkpoint: str,
    output: str,
    fmt: Optional[str] = None,
    upstream: Optional[str] = None,
    force: bool = False,
    extra_safe_globals: Iterable[str] = (),
    card=None,
) -> ExportReport:
    """Export, verify and describe. Raises ExportError / CheckpointError with a message naming the file.

    ``card`` (model_card.CardOptions: base model id, license, a study's results) describes the model card an
    HF export gets as README.md; an HF export gets a card in any case, other formats none.
    """
    from .model_card import CardOptions, read_effect, write_model_card

    plan = plan_export(laser_checkpoint, fmt, upstream, extra_safe_globals)
    if card is not None and card != CardOptions() and plan.fmt != HF:
        raise ExportError(f"--base-model, --license and --effect-results describe the model card, which only "
                          f"--format hf writes (this export is {plan.fmt})")
    if card is not None and card.effect_results:
        read_effect(card.effect_results)  # a bad results file stops before anything is written
    check_output_path(output, [plan.run.path, plan.source.path], force, is_directory_format=plan.fmt == HF)
    notes = []
    if plan.fmt == HF:
        from .export_hf import write_hf_export  # transformers is imported only for this format

        difference = write_hf_export(plan, output, extra_safe_globals)
        notes.append(f"transformers loads it with no missing/unexpected keys; hidden states of every layer within "
                     f"{difference:.2g} of LASER's upstream on a padded batch (relative where |h| > 1)")
        card_path = write_model_card(plan, output, card or CardOptions())
        notes.append(f"model card: {card_path}")
    else:
        write_verified(CHECKPOINT_BUILDERS[plan.fmt](plan.source, plan.merged), output, plan)
    report = build_report(plan, output)
    report.notes.extend(notes)
    return report


def verify_export(
    output: str,
    laser_checkpoint: str,
    fmt: Optional[str] = None,
    upstream: Optional[str] = None,
    extra_safe_globals: Iterable[str] = (),
):
    """Check an already written export against its two input files (raises ExportVerificationError)."""
    plan = plan_export(laser_checkpoint, fmt, upstream, extra_safe_globals)
    if plan.fmt == HF:
        from .export_hf import verify_hf_export

        verify_hf_export(output, plan, extra_safe_globals)
    else:
        verify_weights(output, plan)


def build_report(plan: ExportPlan, output: str) -> ExportReport:
    replaced = [key for key in plan.merged if is_in_blocks(key, plan.trained_blocks)]
    unchanged = [key for key in plan.merged if not is_in_blocks(key, plan.trained_blocks)]
    changed = [key for key in replaced if not torch.equal(plan.merged[key], plan.source.weights[key])]
    head = [value for key, value in plan.run.model_state.items() if key.startswith(HEAD_PREFIX)]
    return ExportReport(
        output=output,
        fmt=plan.fmt,
        kind=plan.source.kind,
        source_path=plan.source.path,
        laser_path=plan.run.path,
        num_updates=plan.run.num_updates,
        num_layers=plan.num_layers,
        trained_blocks=list(plan.trained_blocks),
        replaced_tensors=len(replaced),
        replaced_parameters=sum(plan.merged[key].numel() for key in replaced),
        changed_tensors=len(changed),
        unchanged_tensors=len(unchanged),
        unchanged_parameters=sum(plan.merged[key].numel() for key in unchanged),
        head_parameters=sum(value.numel() for value in head),
        sha256=sha256_of(weights_file(output, plan.fmt)),
        notes=_notes(plan, output),
    )


def weights_file(output: str, fmt: str) -> str:
    """The file holding the weights: ``output`` itself, or model.safetensors in an HF directory."""
    return os.path.join(output, "model.safetensors") if fmt == HF else output


def _notes(plan: ExportPlan, output: str) -> List[str]:
    notes = []
    head = [key for key in plan.merged if key.startswith(("final_proj.", "label_embs_concat"))]
    if plan.fmt == HF and head:
        notes.append(
            f"HuBERT's pretraining head ({', '.join(head)}; "
            f"{sum(plan.merged[key].numel() for key in head):,} parameters) has no place in transformers' "
            f"HubertModel and was not written"
        )
    stale = os.path.join(os.path.dirname(os.path.abspath(output)), f"{_stem(output)}.converted.pt")
    if plan.fmt == FAIRSEQ and os.path.exists(stale):
        notes.append(
            f"{stale} exists: s3prl's hubert_local(fairseq=True) reuses that conversion instead of this file; "
            f"delete it (or use --format s3prl)"
        )
    return notes


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]
