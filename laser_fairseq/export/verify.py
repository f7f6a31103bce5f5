"""Where an export may be written, and the check of what was written: read back, tensor by tensor, against the
plan (and, for fairseq, the bookkeeping fairseq's loader needs)."""

import os
from typing import Dict, List, Sequence

import torch
from torch import Tensor

from ..checkpoint_io import load_checkpoint
from ..files import atomic_path
from ..models.upstream import FAIRSEQ
from .errors import ExportError, ExportVerificationError
from .formats import WEIGHTS_KEY_BY_FORMAT
from .plan import ExportPlan, is_in_blocks


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


def exported_weights(state: dict, fmt: str, path: str) -> Dict[str, Tensor]:
    weights = state.get(WEIGHTS_KEY_BY_FORMAT[fmt])
    if not isinstance(weights, dict):
        raise ExportVerificationError(f"{path}: no {WEIGHTS_KEY_BY_FORMAT[fmt]!r} state dict in the written file")
    return weights


def verify_weights(path: str, plan: ExportPlan):
    """Re-read the file ``path`` and check it tensor by tensor (see ``check_written_weights``); a fairseq file
    must also carry what fairseq's loader needs."""
    state = load_checkpoint(path, plan.extra_safe_globals)
    written = exported_weights(state, plan.fmt, path)
    check_written_weights(written, list(plan.source.weights), plan, path)
    if plan.fmt == FAIRSEQ:
        _verify_fairseq_bookkeeping(state, plan.source.state, path)


def check_written_weights(written: Dict[str, Tensor], keys: List[str], plan: ExportPlan, path: str):
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


def write_verified(state: dict, output: str, plan: ExportPlan):
    """torch.save to a temporary file beside ``output``, verify it, then rename it into place (files.atomic_path):
    a file that fails verification never appears under ``output``, and a previous ``output`` stays as it was."""
    with atomic_path(output) as temporary:
        torch.save(state, temporary)
        verify_weights(temporary, plan)
