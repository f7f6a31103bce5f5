"""The plan of an export: which blocks LASER trained, the check that every other tensor is the source's, and
the merged state dict (source weights with the trained blocks put in). Nothing is written here."""

import re
from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..models.hubert_upstream import HubertUpstream
from ..models.trained_upstream import UPSTREAM_PREFIX
from ..models.upstream import HUBERT, WAVLM, UpstreamSource
from ..models.wavlm import WavLMEncoder
from .errors import ExportError
from .formats import choose_format
from .run import LaserRun, read_laser_run, read_source_upstream, resolve_upstream_path

# Where the original weights sit in a LASER model state dict: under the model's upstream, at the
# upstream class's own prefix (fairseq's HubertModel is kept as ``upstream.model``).
LASER_PREFIX_BY_KIND = {
    HUBERT: UPSTREAM_PREFIX + HubertUpstream.original_prefix,
    WAVLM: UPSTREAM_PREFIX + WavLMEncoder.original_prefix,
}
HEAD_PREFIX = "head."

BLOCK_KEY = re.compile(r"^encoder\.layers\.(\d+)\.")


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
