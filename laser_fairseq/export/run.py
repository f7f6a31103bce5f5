"""The inputs of an export: a LASER training checkpoint (:class:`LaserRun`) and the original upstream it was
trained from (recorded in the checkpoint, or given with ``--upstream``)."""

import os
from dataclasses import dataclass
from typing import Dict, Iterable, Optional

import torch
from torch import Tensor

from ..checkpoint_io import load_checkpoint
from ..models.trained_upstream import is_laser_checkpoint
from ..models.upstream import UpstreamSource, read_upstream_source
from .errors import ExportError


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
