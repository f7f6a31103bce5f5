"""Open either an original upstream checkpoint or a LASER training checkpoint as a ``BlockwiseUpstream``.

A LASER training checkpoint (written by fairseq's trainer, ``cfg.model._name == "laser"``) holds the whole
upstream under ``upstream.*`` plus the projection head; its source upstream is named by
``cfg.model.upstream_path`` (override it when the file has moved).
"""

import os
from dataclasses import dataclass
from typing import Iterable, Optional

from ..checkpoint_io import CheckpointError, load_checkpoint
from .blockwise import BlockwiseUpstream
from .upstream import build_upstream

UPSTREAM_PREFIX = "upstream."


@dataclass
class OpenedUpstream:
    upstream: BlockwiseUpstream
    source_path: str  # the original upstream checkpoint
    laser_checkpoint: Optional[str]  # the LASER training checkpoint, if that is what was opened
    trainable_layers: Optional[int]  # K of the LASER run, if any
    num_updates: Optional[int]


def is_laser_checkpoint(state: dict) -> bool:
    cfg = state.get("cfg")
    model_cfg = cfg.get("model") if isinstance(cfg, dict) else None
    return isinstance(model_cfg, dict) and model_cfg.get("_name") == "laser"


def open_upstream(
    path: str, upstream_path: Optional[str] = None, extra_safe_globals: Iterable[str] = ()
) -> OpenedUpstream:
    """The upstream of ``path`` (original checkpoint, Hugging Face directory or LASER checkpoint), in eval
    mode, with the trained weights."""
    state = None if os.path.isdir(path) else load_checkpoint(path, extra_safe_globals)
    if state is None or not is_laser_checkpoint(state):
        upstream = build_upstream(path, extra_safe_globals).eval()
        return OpenedUpstream(upstream, path, None, None, None)
    model_cfg = state["cfg"]["model"]
    source = upstream_path or model_cfg["upstream_path"]
    upstream = build_upstream(source, extra_safe_globals).eval()
    weights = upstream_weights(state["model"], path)
    missing, unexpected = upstream.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: its upstream weights do not fit {source} (missing {list(missing)[:5]}, unexpected "
            f"{list(unexpected)[:5]}); pass the upstream it was trained from"
        )
    history = state.get("optimizer_history") or [{}]
    return OpenedUpstream(
        upstream, source, path, int(model_cfg.get("trainable_layers", 2)), history[-1].get("num_updates")
    )


def upstream_weights(model_state: dict, path: str) -> dict:
    """The ``upstream.*`` entries of a LASER model state dict, prefix removed."""
    weights = {
        key[len(UPSTREAM_PREFIX):]: value for key, value in model_state.items() if key.startswith(UPSTREAM_PREFIX)
    }
    if not weights:
        raise CheckpointError(f"{path}: no 'upstream.*' weights in this LASER checkpoint")
    return weights
