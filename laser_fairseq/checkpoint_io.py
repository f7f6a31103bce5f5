"""Loading checkpoints with torch's weights-only safety kept on, and writing them atomically.

fairseq checkpoints pickle a few harmless classes (fairseq's Dictionary, argparse.Namespace for legacy
``args``). They are allowed explicitly, for the duration of one load only; anything else the file asks
for is refused with the blocked name and how to proceed for a file the user trusts.
"""

import argparse
import importlib
import os
import pickle
from typing import Any, Iterable, List

import torch

from . import quiet_fairseq  # noqa: F401  (before any fairseq import: keeps the caller's logging setup)
from fairseq.data.dictionary import Dictionary

from .files import atomic_path

SAFE_GLOBALS: List[Any] = [Dictionary, argparse.Namespace]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


def resolve_globals(names: Iterable[str]) -> List[Any]:
    """Import the classes named ``module.Class`` so they can be allow-listed."""
    resolved = []
    for name in names:
        module_name, _, attribute = name.rpartition(".")
        try:
            resolved.append(getattr(importlib.import_module(module_name), attribute))
        except (ImportError, AttributeError, ValueError):
            raise CheckpointError(f"cannot import {name!r} named in extra_safe_globals") from None
    return resolved


def load_checkpoint(path: str, extra_safe_globals: Iterable[str] = ()) -> dict:
    """``torch.load(path, weights_only=True)`` on CPU with the fairseq allow-list; clear errors.

    Tensors are read into memory (no mmap): fairseq rewrites checkpoint_last.pt in place when it copies
    a new checkpoint over it, which would silently change memory-mapped tensors under the caller.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes); {_FETCH_AGAIN}")
    allowed = SAFE_GLOBALS + resolve_globals(extra_safe_globals)
    try:
        with torch.serialization.safe_globals(allowed):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(_explain_unpickling_error(path, error)) from None
    except _NOT_A_CHECKPOINT as error:
        raise CheckpointError(_unreadable(path, f"{type(error).__name__}: {_first_line(str(error))}")) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, found {type(state).__name__}; {EXPECTED_UPSTREAMS}")
    return state


def write_checkpoint(state: dict, path: str) -> None:
    """``torch.save(state)`` to ``path`` atomically: the file appears complete under its name or not at all."""
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


# what torch.load raises on truncated, corrupt or foreign files (a text file gives a KeyError)
_NOT_A_CHECKPOINT = (RuntimeError, EOFError, OSError, KeyError, ValueError, IndexError, TypeError)
EXPECTED_UPSTREAMS = (
    "LASER expects an original fairseq HuBERT checkpoint (e.g. hubert_base_ls960.pt), a unilm WavLM "
    "checkpoint (e.g. WavLM-Base.pt) or a Hugging Face HubertModel / WavLMModel directory"
)
_FETCH_AGAIN = (
    f"if it is a truncated or corrupt copy (an interrupted download or copy), fetch it again; {EXPECTED_UPSTREAMS}"
)


def _unreadable(path: str, reason: str) -> str:
    return f"{path}: not a readable torch checkpoint ({reason}); {_FETCH_AGAIN}"


def _first_line(text: str, limit: int = 200) -> str:
    """The first sentence of an error message (torch's run on for several lines)."""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line.split(". ")[0][:limit]


def _explain_unpickling_error(path: str, error: Exception) -> str:
    message = str(error)
    blocked = _blocked_global(message)
    if blocked is None:
        return _unreadable(path, f"torch's weights-only reader stopped at: {_unpickler_reason(message)}")
    return (
        f"{path}: the checkpoint pickles {blocked}, which is not on laser-fairseq's allow-list for "
        f"weights-only loading. If you trust this file, allow that class for this load only: add "
        f"'++model.extra_safe_globals=[{blocked}]' to the fairseq-hydra-train command (or "
        f"--extra-safe-globals {blocked} to scripts/export_checkpoint.py); otherwise re-save the checkpoint "
        f"without it."
    )


def _unpickler_reason(message: str) -> str:
    """The weights-only unpickler's own reason (e.g. 'Unsupported operand 149'), not torch's advice."""
    marker = "WeightsUnpickler error:"
    if marker in message:
        return _first_line(message.split(marker, 1)[1])
    return _first_line(message)


def _blocked_global(message: str):
    marker = "Unsupported global: GLOBAL "
    if marker not in message:
        return None
    return message.split(marker, 1)[1].split()[0].strip().rstrip(".")
